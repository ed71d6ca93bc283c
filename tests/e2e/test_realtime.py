"""The Kivox realtime protocol end to end, over the real stack.

One stack for the module: its own NATS server (so no other module's auth or catalog app shares the
`auth`/`catalog` queue groups with ours), the session's Redis and PostgreSQL, the real auth and
catalog apps in-process, and the session gateway and two runtime workers as processes of their own
(`python -m …`), so a worker can be killed with SIGKILL. Clients talk to the gateway with the
`websockets` library exactly as a browser SDK would; users, keys, tokens and agents are made through
the real auth and catalog HTTP APIs, and transcripts are read back from the catalog.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from parley_auth.app import build_app as build_auth_app
from parley_auth.migrate import upgrade as upgrade_auth
from parley_auth.settings import AuthSettings
from parley_catalog.app import build_app as build_catalog_app
from parley_catalog.migrate import upgrade as upgrade_catalog
from parley_catalog.settings import CatalogSettings
from parley_devstack.servers import (
    ManagedProcess,
    NatsServer,
    create_database,
    drop_database,
    free_port,
    stop_all,
    with_database,
)

GRACE_S = 1.5  # reconnect grace of the runtime workers
ACK_WAIT_S = 2.0  # a dead worker's sessions move on after this
PACE_MS = 40  # built-in LLM: pause before each word
NO_LIMIT = "1000000/minute"
LONG = " ".join(f"word{i}" for i in range(30))  # answered as 33 words, ~1.3 s at PACE_MS


# ------------------------------------------------------------------------------------ the stack


class Hooks(BaseHTTPRequestHandler):
    """The CRM a WEBHOOK node calls: records each request, answers with a fixed JSON body."""

    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        Hooks.received.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body)})
        payload = json.dumps({"vip": True, "name": "Ada"}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def webhook_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hooks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Stack:
    auth: FastAPI
    catalog: FastAPI
    gateway_url: str
    redis: Redis
    mail_dir: Path
    hooks_url: str
    env: dict[str, str]
    logs: Path
    workers: list[ManagedProcess] = field(default_factory=list)
    gateway: ManagedProcess | None = None
    nats: NatsServer | None = None  # the stack's own NATS server, for tests that restart it

    def http(self, app: FastAPI, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://parley", **kwargs)

    def start_worker(self) -> ManagedProcess:
        n = len(self.workers) + 1
        port = free_port()
        proc = ManagedProcess(
            f"runtime-{n}",
            [sys.executable, "-m", "parley_runtime"],
            env={**self.env, "PARLEY_HTTP_PORT": str(port)},
            log_path=self.logs / f"runtime-{n}.log",
        )
        proc.probe = lambda: _ready(port)  # type: ignore[method-assign]
        proc.start()
        self.workers.append(proc)
        return proc

    def alive_workers(self) -> list[ManagedProcess]:
        return [w for w in self.workers if w.alive()]


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
async def stack(
    infra: Any, tmp_path_factory: pytest.TempPathFactory, stack_env: dict[str, str]
) -> AsyncIterator[Stack]:
    root = tmp_path_factory.mktemp("realtime")
    nats_server = NatsServer(root / "nats", log_path=root / "logs" / "nats.log")
    nats_server.start()
    await asyncio.to_thread(nats_server.wait_ready, 30)
    # A database of its own too: other modules' auth apps would otherwise deliver our outbox mail.
    server_url = with_database(infra.database_url, "postgres")
    database = f"parley_rt_{secrets.token_hex(6)}"
    await asyncio.to_thread(create_database, server_url, database, if_missing=False)
    database_url = with_database(infra.database_url, database)
    await asyncio.to_thread(upgrade_auth, database_url)
    await asyncio.to_thread(upgrade_catalog, database_url)
    common = {"database_url": database_url, "nats_url": nats_server.url, "redis_url": infra.redis_url}
    mail_dir = root / "mail"
    auth = build_auth_app(
        AuthSettings(
            **common,
            auth_token_secret=secrets.token_urlsafe(32),
            auth_mail_dir=mail_dir,
            auth_outbox_poll_s=0.05,
            log_json=False,
            auth_rate_signup_ip=NO_LIMIT,
            auth_rate_key_create_ip=NO_LIMIT,
            auth_rate_key_create_account=NO_LIMIT,
            auth_rate_token_mint_account=NO_LIMIT,
        )
    )
    catalog = build_catalog_app(
        CatalogSettings(
            **common,
            catalog_secret_key=secrets.token_urlsafe(32),
            log_json=False,
            catalog_conversations_retry_delay_s=0.2,
        )
    )
    gateway_port = free_port()
    # No LLM keys from the caller's environment: the built-in engine answers (deterministically).
    infra_vars = {"NATS_URL", "REDIS_URL", "DATABASE_URL"}
    env = {k: v for k, v in os.environ.items() if k not in infra_vars and not k.startswith("PARLEY_LLM_")}
    env.update(
        NATS_URL=nats_server.url,
        REDIS_URL=infra.redis_url,
        DATABASE_URL=database_url,
        PARLEY_HTTP_HOST="127.0.0.1",
        PARLEY_LOG_JSON="false",
        PYTHONUNBUFFERED="1",
        PARLEY_RUNTIME_BUILTIN_PACE_MS=str(PACE_MS),
        PARLEY_RUNTIME_CLAIM_ACK_WAIT_S=str(ACK_WAIT_S),
        PARLEY_RUNTIME_CLAIM_HEARTBEAT_S="0.4",
        PARLEY_RUNTIME_RECONNECT_GRACE_S=str(GRACE_S),
        PARLEY_RUNTIME_WEBHOOK_ALLOW_PRIVATE="true",
        PARLEY_GATEWAY_HANDSHAKE_TIMEOUT_S="1.5",
        PARLEY_GATEWAY_INPUT_RATE_PER_S="50",
        PARLEY_GATEWAY_INPUT_BURST="30",
        PARLEY_GATEWAY_MAX_TEXT_FRAME_BYTES="4096",
        PARLEY_GATEWAY_MAX_BINARY_FRAME_BYTES="65536",
    )
    env.update(stack_env)
    redis = Redis.from_url(infra.redis_url)
    with webhook_server() as hooks_url:
        async with auth.router.lifespan_context(auth), catalog.router.lifespan_context(catalog):
            s = Stack(
                auth=auth,
                catalog=catalog,
                gateway_url=f"ws://127.0.0.1:{gateway_port}/realtime",
                redis=redis,
                mail_dir=mail_dir,
                hooks_url=hooks_url,
                env=env,
                logs=root / "logs",
                nats=nats_server,
            )
            s.gateway = ManagedProcess(
                "gateway",
                [sys.executable, "-m", "parley_session_gateway"],
                env={**env, "PARLEY_HTTP_PORT": str(gateway_port)},
                log_path=s.logs / "gateway.log",
            )
            s.gateway.probe = lambda: _ready(gateway_port)  # type: ignore[method-assign]
            s.gateway.start()
            s.start_worker()
            s.start_worker()
            try:
                for proc in [s.gateway, *s.workers]:
                    await asyncio.to_thread(proc.wait_ready, 60)
                yield s
            finally:
                await asyncio.to_thread(stop_all, [s.gateway, *s.workers], 10)
    await redis.aclose()
    await asyncio.to_thread(nats_server.stop)
    await asyncio.to_thread(drop_database, server_url, database)


# ------------------------------------------------------------------------------------ people and agents


@dataclass
class User:
    cookie: str
    id: str


async def signup(stack: Stack) -> User:
    email = f"rt-{uuid.uuid4().hex[:10]}@example.com"
    async with stack.http(stack.auth) as http:
        resp = await http.post(
            "/auth/signup", json={"email": email, "password": "correct horse battery", "name": "Rt"}
        )
        assert resp.status_code == 201, resp.text
        cookie = resp.cookies["kivox_session"]
        me = await http.get("/users/me", headers={"Cookie": f"kivox_session={cookie}"})
    return User(cookie=cookie, id=me.json()["id"])


async def api_key(stack: Stack, user: User) -> str:
    async with stack.http(stack.auth, headers={"Cookie": f"kivox_session={user.cookie}"}) as http:
        resp = await http.post("/auth/api-keys", json={"name": "realtime"})
        assert resp.status_code == 201, resp.text
        return str(resp.json()["key"])


async def client_token(stack: Stack, key: str, agent_id: str, data: dict[str, Any] | None = None) -> str:
    async with stack.http(stack.auth, headers={"Authorization": f"Bearer {key}"}) as http:
        body: dict[str, Any] = {"workflow_id": agent_id}
        if data is not None:
            body["data"] = data
        resp = await http.post("/chat/tokens", json=body)
        assert resp.status_code == 201, resp.text
        return str(resp.json()["token"])


def node(node_id: str, node_type: str, **data: Any) -> dict[str, Any]:
    return {"id": node_id, "type": node_type, "data": data}


def edge(source: str, target: str, **extra: Any) -> dict[str, Any]:
    return {"source": source, "target": target, **extra}


async def make_agent(
    stack: Stack,
    user: User,
    nodes: list[dict[str, Any]],
    edges: list[dict[str, Any]],
    *,
    live: bool = True,
    secrets: dict[str, str] | None = None,
    **config: Any,
) -> str:
    body: dict[str, Any] = {
        "config": {"name": "Realtime test agent", **config},
        "blueprint": {"entries": [{"name": "main", "workflow": {"nodes": nodes, "edges": edges}}]},
    }
    if secrets:
        body["secrets"] = [{"key": k, "value": v} for k, v in secrets.items()]
    async with stack.http(stack.catalog, headers={"Cookie": f"kivox_session={user.cookie}"}) as http:
        resp = await http.post("/users/me/agents", json=body)
        assert resp.status_code == 201, resp.text
        agent_id = str(resp.json()["id"])
        if live:
            resp = await http.patch(f"/agents/{agent_id}/status", json={"status": "live"})
            assert resp.status_code == 200, resp.text
    return agent_id


def chat_agent(**config: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """START (greeting) → DIALOG (LLM, any number of turns) → END."""
    nodes = [
        node("start", "CONTROL.START", greeting="Hi, I am listening."),
        node("chat", "CONTROL.DIALOG", exit_when="last_user_message == 'bye'"),
        node("end", "CONTROL.END", message="Bye!"),
    ]
    return nodes, [edge("start", "chat"), edge("chat", "end")]


async def transcript(stack: Stack, user: User, conversation_id: str, *, ended: bool = True) -> dict[str, Any]:
    """The conversation and its messages as the catalog persisted them (waits for the end)."""
    async with stack.http(stack.catalog, headers={"Cookie": f"kivox_session={user.cookie}"}) as http:

        async def fetch() -> dict[str, Any] | None:
            conv = await http.get(f"/conversations/{conversation_id}")
            if conv.status_code != 200 or (ended and conv.json()["status"] != "ended"):
                return None
            messages = await http.get(f"/conversations/{conversation_id}/messages", params={"limit": 100})
            assert messages.status_code == 200, messages.text
            return {**conv.json(), "messages": [(m["role"], m["content"]) for m in messages.json()["items"]]}

        return await eventually(fetch, what=f"conversation {conversation_id} persisted")


async def eventually(probe: Callable[[], Awaitable[Any]], *, what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)


# ------------------------------------------------------------------------------------ the client


class Session:
    """A raw protocol client: what it sends and every event it gets, ticks kept apart."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []  # after the handshake, ticks excluded
        self.ticks: list[dict[str, Any]] = []
        self.conversation_id = ""
        self.binary: list[bytes] = []

    async def send(self, frame: dict[str, Any] | str | bytes) -> None:
        await self.ws.send(json.dumps(frame) if isinstance(frame, dict) else frame)

    async def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        while True:
            raw = await asyncio.wait_for(self.ws.recv(), timeout)
            if isinstance(raw, bytes):
                self.binary.append(raw)
                continue
            event: dict[str, Any] = json.loads(raw)
            if event["type"] == "tick":
                self.ticks.append(event)
                continue
            self.events.append(event)
            return event

    async def until(self, kind: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Events up to and including the next one of `kind`."""
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            event = await self.recv(max(0.01, deadline - time.monotonic()))
            got.append(event)
            if event["type"] == kind:
                return got

    async def say(self, text: str) -> list[dict[str, Any]]:
        await self.send({"type": "input_text", "text": text})
        return await self.until("turn_complete")

    async def closed(self, timeout: float = 10.0) -> str:
        """The reason of the session_closed event, then the server closes the socket."""
        events = await self.until("session_closed", timeout)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(self.ws.recv(), timeout)
        return str(events[-1]["reason"])


@asynccontextmanager
async def session(
    stack: Stack,
    agent_id: str,
    *,
    cookie: str | None = None,
    token: str | None = None,
    resume: tuple[str, int] | None = None,
    expect_error: bool = False,
) -> AsyncIterator[Session]:
    url = stack.gateway_url
    params = []
    if token:
        params.append(f"token={token}")
    if resume:
        params += [f"resume={resume[0]}", f"last_event={resume[1]}"]
    if params:
        url += "?" + "&".join(params)
    headers = {"Cookie": f"kivox_session={cookie}"} if cookie else {}
    async with connect(url, additional_headers=headers, max_size=None) as ws:
        s = Session(ws)
        await s.send({"type": "handshake", "agent_id": agent_id, "channel": "web-text"})
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if expect_error:
            assert reply["type"] == "handshake_error", reply
            s.events.append(reply)
        else:
            assert reply["type"] == "handshake_ok", reply
            s.conversation_id = reply["conversation_id"]
        yield s


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(e["chunk"] for e in events if e["type"] == "text_delta")


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


# ------------------------------------------------------------------------------------ the tests


async def test_every_node_type_and_the_transcript(stack: Stack) -> None:
    user = await signup(stack)
    Hooks.received.clear()
    nodes = [
        node(
            "start", "CONTROL.START", greeting="Hello {{ visitor }}!", variables={"visitor": "friend", "n": 1}
        ),
        node("count", "FUNCTION.SET_VAR", assignments=[{"name": "n", "value": "n + 1"}]),
        node(
            "crm",
            "FUNCTION.WEBHOOK",
            url=stack.hooks_url + "/crm?visitor={{ visitor }}",
            headers={"X-Token": "{{ secrets.CRM_TOKEN }}"},
            body={"conversation": "{{ conversation_id }}", "n": "{{ n }}"},
            save_as="crm",
            timeout_s=5,
        ),
        node("vip", "LOGICAL.EVAL", expression="crm.vip and n == 2"),
        node("chat", "CONTROL.DIALOG", prompt="You are a concierge for {{ crm.name }}."),
        node("ask", "CONTROL.DIALOG", message="What is your email, {{ crm.name }}?", save_reply_as="email"),
        node(
            "notify",
            "FUNCTION.EMAIL_NOTIFY",
            to="{{ email }}",
            subject="Follow-up for {{ crm.name }} {{ conversation_id }}",
            body="Visitor said: {{ last_user_message }}",
        ),
        node("done", "CONTROL.END", message="Goodbye {{ crm.name }}, we wrote to {{ email }}."),
        node("nope", "CONTROL.END", message="Not for you."),
        node("broken", "CONTROL.END", message="The CRM is down."),
    ]
    edges = [
        edge("start", "count"),
        edge("count", "crm"),
        edge("crm", "vip", branch="success"),
        edge("crm", "broken", branch="error"),
        edge("vip", "chat", branch="true"),
        edge("vip", "nope", branch="false"),
        edge("chat", "ask"),
        edge("ask", "notify"),
        edge("notify", "done"),
    ]
    agent = await make_agent(stack, user, nodes, edges, secrets={"CRM_TOKEN": "s3cret"})

    async with session(stack, agent, cookie=user.cookie) as s:
        opening = await s.until("turn_complete")
        assert opening == [{"type": "text_full", "content": "Hello friend!"}, {"type": "turn_complete"}]
        (hook,) = Hooks.received
        assert hook["path"] == "/crm?visitor=friend"
        assert hook["headers"]["X-Token"] == "s3cret"
        assert hook["body"] == {"conversation": s.conversation_id, "n": "2"}

        answer = await s.say("I need a table for two")
        # The LLM ran under the DIALOG's templated prompt (the built-in engine quotes its persona).
        assert text_of(answer) == 'As a concierge for Ada, I heard: "I need a table for two".'
        assert answer[-2:] == [
            {"type": "text_full", "content": "What is your email, Ada?"},
            {"type": "turn_complete"},
        ]

        await s.send({"type": "input_text", "text": "ada@example.com"})
        closing = await s.until("session_closed")
        assert closing == [
            {"type": "text_full", "content": "Goodbye Ada, we wrote to ada@example.com."},
            {"type": "flow_complete"},
            {"type": "session_closed", "reason": "flow_end"},
        ]

    conv = await transcript(stack, user, s.conversation_id)
    assert conv["end_reason"] == "flow_end"
    assert conv["messages"] == [
        ("assistant", "Hello friend!"),
        ("user", "I need a table for two"),
        ("assistant", 'As a concierge for Ada, I heard: "I need a table for two".'),
        ("assistant", "What is your email, Ada?"),
        ("user", "ada@example.com"),
        ("assistant", "Goodbye Ada, we wrote to ada@example.com."),
    ]

    # EMAIL_NOTIFY went through the bus into the auth service's outbox, which delivered it.
    async def mailed() -> list[Path]:
        return [p for p in stack.mail_dir.glob("*.eml") if s.conversation_id in p.read_text()]

    (mail,) = await eventually(mailed, what="the notification mail")
    text = mail.read_text()
    assert "To: ada@example.com" in text and "Visitor said: ada@example.com" in text


async def test_transfer_and_terminate(stack: Stack) -> None:
    user = await signup(stack)
    target = await make_agent(stack, user, *chat_agent())
    nodes = [
        node("start", "CONTROL.START"),
        node("ask", "CONTROL.DIALOG", message="Talk to sales?", save_reply_as="answer"),
        node("yes", "LOGICAL.EVAL", expression="answer == 'yes'"),
        node("transfer", "FUNCTION.TRANSFER", agent_id=target, reason="{{ answer }}: wants sales"),
        node("stop", "FUNCTION.TERMINATE", message="OK, bye.", reason="declined"),
    ]
    edges = [
        edge("start", "ask"),
        edge("ask", "yes"),
        edge("yes", "transfer", branch="true"),
        edge("yes", "stop", branch="false"),
    ]
    agent = await make_agent(stack, user, nodes, edges)

    async with session(stack, agent, cookie=user.cookie) as s:
        await s.until("turn_complete")
        await s.send({"type": "input_text", "text": "yes"})
        events = await s.until("session_closed")
        assert events == [
            {"type": "transfer", "agent_id": target, "reason": "yes: wants sales"},
            {"type": "session_closed", "reason": "agent_transfer"},
        ]
    assert (await transcript(stack, user, s.conversation_id))["end_reason"] == "agent_transfer"

    async with session(stack, agent, cookie=user.cookie) as s:
        await s.until("turn_complete")
        await s.send({"type": "input_text", "text": "no"})
        events = await s.until("session_closed")
        assert events == [
            {"type": "text_full", "content": "OK, bye."},
            {"type": "session_closed", "reason": "script_terminate"},
        ]
    conv = await transcript(stack, user, s.conversation_id)
    assert (conv["end_reason"], conv.get("summary")) == ("script_terminate", "declined")


async def test_the_documented_python_client_talks_to_a_live_agent(stack: Stack) -> None:
    user = await signup(stack)
    agent = await make_agent(stack, user, *chat_agent())
    token = await client_token(stack, await api_key(stack, user), agent)
    example = Path(__file__).resolve().parents[2] / "docs" / "examples" / "realtime_client.py"
    argv = [sys.executable, str(example), "--url", stack.gateway_url, "--token", token, "--agent", agent]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        "--say",
        "hello there",
        "--say",
        "bye",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert out.decode().splitlines() == [
        "agent: Hi, I am listening.",
        "you: hello there",
        'You said: "hello there".',
        "you: bye",
        'You said: "bye".',
        "agent: Bye!",
        "[session closed: flow_end]",
    ]


async def test_credentials_and_handshake_errors(stack: Stack) -> None:
    owner, stranger = await signup(stack), await signup(stack)
    nodes, edges = chat_agent()
    live = await make_agent(stack, owner, nodes, edges)
    draft = await make_agent(stack, owner, nodes, edges, live=False)
    other = await make_agent(stack, owner, nodes, edges)
    key = await api_key(stack, owner)
    token = await client_token(stack, key, live)

    # Accepted: the session cookie, an API key, a client token for this agent; a draft for its owner.
    for kwargs in ({"cookie": owner.cookie}, {"token": key}, {"token": token}):
        async with session(stack, live, **kwargs) as s:  # type: ignore[arg-type]
            assert (await s.until("turn_complete"))[0]["content"] == "Hi, I am listening."
            await s.send({"type": "end"})
            assert await s.closed() == "client_end"
    async with session(stack, draft, cookie=owner.cookie) as s:
        await s.until("turn_complete")

    refusals = [
        ({}, live, "auth.unauthenticated"),
        ({"token": "not-a-credential"}, live, "auth.unauthenticated"),
        ({"cookie": owner.cookie}, str(uuid.uuid4()), "resource.not_found"),
        ({"cookie": stranger.cookie}, draft, "resource.not_found"),
        ({"token": token}, other, "realtime.token_scope_mismatch"),
    ]
    for kwargs, agent, reason in refusals:
        async with session(stack, agent, expect_error=True, **kwargs) as s:  # type: ignore[arg-type]
            assert s.events == [{"type": "handshake_error", "reason": reason}]
            with pytest.raises(ConnectionClosed) as closed:
                await s.ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4400

    async def first_reply(frame: str | bytes | None) -> dict[str, Any]:
        async with connect(
            stack.gateway_url, additional_headers={"Cookie": f"kivox_session={owner.cookie}"}
        ) as ws:
            if frame is not None:
                await ws.send(frame)
            reply: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 10))
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return reply

    assert await first_reply(json.dumps({"type": "input_text", "text": "hi"})) == {
        "type": "handshake_error",
        "reason": "realtime.handshake_required",
    }
    assert (await first_reply(b"\x00\x01"))["reason"] == "realtime.handshake_required"
    assert (await first_reply(None))["reason"] == "realtime.handshake_timeout"

    # Nobody but the owner resumes a conversation.
    async with session(stack, live, cookie=owner.cookie) as s:
        await s.until("turn_complete")
        async with session(
            stack, live, cookie=stranger.cookie, resume=(s.conversation_id, 0), expect_error=True
        ) as intruder:
            assert intruder.events == [{"type": "handshake_error", "reason": "realtime.session_not_found"}]


async def test_client_token_data_becomes_session_variables(stack: Stack) -> None:
    owner = await signup(stack)
    nodes = [
        node(
            "start",
            "CONTROL.START",
            greeting="Hello {{ customer_name }}!",
            variables={"customer_name": "stranger"},
        ),
        node("end", "CONTROL.END"),
    ]
    agent = await make_agent(stack, owner, nodes, [edge("start", "end")])
    key = await api_key(stack, owner)
    named = await client_token(stack, key, agent, data={"customer_name": "John"})
    async with session(stack, agent, token=named) as s:  # type: ignore[arg-type]
        greeting = next(e for e in await s.until("flow_complete") if e["type"] == "text_full")
        assert greeting["content"] == "Hello John!"
    # Without data the blueprint's own default stands.
    async with session(stack, agent, token=await client_token(stack, key, agent)) as s:  # type: ignore[arg-type]
        greeting = next(e for e in await s.until("flow_complete") if e["type"] == "text_full")
        assert greeting["content"] == "Hello stranger!"


async def test_bad_frames_get_precise_errors_and_the_session_lives_on(stack: Stack) -> None:
    user = await signup(stack)
    agent = await make_agent(stack, user, *chat_agent())
    async with session(stack, agent, cookie=user.cookie) as s:
        await s.until("turn_complete")

        async def error_for(*frames: str | bytes | dict[str, Any]) -> dict[str, Any]:
            for frame in frames:
                await s.send(frame)
            while True:
                event = await s.recv()
                assert event["type"] == "error", event
                assert set(event) == {"type", "code", "message"} and event["message"]
                if event["code"] != "realtime.rate_limited":
                    return event

        assert (await error_for("not json"))["code"] == "realtime.invalid_json"
        assert (await error_for("[1, 2]"))["code"] == "realtime.invalid_json"
        assert (await error_for({"type": "shout"}))["code"] == "realtime.unknown_type"
        assert (await error_for({"text": "no type"}))["code"] == "realtime.unknown_type"
        missing = await error_for({"type": "input_text"})
        assert missing["code"] == "realtime.invalid_frame" and "text" in missing["message"]
        assert (await error_for({"type": "input_text", "text": 42}))["code"] == "realtime.invalid_frame"
        assert (await error_for({"type": "input_text", "text": "a\u0000b"}))[
            "code"
        ] == "realtime.invalid_frame"
        assert (await error_for(b"\x01\x02"))["code"] == "realtime.unexpected_binary"
        oversized = await error_for({"type": "input_text", "text": "x" * 5000})
        assert oversized["code"] == "realtime.frame_too_large" and "4096" in oversized["message"]
        too_big_audio = await error_for({"type": "input_audio_stream"}, b"\x00" * 70_000)
        assert too_big_audio["code"] == "realtime.frame_too_large"
        again = await error_for({"type": "handshake", "agent_id": agent})
        assert again["code"] == "realtime.already_started"
        # input_audio_stream announces exactly one binary frame: the second one is unexpected.
        audio = await error_for({"type": "input_audio_stream"}, b"\x01" * 64)
        assert audio["code"] == "realtime.audio_unsupported"  # a text session takes no audio
        assert (await error_for(b"\x01" * 64))["code"] == "realtime.unexpected_binary"

        # Over the input rate (burst 30, 50/s): frames are dropped, each one reported.
        for _ in range(45):
            await s.send({"type": "cancel"})
        await asyncio.sleep(0.8)  # let the bucket refill, then a marker frame ends the count
        marker = await error_for({"type": "shout"})
        limited = [e for e in s.events if e.get("code") == "realtime.rate_limited"]
        assert marker["code"] == "realtime.unknown_type"
        assert len(limited) >= 5, len(limited)

        # After all that, the session works as before.
        answer = await s.say("still there?")
        assert text_of(answer) == 'You said: "still there?".'
        await s.send({"type": "end"})
        assert await s.closed() == "client_end"


async def test_cancel_stops_the_answer_within_200ms(stack: Stack) -> None:
    user = await signup(stack)
    agent = await make_agent(stack, user, *chat_agent())
    async with session(stack, agent, cookie=user.cookie) as s:
        await s.until("turn_complete")
        await s.send({"type": "input_text", "text": LONG})
        before = [await s.recv() for _ in range(3)]
        assert kinds(before) == ["text_delta"] * 3
        sent = time.monotonic()
        await s.send({"type": "cancel"})
        rest = await s.until("turn_complete")
        assert time.monotonic() - sent < 0.2
        partial = text_of(before + rest)
        full = f'You said: "{LONG}".'
        assert full.startswith(partial) and len(partial) < len(full) // 2
        # The turn ended cleanly: the next one is answered in full.
        assert text_of(await s.say("again")) == 'You said: "again".'
        await s.send({"type": "end"})
        assert await s.closed() == "client_end"
    conv = await transcript(stack, user, s.conversation_id)
    assert conv["messages"][1:] == [
        ("user", LONG),
        ("assistant", partial),  # what the user saw, not what the model would have said
        ("user", "again"),
        ("assistant", 'You said: "again".'),
    ]


async def test_interruptions_when_the_agent_allows_them(stack: Stack) -> None:
    user = await signup(stack)
    patient = await make_agent(stack, user, *chat_agent())
    eager = await make_agent(stack, user, *chat_agent(), allow_interruptions=True)
    full = f'You said: "{LONG}".'
    for agent, interrupted in ((patient, False), (eager, True)):
        async with session(stack, agent, cookie=user.cookie) as s:
            await s.until("turn_complete")
            await s.send({"type": "input_text", "text": LONG})
            early = [await s.recv() for _ in range(2)]
            await s.send({"type": "input_text", "text": "wait"})
            if not interrupted:
                await s.send({"type": "input_text", "text": "and this"})
            answered = text_of(early + await s.until("turn_complete"))
            # Without interruptions new messages wait for the answer, then are taken in order;
            # with them a new message cuts the answer.
            if interrupted:
                assert full.startswith(answered) and len(answered) < len(full) // 2
            else:
                assert answered == full
            assert text_of(await s.until("turn_complete")) == 'You said: "wait".'
            if not interrupted:
                assert text_of(await s.until("turn_complete")) == 'You said: "and this".'


async def test_silence_and_duration_timeouts_with_ticks(stack: Stack) -> None:
    user = await signup(stack)
    silent = await make_agent(stack, user, *chat_agent(), max_silence_timeout_seconds=2.5)
    async with session(stack, silent, cookie=user.cookie) as s:
        await s.until("turn_complete")
        assert await s.closed(timeout=10) == "timeout"
        assert s.ticks, "no tick before the silence timeout"
        assert all(set(t) == {"type", "remaining_ms", "elapsed_ms"} for t in s.ticks)
        assert all(0 <= t["remaining_ms"] <= 2500 for t in s.ticks)
        elapsed = [t["elapsed_ms"] for t in s.ticks]
        assert elapsed == sorted(elapsed) and elapsed[-1] >= 900
    assert (await transcript(stack, user, s.conversation_id))["end_reason"] == "timeout"

    # The session's maximum duration cuts even an answer that is streaming.
    short = await make_agent(stack, user, *chat_agent(), max_session_duration_minutes=0.015)  # 0.9 s
    async with session(stack, short, cookie=user.cookie) as s:
        await s.until("turn_complete")
        await s.send({"type": "input_text", "text": LONG})  # answered in ~1.3 s
        events = await s.until("session_closed", timeout=10)
        assert kinds(events)[0] == "text_delta" and "turn_complete" not in kinds(events)
        assert events[-1] == {"type": "session_closed", "reason": "timeout"}


async def test_dropped_socket_resumes_without_gap_then_closes_after_grace(stack: Stack) -> None:
    user = await signup(stack)
    agent = await make_agent(stack, user, *chat_agent())
    async with session(stack, agent, cookie=user.cookie) as s:
        await s.until("turn_complete")
        await s.send({"type": "input_text", "text": LONG})
        for _ in range(4):
            await s.recv()
        seen = list(s.events)
    # The socket is gone mid-answer; the answer goes on into the stream.
    async with session(stack, agent, cookie=user.cookie, resume=(s.conversation_id, len(seen))) as again:
        assert again.conversation_id == s.conversation_id
        rest = await again.until("turn_complete")
    events = seen + rest
    assert kinds(events) == ["text_full", "turn_complete"] + ["text_delta"] * (len(events) - 3) + [
        "turn_complete"
    ]
    assert text_of(events) == f'You said: "{LONG}".'

    # Gone for longer than the grace period: the runtime closes the session.
    conv = await transcript(stack, user, s.conversation_id)
    assert conv["end_reason"] == "socket_shutdown"
    assert conv["messages"][1:] == [("user", LONG), ("assistant", f'You said: "{LONG}".')]
    # A late reconnect still gets what it missed, ending with session_closed.
    async with session(stack, agent, cookie=user.cookie, resume=(s.conversation_id, len(events))) as late:
        assert await late.closed() == "socket_shutdown"


async def test_worker_killed_mid_answer(stack: Stack) -> None:
    user = await signup(stack)
    agent = await make_agent(stack, user, *chat_agent())
    async with session(stack, agent, cookie=user.cookie) as s:
        await s.until("turn_complete")
        await s.send({"type": "input_text", "text": LONG})
        for _ in range(5):
            assert (await s.recv())["type"] == "text_delta"
        owner = (await stack.redis.get(f"parley:rt:session:{s.conversation_id}:owner")).decode()
        (victim,) = [w for w in stack.alive_workers() if w.pid is not None and f"-{w.pid}-" in owner]
        victim.signal(signal.SIGKILL)
        started = time.monotonic()
        rest = await s.until("turn_complete", timeout=ACK_WAIT_S + 10)
        took_over = time.monotonic() - started

        # The partial answer is disowned, then the answer comes again, whole, from another worker.
        restart = kinds(rest).index("error")
        assert rest[restart]["code"] == "realtime.turn_restarted"
        assert text_of(rest[restart + 1 :]) == f'You said: "{LONG}".'
        assert all(k == "text_delta" for k in kinds(rest[restart + 1 : -1]))
        new_owner = (await stack.redis.get(f"parley:rt:session:{s.conversation_id}:owner")).decode()
        assert new_owner != owner
        assert took_over >= ACK_WAIT_S * 0.5  # it was JetStream's redelivery, not the dead worker

        # The session goes on normally on its new worker.
        assert text_of(await s.say("still there?")) == 'You said: "still there?".'
        await s.send({"type": "end"})
        assert await s.closed() == "client_end"

    conv = await transcript(stack, user, s.conversation_id)
    assert conv["messages"] == [
        ("assistant", "Hi, I am listening."),
        ("user", LONG),
        ("assistant", f'You said: "{LONG}".'),
        ("user", "still there?"),
        ("assistant", 'You said: "still there?".'),
    ]
    stack.start_worker()  # back to two workers for whatever runs next
    await asyncio.to_thread(stack.workers[-1].wait_ready, 60)


async def test_a_stopping_worker_finishes_its_turn_then_hands_the_session_over(stack: Stack) -> None:
    user = await signup(stack)
    agent = await make_agent(stack, user, *chat_agent())
    owner_key = "parley:rt:session:{}:owner"
    async with session(stack, agent, cookie=user.cookie) as s:
        await s.until("turn_complete")
        await s.send({"type": "input_text", "text": LONG})
        assert (await s.recv())["type"] == "text_delta"
        owner = (await stack.redis.get(owner_key.format(s.conversation_id))).decode()
        (worker,) = [w for w in stack.alive_workers() if w.pid is not None and f"-{w.pid}-" in owner]
        worker.signal(signal.SIGTERM)
        await s.send({"type": "input_text", "text": "said during the drain"})
        # Draining: the running answer is finished by the same worker, nothing is replayed.
        rest = await s.until("turn_complete")
        ended = time.monotonic()
        assert "error" not in kinds(rest)
        assert text_of(s.events[-len(rest) - 1 :]) == f'You said: "{LONG}".'
        # The message that came during the drain is left for, and answered by, the next owner.
        assert text_of(await s.until("turn_complete")) == 'You said: "said during the drain".'

        async def new_owner() -> str | None:
            raw = await stack.redis.get(owner_key.format(s.conversation_id))
            return raw.decode() if raw is not None and raw.decode() != owner else None

        await eventually(new_owner, what="another worker taking the session over")
        # Handed back at once (a nak), not after the claim's ack_wait ran out.
        assert time.monotonic() - ended < ACK_WAIT_S
        assert text_of(await s.say("still there?")) == 'You said: "still there?".'
        await s.send({"type": "end"})
        assert await s.closed() == "client_end"
    # A clean exit (uvicorn ends by re-raising the SIGTERM it handled).
    assert worker.proc is not None and await asyncio.to_thread(worker.proc.wait, 30) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in (stack.logs / f"{worker.name}.log").read_text()
    conv = await transcript(stack, user, s.conversation_id)
    assert [role for role, _ in conv["messages"]] == ["assistant"] + ["user", "assistant"] * 3
    stack.start_worker()
    await asyncio.to_thread(stack.workers[-1].wait_ready, 60)

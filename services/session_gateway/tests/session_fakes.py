"""Stand-ins for what a session connection talks to, so its unit tests need no server at all.

- `FakeSocket`: the parts of starlette's `WebSocket` a connection uses; the test plays the client.
- `FakeBridge`: the bus side of one connection (`bridge.SessionBridge`): records what it stores,
  and lets the test play the runtime (`output`, `control`).
- `FakeRedis`: the few Redis commands the resume records use.
- the catalog answers `catalog.agent.access` on FastStream's in-memory `TestNatsBroker`, through
  the same `bus_handler` the catalog uses; auth is a table of principals per credential.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

from faststream.nats import NatsBroker, TestNatsBroker
from starlette.datastructures import Address, Headers, QueryParams
from starlette.types import Message
from starlette.websockets import WebSocketState

from parley_common import subjects
from parley_common.auth_contract import CredentialKind, Principal
from parley_common.bus import bus_handler
from parley_common.catalog_contract import AgentAccessReply, AgentAccessRequest, AgentStatus
from parley_common.errors import Codes, ErrorEnvelope, ParleyError
from parley_common.session_contract import (
    ServerEvent,
    SessionControl,
    SessionInput,
    SessionOutput,
    SessionStart,
    SessionTiming,
)
from parley_session_gateway.agent_access import AgentAccess
from parley_session_gateway.bridge import OnControl, OnOutput
from parley_session_gateway.connection import SessionConnection
from parley_session_gateway.live import LiveConnections
from parley_session_gateway.resume import Resume
from parley_session_gateway.sessions import GatewayContext
from parley_session_gateway.settings import GatewaySettings

AGENT = str(uuid.uuid4())
WAIT_S = 2.0


class FakeSocket:
    def __init__(self, query: dict[str, str] | None = None) -> None:
        self.query_params = QueryParams(query or {})
        # As a served socket's: `headers` reads the scope's list.
        self.scope: dict[str, Any] = {"type": "websocket", "headers": [(b"user-agent", b"fake")]}
        self.headers = Headers(scope=self.scope)
        self.cookies: dict[str, str] = {}
        self.client: Address | None = Address("203.0.113.7", 50123)
        self.application_state = WebSocketState.CONNECTING
        self.incoming: asyncio.Queue[Message] = asyncio.Queue()
        self.outgoing: asyncio.Queue[str | bytes] = asyncio.Queue()
        self.closed: tuple[int, str] | None = None
        self.gone = asyncio.Event()

    # what the connection calls

    async def accept(self) -> None:
        self.application_state = WebSocketState.CONNECTED

    async def receive(self) -> Message:
        return await self.incoming.get()

    async def send_text(self, text: str) -> None:
        self._check_open()
        await self.outgoing.put(text)

    async def send_bytes(self, data: bytes) -> None:
        self._check_open()
        await self.outgoing.put(data)

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self._check_open()
        self.closed = (code, reason or "")
        self.application_state = WebSocketState.DISCONNECTED
        self.gone.set()

    def _check_open(self) -> None:
        if self.application_state is WebSocketState.DISCONNECTED:
            raise RuntimeError("the socket is closed")

    # what the test (the client) does

    def send(self, frame: dict[str, Any]) -> None:
        self.incoming.put_nowait({"type": "websocket.receive", "text": json.dumps(frame)})

    def send_raw(self, text: str | None = None, data: bytes | None = None) -> None:
        self.incoming.put_nowait({"type": "websocket.receive", "text": text, "bytes": data})

    def drop(self) -> None:
        self.incoming.put_nowait({"type": "websocket.disconnect", "code": 1001})

    async def frame(self) -> dict[str, Any]:
        """The next text frame the connection sent."""
        sent = await asyncio.wait_for(self.outgoing.get(), WAIT_S)
        assert isinstance(sent, str), sent
        frame: dict[str, Any] = json.loads(sent)
        return frame

    async def frame_of(self, kind: str) -> dict[str, Any]:
        """The next text frame of this type (others, such as heartbeats or ticks, skipped)."""
        while True:
            frame = await self.frame()
            if frame["type"] == kind:
                return frame

    async def wait_closed(self) -> tuple[int, str]:
        await asyncio.wait_for(self.gone.wait(), WAIT_S)
        assert self.closed is not None
        return self.closed


class FakeBridge:
    def __init__(self, conversation_id: UUID, last_index: int = 0) -> None:
        self.conversation_id = conversation_id
        self.last_index = last_index
        self.inputs: list[tuple[SessionInput, str | None]] = []
        self.started: SessionStart | None = None
        self.detached = False
        self.new: bool | None = None  # what `attach` was told
        self.fail_sends = False
        self.stored = asyncio.Event()
        self._on_output: OnOutput | None = None
        self._on_control: OnControl | None = None
        self._index = last_index

    async def attach(self, on_output: OnOutput, on_control: OnControl, *, new: bool = False) -> None:
        self._on_output, self._on_control = on_output, on_control
        self.new = new

    async def start(self, start: SessionStart) -> None:
        self.started = start

    async def send(
        self, item: SessionInput, client_id: str | None = None, timeout_s: float | None = None
    ) -> None:
        if self.fail_sends:
            raise ConnectionError("the bus is away")
        self.inputs.append((item, client_id))
        self.stored.set()

    async def detach(self) -> None:
        self.detached = True

    # what the test (the runtime) does

    async def output(
        self, event: ServerEvent, *, index: int | None = None, deadline_s: float | None = None
    ) -> None:
        """An output (the next index, or `index`: one replayed), with a timing if `deadline_s`."""
        assert self._on_output is not None
        if index is None:
            self._index += 1
            index = self._index
        timing = None
        if deadline_s is not None:
            now = datetime.now(UTC)
            timing = SessionTiming(started_at=now, deadline_at=now + timedelta(seconds=deadline_s))
        self.last_index = max(self.last_index, index)
        await self._on_output(SessionOutput(index=index, event=event, timing=timing))

    async def control(
        self, connection_id: str | None, deadline_s: float | None = None, *, index: int | None = None
    ) -> None:
        assert self._on_control is not None
        now = datetime.now(UTC)
        deadline = now + timedelta(seconds=deadline_s) if deadline_s is not None else None
        control = SessionControl(
            started_at=now, deadline_at=deadline, connection_id=connection_id, index=index
        )
        await self._on_control(control)

    def input_types(self) -> list[str]:
        return [str(getattr(item, "type", "")) for item, _ in self.inputs]

    async def wait_input(self, kind: str) -> SessionInput:
        async def found() -> SessionInput:
            while True:
                for item, _ in self.inputs:
                    if getattr(item, "type", None) == kind:
                        return item
                self.stored.clear()
                await self.stored.wait()

        return await asyncio.wait_for(found(), WAIT_S)


class _Pipeline:
    def __init__(self, redis: FakeRedis) -> None:
        self.redis = redis
        self.calls: list[tuple[str, int]] = []

    async def __aenter__(self) -> _Pipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def expire(self, key: str, ttl_s: int) -> None:
        self.calls.append((key, ttl_s))

    async def execute(self) -> None:
        for key, ttl_s in self.calls:
            await self.redis.expire(key, ttl_s)


class FakeRedis:
    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.ttls: dict[str, int] = {}

    async def set(self, key: str, value: str, ex: int | None = None) -> None:
        self.values[key] = value
        if ex is not None:
            self.ttls[key] = ex

    async def get(self, key: str) -> str | None:
        return self.values.get(key)

    async def expire(self, key: str, ttl_s: int) -> bool:
        if key not in self.values:
            return False
        self.ttls[key] = ttl_s
        return True

    def pipeline(self, transaction: bool = True) -> _Pipeline:
        return _Pipeline(self)


class FakeLine:
    """`RedisLine.write` into a `FakeRedis` (the only command the gateway writes over it: `SET`)."""

    def __init__(self, redis: FakeRedis) -> None:
        self.redis = redis

    async def write(self, *args: bytes | str | int) -> None:
        command, key, value, ex, ttl_s = args
        assert (command, ex) == ("SET", "EX"), args
        await self.redis.set(str(key), str(value), ex=int(ttl_s))


class FakeAuth:
    """`AuthClient.verify` as a table: a principal per credential, else `auth.unauthenticated`."""

    def __init__(self) -> None:
        self.principals: dict[str, Principal] = {}

    async def verify(self, credential: str, *, max_age_s: float | None = None) -> Principal:
        principal = self.principals.get(credential)
        if principal is None:
            raise ParleyError(Codes.UNAUTHENTICATED)
        return principal


class FakeGateway(GatewayContext):
    """The gateway's context whose bridges are `FakeBridge`s (the last one made is `last`)."""

    bridges: list[FakeBridge]

    def bridge(self, conversation_id: UUID, last_index: int = 0) -> FakeBridge:  # type: ignore[override]
        made = FakeBridge(conversation_id, last_index)
        self.bridges.append(made)
        return made

    @property
    def last(self) -> FakeBridge:
        return self.bridges[-1]


class Catalog:
    """`catalog.agent.access` on the in-memory broker: AGENT is live; `refusal` refuses everything."""

    def __init__(self, broker: NatsBroker) -> None:
        self.refusal: ErrorEnvelope | None = None
        self.asked: list[AgentAccessRequest] = []

        @broker.subscriber(subjects.CATALOG_AGENT_ACCESS)
        @bus_handler(AgentAccessRequest)
        async def access(req: AgentAccessRequest) -> AgentAccessReply:
            self.asked.append(req)
            if self.refusal is not None:
                return AgentAccessReply(ok=False, error=self.refusal)
            return AgentAccessReply(ok=True, agent_id=AGENT, status=AgentStatus.LIVE, version=1)

    def refuse(self, code: str) -> None:
        self.refusal = ErrorEnvelope(
            code=code, message="refused by the catalog", doc_url="https://example.test"
        )


def principal(kind: CredentialKind = CredentialKind.API_KEY, **fields: Any) -> Principal:
    base: dict[str, Any] = {"credential_id": uuid.uuid4(), "user_id": uuid.uuid4()}
    if kind is CredentialKind.API_KEY:
        base["scopes"] = ["sessions:write"]
    return Principal(kind=kind, **{**base, **fields})


@asynccontextmanager
async def gateway(**settings: Any) -> AsyncIterator[tuple[FakeGateway, Catalog, FakeAuth]]:
    broker = NatsBroker()
    catalog = Catalog(broker)
    auth = FakeAuth()
    config = GatewaySettings(log_json=False, **settings)
    access = AgentAccess(broker, ttl_s=config.gateway_agent_access_cache_ttl_s)
    redis = FakeRedis()
    async with TestNatsBroker(broker) as test_broker:
        ctx = FakeGateway(
            settings=config,
            broker=test_broker,
            auth=auth,  # type: ignore[arg-type]
            redis=redis,  # type: ignore[arg-type]
            live=LiveConnections(auth, config.gateway_reverify_interval_s),  # type: ignore[arg-type]
            access=access,
            line=FakeLine(redis),  # type: ignore[arg-type]
        )
        ctx.bridges = []
        yield ctx, catalog, auth


Runner = Callable[[], Coroutine[Any, Any, None]]
Conn = TypeVar("Conn", bound=SessionConnection)


@asynccontextmanager
async def running(run: Runner) -> AsyncIterator[asyncio.Task[None]]:
    """The connection's `run()` as a task, which must end by itself once the test is done."""
    task = asyncio.create_task(run())
    try:
        yield task
        await asyncio.wait_for(task, WAIT_S)
    finally:
        task.cancel()


@asynccontextmanager
async def connect(
    ctx: FakeGateway,
    make: type[Conn],
    query: dict[str, str] | None = None,
    resume: Resume | None = None,
) -> AsyncIterator[tuple[Conn, FakeSocket]]:
    """A connection of class `make` on a `FakeSocket` opened with `query`, running; it must end by
    the end of the block."""
    ws = FakeSocket(query)
    conn = make(ctx, ws, resume)  # type: ignore[arg-type]
    async with running(conn.run):
        yield conn, ws


def error_code(frame: dict[str, Any]) -> str:
    """The code of a chat `message-error` (`<code>: <message>`)."""
    return str(frame["error"]).split(":", 1)[0]

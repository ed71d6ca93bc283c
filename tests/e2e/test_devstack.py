"""`parley run` end to end: the real command, real servers and every service as its own process.

One scenario, because a cold start is the expensive part: start cold → ready through the edge →
stop with SIGINT (exit 0) → start warm on the same state (data and secrets kept), this time with
`--traces`, and find a signup's span and a conversation turn's trace (gateway, runtime, catalog) in
the trace viewer through the edge → SIGKILL a runtime worker
→ it is restarted, counted on edge-meta's /metrics and the edge's /readyz is 200 again → SIGINT stops
everything (exit 0) and no process it started is left.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import redis
from websockets.asyncio.client import connect

from parley_devstack.cli import module_runnable
from parley_devstack.servers import free_port, port_is_free
from parley_devstack.testing import page_urls

from .kivox_contract import EXTENSIONS, contract_differences, load_contract, spec_path

START_TIMEOUT_S = 150.0
STOP_TIMEOUT_S = 60.0
EXPECTED = {
    "nats",
    "valkey",
    "postgres",
    "catalog",
    "session_gateway",
    "runtime-1",
    "runtime-2",
    "speech-1",
    "media-1",
    "edge_meta",
    "caddy",
}
if module_runnable("parley_auth"):
    EXPECTED.add("auth")


def poll(predicate: Callable[[], Any], timeout: float, what: str, alive: Callable[[], None]) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        alive()
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


class Parley:
    """`parley run` as a subprocess in `workdir`, its output in a file."""

    def __init__(self, workdir: Path, port: int, *args: str, env: dict[str, str] | None = None) -> None:
        self.workdir, self.port, self.args = workdir, port, args
        self.extra_env = env or {}
        self.url = f"http://127.0.0.1:{port}"
        self.out = workdir / f"parley-{time.monotonic_ns()}.out"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start and wait until the edge says ready; returns the seconds it took."""
        env = {k: v for k, v in os.environ.items() if k not in {"NATS_URL", "REDIS_URL", "DATABASE_URL"}}
        env.update(self.extra_env)
        started = time.monotonic()
        with self.out.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "parley_devstack", "run", "--port", str(self.port), *self.args],
                cwd=self.workdir,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        poll(lambda: self.readyz()[0] == 200, START_TIMEOUT_S, "/readyz 200", self.assert_running)
        poll(lambda: "Parley is running at" in self.output(), 10, "the summary", self.assert_running)
        return time.monotonic() - started

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def assert_running(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"parley run exited with {self.proc.returncode}:\n{self.output()}")

    def readyz(self) -> tuple[int, dict[str, Any]]:
        try:
            response = httpx.get(f"{self.url}/readyz", timeout=5)
            return response.status_code, response.json()
        except (httpx.HTTPError, ValueError):
            return 0, {}

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.workdir / ".parley" / "run.json").read_text())
        return data

    def interrupt(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"parley run did not stop on SIGINT:\n{self.output()}") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Not tmp_path: as root, PostgreSQL runs as another user that must traverse every parent
    # directory, and pytest resets its `pytest-of-<user>` base directory to 0700.
    path = Path(tempfile.mkdtemp(prefix="parley-e2e-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def alive_pids(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.add(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def find_signup_trace(parley: Parley) -> None:
    """A signup through the edge shows up in the trace viewer, also through the edge."""
    with httpx.Client(base_url=parley.url, timeout=10) as client:
        email = f"traced-{time.monotonic_ns()}@example.com"
        body = {"email": email, "password": "correct horse battery", "name": "Traced"}
        signup = client.post("/auth/signup", json=body)
        assert signup.status_code == 201, signup.text

        def signup_trace() -> dict[str, Any] | None:
            listing = client.get("/traces.json")
            assert listing.status_code == 200, listing.text
            found = [t for t in listing.json() if t["root"] == "POST /auth/signup"]
            return found[0] if found else None

        # Services export in batches (every 5 s by default).
        summary = poll(signup_trace, 30, "the signup's trace", parley.assert_running)
        assert summary["service"] == "parley-auth"
        tree = client.get(f"/traces/{summary['trace_id']}.json").json()
        (root,) = tree["roots"]
        assert (root["name"], root["kind"]) == ("POST /auth/signup", "server")
        assert root["attributes"]["http.route"] == "/auth/signup"
        page = client.get("/traces")
        assert page.status_code == 200 and f"/traces/{summary['trace_id']}" in page.text


def spans_below(node: dict[str, Any]) -> list[dict[str, Any]]:
    """`node`'s descendants in a trace tree of the viewer, depth first."""
    return [d for child in node["children"] for d in (child, *spans_below(child))]


def find_turn_trace(parley: Parley) -> None:
    """A conversation's turn as one trace across the services, as docs/operations.md draws it: the
    gateway's input, the runtime's turn under it (its node, the LLM's stream) and, under the turn,
    the catalog writing the turn's messages."""
    with httpx.Client(base_url=parley.url, timeout=10) as client:
        email = f"turn-{time.monotonic_ns()}@example.com"
        body = {"email": email, "password": "correct horse battery", "name": "Turn"}
        assert client.post("/auth/signup", json=body).status_code == 201
        nodes = [
            {"id": "s", "type": "CONTROL.START", "data": {"greeting": "Hi!"}},
            {"id": "chat", "type": "CONTROL.DIALOG", "data": {"exit_when": "last_user_message == 'bye'"}},
            {"id": "end", "type": "CONTROL.END", "data": {"message": "Bye!"}},
        ]
        edges = [{"source": "s", "target": "chat"}, {"source": "chat", "target": "end"}]
        workflow = {"nodes": nodes, "edges": edges}
        agent = client.post(
            "/users/me/agents",
            json={
                "config": {"name": "Traced"},
                "blueprint": {"entries": [{"name": "main", "workflow": workflow}]},
            },
        )
        assert agent.status_code == 201, agent.text
        agent_id = agent.json()["id"]
        live = client.patch(f"/agents/{agent_id}/status", json={"status": "live"})
        assert live.status_code == 200, live.text
        key = client.post("/auth/api-keys", json={"name": "e2e"}).json()["key"]

    async def talk() -> str:
        async with connect(f"ws://127.0.0.1:{parley.port}/realtime?token={key}") as ws:
            await ws.send(json.dumps({"type": "handshake", "agent_id": agent_id}))
            conversation = json.loads(await ws.recv())["conversation_id"]
            while json.loads(await ws.recv())["type"] != "turn_complete":
                pass
            await ws.send(json.dumps({"type": "input_text", "text": "trace me"}))
            while json.loads(await ws.recv())["type"] != "turn_complete":
                pass
            return str(conversation)

    conversation = asyncio.run(talk())

    def turn_tree() -> dict[str, Any] | None:
        with httpx.Client(base_url=parley.url, timeout=10) as client:
            for summary in client.get("/traces.json").json():
                if summary["root"] != "realtime.input":
                    continue
                # A span whose parent has not come yet is a root of its own for now.
                tree = client.get(f"/traces/{summary['trace_id']}.json").json()
                roots: list[dict[str, Any]] = tree["roots"]
                for root in roots:
                    turns = [c for c in root["children"] if c["name"] == "runtime.turn"]
                    if turns and turns[0]["attributes"]["conversation.id"] == conversation:
                        below = {c["name"] for c in turns[0]["children"]}
                        if "catalog.persist_conversation_event" in below:  # exported last, maybe
                            return root
        return None

    root = poll(turn_tree, 30, "the turn's trace with the catalog's span", parley.assert_running)
    assert root["service"] == "parley-session_gateway"
    (turn,) = [c for c in root["children"] if c["name"] == "runtime.turn"]
    assert turn["service"] == "parley-runtime"
    (persist,) = [c for c in turn["children"] if c["name"] == "catalog.persist_conversation_event"]
    assert persist["service"] == "parley-catalog"
    assert {"runtime.node", "llm.stream"} <= {s["name"] for s in spans_below(turn)}


REPO = Path(__file__).resolve().parents[2]


def run_readme_first_conversation(parley: Parley, workdir: Path) -> str:
    """The README's first-conversation example, verbatim but for the port, in bash with a new
    user's PATH (no uv), from a directory laid out like the checkout after `make install`."""
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"^```bash\n(.*?)^```", readme, flags=re.M | re.S)
    (block,) = [b for b in blocks if "realtime_client" in b]
    assert "127.0.0.1:8080" in block
    block = block.replace("127.0.0.1:8080", f"127.0.0.1:{parley.port}")
    checkout = workdir / "checkout"
    checkout.mkdir()
    for name in (".venv", "docs"):
        (checkout / name).symlink_to(REPO / name)
    path = os.pathsep.join(
        p for p in os.environ["PATH"].split(os.pathsep) if p and not (Path(p) / "uv").exists()
    )
    result = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", block],
        cwd=checkout,
        env={"PATH": path, "HOME": str(workdir)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_parley_run(workdir: Path) -> None:
    port = free_port()
    first = Parley(workdir, port)
    try:
        cold = first.start()
        status, body = first.readyz()
        assert status == 200 and body["status"] == "ready"
        assert set(body["services"]) == EXPECTED - {"nats", "valkey", "postgres", "edge_meta", "caddy"}
        state = first.state()
        assert set(state["processes"]) == EXPECTED

        with httpx.Client(base_url=first.url, timeout=10) as client:
            if "auth" in EXPECTED:
                version = client.get("/version")
                assert version.status_code == 200, version.text
                assert "apiVersion" in version.json()
            doc = client.get("/openapi.json")
            assert doc.status_code == 200 and doc.json()["openapi"] == "3.1.0"
            assert "x-parley-unavailable" not in doc.json()["info"]
            spec = spec_path()
            if spec is not None and "auth" in EXPECTED:  # the Kivox contract, as a client sees it
                differences = contract_differences(load_contract(spec), doc.json())
                assert sorted(differences) == sorted(EXTENSIONS), differences
            docs = client.get("/docs")
            assert docs.status_code == 200
            for url in page_urls(docs.text):  # offline-safe: everything from this origin
                assert url.startswith("/") and not url.startswith("//"), url
                assert client.get(url).status_code == 200, url
            unknown = client.get("/no-such-endpoint")
            assert unknown.status_code == 404 and unknown.json()["code"] == "request.route_not_found"
            assert client.get("/traces").status_code == 404  # no viewer without --traces

        if "auth" in EXPECTED:
            out = run_readme_first_conversation(first, workdir)
            assert "agent: Hi!" in out and 'You said: "hello there".' in out, out
            assert out.rstrip().endswith("agent: Bye!\n[session closed: flow_end]"), out

        # Something to find again after the restart.
        valkey_port = state["processes"]["valkey"]["port"]
        redis.Redis(port=valkey_port).set("parley:e2e", "kept")
        secrets = (workdir / ".parley" / "secrets.json").read_text()

        assert first.interrupt() == 0, first.output()
        assert "parley: stopped" in first.output()
        assert alive_pids({p["pid"] for p in state["processes"].values()}) == set()
    finally:
        first.kill()

    second = Parley(workdir, port, "--traces")
    try:
        warm = second.start()
        print(f"\ncold start {cold:.1f}s, warm start {warm:.1f}s")
        state = second.state()
        assert set(state["processes"]) == EXPECTED | {"traceview"}
        assert f"traces       {second.url}/traces" in second.output()
        if "auth" in EXPECTED:
            find_signup_trace(second)
            find_turn_trace(second)
        assert (workdir / ".parley" / "secrets.json").read_text() == secrets
        assert redis.Redis(port=state["processes"]["valkey"]["port"]).get("parley:e2e") == b"kept"

        # Every process the command started, with all of their descendants (postgres backends…).
        assert second.proc is not None
        tree = {p.pid for p in psutil.Process(second.proc.pid).children(recursive=True)}
        recorded = {p["pid"] for p in state["processes"].values()}
        assert recorded <= tree

        # A runtime worker dies: supervision starts it again and the platform is whole again.
        killed = state["processes"]["runtime-1"]["pid"]
        os.kill(killed, signal.SIGKILL)
        poll(
            lambda: second.state()["processes"]["runtime-1"]["pid"] != killed and second.readyz()[0] == 200,
            60,
            "runtime-1 restarted and /readyz 200 again",
            second.assert_running,
        )
        out = second.output()
        assert "runtime-1 exited unexpectedly (code -9); restarting it in 0.5s" in out, out
        assert "runtime-1 restarted" in out, out
        edge_meta = second.state()["processes"]["edge_meta"]["port"]
        metrics = httpx.get(f"http://127.0.0.1:{edge_meta}/metrics", timeout=5).text
        assert 'parley_devstack_restarts_total{process="runtime-1"} 1.0' in metrics
        assert 'parley_devstack_restarts_total{process="catalog"} 0.0' in metrics
        public = httpx.get(f"{second.url}/metrics", timeout=5)  # never public through the edge
        assert public.status_code == 404 and public.json()["code"] == "request.route_not_found"
        events = (workdir / ".parley" / "logs" / "supervisor.log").read_text().splitlines()
        assert [json.loads(e)["event"] for e in events] == ["process.exited", "process.restarted"]
        tree |= {p.pid for p in psutil.Process(second.proc.pid).children(recursive=True)}

        assert second.interrupt() == 0, second.output()  # every crash was recovered from
        assert alive_pids(tree) == set()
        assert port_is_free(port)
        assert not (workdir / ".parley" / "run.json").exists()
    finally:
        second.kill()

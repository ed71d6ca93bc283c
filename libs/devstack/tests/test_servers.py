# One piece (494 lines): the embedded servers' lifecycle (start, restart with data, stop, the edge)
# with shared temporary-directory fixtures.
"""The embedded servers start, answer, keep their data across restarts and stop cleanly."""

from __future__ import annotations

import contextlib
import json
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TypeVar

import asyncpg
import nats
import psutil
import pytest
import redis
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect
from websockets.sync.server import ServerConnection
from websockets.sync.server import serve as ws_serve

from parley_devstack import servers as srv
from parley_devstack.edge import DEV_ROUTES, EDGE_ROUTES, CaddyServer, caddyfile
from parley_devstack.postgres import PostgresServer, create_database, drop_database, with_database

P = TypeVar("P", bound=srv.ManagedProcess)


@contextlib.contextmanager
def running(server: P, timeout: float) -> Iterator[P]:
    """`server` started and ready for the block, stopped after it."""
    server.start()
    try:
        server.wait_ready(timeout)
        yield server
    finally:
        server.stop()


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_free_port_skips_reserved_and_repeats() -> None:
    ports = [srv.free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert not srv.RESERVED_PORTS & set(ports)


def test_free_ports_are_below_the_range_outgoing_connections_take(monkeypatch: pytest.MonkeyPatch) -> None:
    # An outgoing connection's local port comes from `ip_local_port_range`: a port handed out there
    # could be taken before the server binds it.
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    if low - srv._LISTEN_FROM < 2_000:
        pytest.skip(f"this machine's outgoing range starts at {low}: free_port falls back to bind(0)")
    ports = [srv.free_port() for _ in range(50)]
    assert all(srv._LISTEN_FROM <= port < low for port in ports)
    # A port someone listens on is passed over for the next pick.
    taken, other = ports[0], ports[1]
    srv._allocated.discard(other)
    picks = iter([taken, other])
    monkeypatch.setattr(random, "randint", lambda a, b: next(picks))
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", taken))
        listening.listen()
        srv._allocated.discard(taken)
        assert srv.free_port() == other


def _time_wait_on(port: int) -> bool:
    """Whether a TCP connection with local port `port` is in TIME_WAIT (state 06 in /proc/net/tcp)."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return any(int(r.split()[1].split(":")[1], 16) == port and r.split()[3] == "06" for r in rows)


def test_port_in_time_wait_is_free() -> None:
    """Right after a server stops, its closed connections linger in TIME_WAIT: `parley run` must
    still see the port as free (Caddy binds with SO_REUSEADDR), while a listening port is not."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert not srv.port_is_free(port)
        client = socket.create_connection(("127.0.0.1", port))
        served, _ = listener.accept()
        served.close()  # the server closes first: its side ends in TIME_WAIT
        client.close()
    wait_until(lambda: _time_wait_on(port), what=f"a TIME_WAIT connection on port {port}")
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))  # what the check did before: "port ... is in use"
    assert srv.port_is_free(port)


async def test_nats_with_jetstream(tmp_path: Path) -> None:
    with running(srv.NatsServer(tmp_path / "nats", log_path=tmp_path / "nats.log"), 20) as server:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await js.add_stream(name="T", subjects=["t.>"])
        ack = await js.publish("t.1", b"hello")
        assert ack.stream == "T"
        await nc.close()
    assert server.returncode is not None
    assert not srv.tcp_open(server.port)
    # JetStream wrote into the data dir we gave it.
    assert any((tmp_path / "nats").rglob("*"))


def environ_of(pid: int) -> list[bytes]:
    """A running process's environment, `NAME=value` entries."""
    return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")


def test_nats_runs_on_one_go_processor_unless_the_environment_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GOMAXPROCS", raising=False)
    monkeypatch.delenv("GOGC", raising=False)
    with running(srv.NatsServer(tmp_path / "nats", log_path=tmp_path / "nats.log"), 20) as server:
        assert server.pid is not None
        environ = environ_of(server.pid)
        assert b"GOMAXPROCS=1" in environ
        assert b"GOGC=50" in environ  # a heap goal of 1.5 times its live data, not twice
    monkeypatch.setenv("GOMAXPROCS", "3")
    monkeypatch.setenv("GOGC", "200")
    assert srv.NatsServer(tmp_path / "nats2").env == {**os.environ, "GOMAXPROCS": "3", "GOGC": "200"}


def test_valkey_keeps_data_across_restarts(tmp_path: Path) -> None:
    port = srv.free_port()
    with running(
        srv.ValkeyServer(tmp_path / "valkey", port=port, persistent=True, log_path=tmp_path / "v1.log"), 20
    ) as first:
        redis.Redis.from_url(first.url).set("k", "v")
    assert not srv.tcp_open(port)

    with running(
        srv.ValkeyServer(tmp_path / "valkey", port=port, persistent=True, log_path=tmp_path / "v2.log"), 20
    ) as second:
        assert redis.Redis.from_url(second.url).get("k") == b"v"


def test_valkey_ephemeral_writes_nothing(tmp_path: Path) -> None:
    with running(srv.ValkeyServer(tmp_path / "valkey", persistent=False), 20) as server:
        redis.Redis.from_url(server.url).set("k", "v")
    assert list((tmp_path / "valkey").iterdir()) == []


async def test_postgres_databases_and_restart(pg_tmp: Path) -> None:
    port = srv.free_port()
    data = pg_tmp / "pg" / "data"
    server = PostgresServer(data, port=port, durable=True, log_path=pg_tmp / "pg.log")
    assert not server.initialized
    server.init()
    assert server.initialized
    server.start()
    try:
        server.wait_ready(30)
        assert create_database(server.url(), "parley") is True
        assert create_database(server.url(), "parley") is False  # idempotent
        conn = await asyncpg.connect(server.url("parley"))
        await conn.execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('kept')")
        await conn.close()
    finally:
        server.stop()
    assert server.returncode == 0  # fast shutdown, not a kill
    assert not srv.tcp_open(port)

    with running(PostgresServer(data, port=port, durable=True, log_path=pg_tmp / "pg2.log"), 30) as again:
        conn = await asyncpg.connect(again.url("parley"))
        assert await conn.fetchval("SELECT v FROM t") == "kept"
        await conn.close()
        drop_database(again.url(), "parley")
        conn = await asyncpg.connect(again.url())
        assert await conn.fetchval("SELECT count(*) FROM pg_database WHERE datname = 'parley'") == 0
        await conn.close()


def test_with_database_keeps_the_rest_of_the_url() -> None:
    url = "postgresql+asyncpg://u:p@h:5/old?sslmode=disable"
    assert with_database(url, "new") == "postgresql+asyncpg://u:p@h:5/new?sslmode=disable"


def test_create_database_rejects_unsafe_names() -> None:
    with pytest.raises(ValueError):
        create_database("postgresql://x@127.0.0.1:1/postgres", 'x"; DROP DATABASE y; --')


# ------------------------------------------------------------------------------- processes


class NeverReady(srv.ManagedProcess):
    def probe(self) -> bool:
        return False


def never_ready(tmp_path: Path, name: str, code: str) -> NeverReady:
    """A started Python process running `code` that never passes its probe, logging to `<name>.log`."""
    proc = NeverReady(name, [sys.executable, "-c", code], log_path=tmp_path / f"{name}.log")
    proc.start()
    return proc


def test_wait_ready_reports_an_early_exit_with_its_log(tmp_path: Path) -> None:
    proc = never_ready(tmp_path, "broken", "import sys; print('bad config'); sys.exit(3)")
    with pytest.raises(srv.ServerError, match=r"(?s)broken exited with code 3.*bad config"):
        proc.wait_ready(10)


def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    code = (
        "import signal, time, pathlib; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"pathlib.Path({str(ready)!r}).touch(); time.sleep(60)"
    )
    proc = srv.ManagedProcess("stubborn", [sys.executable, "-c", code])
    proc.start()
    wait_until(ready.exists, what="child to install its handler")
    started = time.monotonic()
    proc.stop(timeout=0.5)
    assert proc.returncode == -signal.SIGKILL
    assert time.monotonic() - started < 5


def test_stop_all_hurry_skips_the_grace_period() -> None:
    procs = [
        srv.ManagedProcess(f"p{i}", [sys.executable, "-c", "import time; time.sleep(60)"]) for i in range(2)
    ]
    for p in procs:
        p.stop_signal = signal.SIGCONT  # a signal they ignore, so only SIGKILL ends them
        p.start()
    started = time.monotonic()
    srv.stop_all(procs, timeout=30, hurry=lambda: True)
    assert time.monotonic() - started < 5
    assert all(p.returncode == -signal.SIGKILL for p in procs)


def test_children_die_with_a_killed_parent(tmp_path: Path) -> None:
    """Even SIGKILL of the launcher leaves no server behind (Linux parent-death signal)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("parent-death signal is Linux only")
    pid_file = tmp_path / "child.pid"
    launcher = (
        "import sys, time, pathlib\n"
        "from parley_devstack.servers import ManagedProcess\n"
        "p = ManagedProcess('sleeper', [sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "p.start()\n"
        f"pathlib.Path({str(pid_file)!r}).write_text(str(p.pid))\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", launcher])
    try:
        wait_until(lambda: pid_file.exists() and pid_file.read_text() != "", what="child pid")
        child = psutil.Process(int(pid_file.read_text()))
        parent.kill()
        parent.wait(5)
        child.wait(10)  # raises TimeoutExpired if it outlived its parent
    finally:
        parent.kill()


def test_wait_ready_times_out_with_the_log(tmp_path: Path) -> None:
    proc = never_ready(tmp_path, "slow", "print('still booting', flush=True); import time; time.sleep(60)")
    try:
        wait_until(lambda: "booting" in (tmp_path / "slow.log").read_text(), what="log line")
        with pytest.raises(srv.ServerError, match=r"(?s)slow not ready after 0s.*still booting"):
            proc.wait_ready(0.2)
    finally:
        proc.stop(timeout=2)


# ----------------------------------------------------------------------------------- Caddy


class _Named(BaseHTTPRequestHandler):
    name = "?"

    def do_GET(self) -> None:
        body = json.dumps({"upstream": self.name, "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def upstreams() -> Iterator[dict[str, str]]:
    """One tiny HTTP server per route owner, answering with its own name."""
    servers: list[ThreadingHTTPServer] = []
    result: dict[str, str] = {}
    for owner, _ in [*EDGE_ROUTES, *DEV_ROUTES]:
        handler = type(f"H_{owner}", (_Named,), {"name": owner})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        result[owner] = f"127.0.0.1:{server.server_address[1]}"
    yield result
    for server in servers:
        server.shutdown()
        server.server_close()


ROUTING = [
    ("/users/me/agents", "catalog"),
    ("/users/me/agents/a1/publish", "catalog"),
    ("/users/me/templates/t1", "catalog"),
    ("/orgs/acme/agents", "catalog"),
    ("/orgs/acme/agents/a1/versions/2", "catalog"),
    ("/orgs/acme/templates/t1", "catalog"),
    ("/orgs/acme/tools/execute", "catalog"),
    ("/agents/a1", "catalog"),
    ("/templates", "catalog"),
    ("/conversations/c1/messages", "catalog"),
    ("/tools", "catalog"),
    ("/api/agents/x/tools", "catalog"),
    ("/realtime/sessions", "session_gateway"),
    ("/chat/ws", "session_gateway"),
    ("/api/agent-sessions/s1/trigger", "session_gateway"),
    ("/auth/sessions", "auth"),
    ("/users/me", "auth"),
    ("/users/me/api-keys", "auth"),
    ("/orgs", "auth"),
    ("/orgs/acme/members/u1", "auth"),
    ("/version", "auth"),
    ("/api/version", "auth"),
    ("/api/chatty-voice/tools/execute", "catalog"),
    ("/api/realtime-token", "session_gateway"),
    ("/api/csrf-token", "session_gateway"),
    ("/api/realtime/webrtc", "session_gateway"),
    ("/play", "edge_meta"),
    ("/chat/tokens", "auth"),
    ("/voice/tokens", "auth"),
    ("/readyz", "edge_meta"),
    ("/openapi.json", "edge_meta"),
    ("/docs", "edge_meta"),
    ("/traces", "traceview"),
    ("/traces/0af7651916cd43dd8448eb211c80319c.json", "traceview"),
    ("/no/such/thing", "edge_meta"),  # the fallback answers with the 404 envelope
]


def test_caddy_routes_each_path_to_its_service(tmp_path: Path, upstreams: dict[str, str]) -> None:
    import httpx

    caddy = CaddyServer(
        tmp_path / "caddy",
        port=srv.free_port(),
        upstreams=upstreams,
        fallback=upstreams["edge_meta"],
        log_path=tmp_path / "caddy.log",
    )
    caddy.start()
    try:
        caddy.wait_ready(20)
        with httpx.Client(base_url=caddy.url, timeout=5) as client:
            got = {path: client.get(path).json() for path, _ in ROUTING}
        assert caddy.pid is not None  # on one Go processor, as NATS (servers.py, edge.py)
        assert b"GOMAXPROCS=1" in environ_of(caddy.pid)
    finally:
        caddy.stop()
    assert {p: g["upstream"] for p, g in got.items()} == dict(ROUTING)
    assert all(g["path"] == p for p, g in got.items())  # paths are passed through untouched
    assert not srv.tcp_open(caddy.port)


def raw_request(port: int, head: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `head` as is on a fresh connection; the status, headers and body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(head)  # a server refusing early may stop reading
        data = b""
        while b"\r\n\r\n" not in data or len(data) < _expected_length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    top, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = top.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def _expected_length(data: bytes) -> int:
    top, sep, _ = data.partition(b"\r\n\r\n")
    for line in top.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(top) + len(sep) + int(line.split(b":")[1])
    return 1 << 30  # read until the server closes


@pytest.fixture(scope="module")
def edge_with_meta(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CaddyServer]:
    """The make-run edge on a port other than 8080 with the real edge-meta as its fallback, and a
    catalog upstream that is down."""
    tmp_path = tmp_path_factory.mktemp("edge")
    meta_port = srv.free_port()
    meta = srv.ManagedProcess(
        "edge_meta",
        [sys.executable, "-m", "parley_devstack.edge_meta"],
        env={**os.environ, "PARLEY_HTTP_PORT": str(meta_port), "PARLEY_EDGE_PEERS": ""},
        log_path=tmp_path / "edge_meta.log",
    )
    meta.probe = lambda: srv.tcp_open(meta_port)  # type: ignore[method-assign]
    caddy = CaddyServer(
        tmp_path / "caddy",
        port=srv.free_port(),
        upstreams={"catalog": f"127.0.0.1:{srv.free_port()}", "edge_meta": f"127.0.0.1:{meta_port}"},
        fallback=f"127.0.0.1:{meta_port}",
        log_path=tmp_path / "caddy.log",
    )
    meta.start()
    caddy.start()
    try:
        meta.wait_ready(30)
        caddy.wait_ready(20)
        yield caddy
    finally:
        srv.stop_all([caddy, meta], timeout=5)


def test_caddy_errors_are_envelopes_with_the_real_public_url(edge_with_meta: CaddyServer) -> None:
    caddy = edge_with_meta
    errors = f"http://127.0.0.1:{caddy.port}/errors"
    status, headers, body = raw_request(caddy.port, b"GET /agents HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, headers["content-type"]) == (503, "application/json")
    assert json.loads(body) == {
        "code": "service.unavailable",
        "message": "The service is not ready.",
        "doc_url": f"{errors}#service-unavailable",  # this edge's port, not 8080
    }
    # 100 KB of headers: past Caddy's parser, refused by the service behind it in the same shape.
    big = b"GET /no/such HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
    status, headers, body = raw_request(caddy.port, big)
    assert (status, headers["content-type"]) == (431, "application/json")
    envelope = json.loads(body)
    assert envelope["code"] == "request.headers_too_large" and envelope["params"] == {"limit": 32768}
    status, _, body = raw_request(caddy.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, json.loads(body)["code"]) == (404, "request.route_not_found")  # never public


def test_requests_that_are_not_http_get_the_parsers_plain_answer(edge_with_meta: CaddyServer) -> None:
    """What docs/errors.md (`request.malformed`) says stays true: bytes HTTP forbids in a header,
    and header sections over the edge's 1 MB, are refused by Go's HTTP parser before any handler,
    in plain text, with the connection closed. (A stock Caddy has no hook for these answers.)"""
    caddy = edge_with_meta
    status, headers, _ = raw_request(caddy.port, b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n")
    assert (status, headers["connection"]) == (400, "close")
    huge = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1_100_000 + b"\r\n\r\n"
    status, headers, _ = raw_request(caddy.port, huge)
    assert (status, headers["connection"]) == (431, "close")


def test_caddy_answers_for_a_dead_upstream_with_the_envelope(tmp_path: Path) -> None:
    import httpx

    caddy = CaddyServer(
        tmp_path / "caddy",
        port=srv.free_port(),
        upstreams={"catalog": f"127.0.0.1:{srv.free_port()}"},
        docs_url="https://parley.example.com/errors",
    )
    caddy.start()
    try:
        caddy.wait_ready(20)
        response = httpx.get(f"{caddy.url}/agents", timeout=5)
    finally:
        caddy.stop()
    assert response.status_code == 503
    assert response.json()["code"] == "service.unavailable"
    assert response.json()["doc_url"] == "https://parley.example.com/errors#service-unavailable"


def test_caddy_without_an_owner_has_no_route_for_it() -> None:
    text = caddyfile(9999, {"catalog": "127.0.0.1:1"})
    assert (
        "@catalog" in text
        and "@auth" not in text
        and "@traceview" not in text
        and "admin off" in text
        and "auto_https off" in text
    )


def test_caddy_proxies_websockets(tmp_path: Path) -> None:
    def echo(ws: ServerConnection) -> None:
        for message in ws:
            assert isinstance(message, str)
            ws.send(f"echo:{message}")

    with ws_serve(echo, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.socket.getsockname()[1]
        caddy = CaddyServer(
            tmp_path / "caddy", port=srv.free_port(), upstreams={"session_gateway": f"127.0.0.1:{port}"}
        )
        caddy.start()
        try:
            caddy.wait_ready(20)
            with ws_connect(f"ws://127.0.0.1:{caddy.port}/chat/ws", open_timeout=5) as ws:
                ws.send("hi")
                assert ws.recv(timeout=5) == "echo:hi"
                # Frames far bigger than the edge's stream buffer (EDGE_STREAM_BUFFER) pass whole.
                big = "".join(chr(0x61 + i % 26) for i in range(300_000))
                ws.send(big)
                assert ws.recv(timeout=5) == f"echo:{big}"
        finally:
            caddy.stop()
            server.shutdown()


def test_caddy_spreads_sockets_over_several_gateways(tmp_path: Path) -> None:
    """`parley run --gateways N`: open sockets go to the gateway holding the fewest."""

    def echo_from(name: str) -> Callable[[ServerConnection], None]:
        def echo(ws: ServerConnection) -> None:
            for message in ws:
                ws.send(f"{name}:{message!s}")

        return echo

    servers = [ws_serve(echo_from(name), "127.0.0.1", 0) for name in ("a", "b")]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    addresses = " ".join(f"127.0.0.1:{s.socket.getsockname()[1]}" for s in servers)
    with running(
        CaddyServer(tmp_path / "caddy", port=srv.free_port(), upstreams={"session_gateway": addresses}), 20
    ) as caddy:
        sockets = [ws_connect(f"ws://127.0.0.1:{caddy.port}/realtime", open_timeout=5) for _ in range(4)]
        answered = []
        for ws in sockets:
            ws.send("hi")
            answered.append(str(ws.recv(timeout=5)).split(":")[0])
        assert sorted(answered) == ["a", "a", "b", "b"]
        for ws in sockets:
            ws.close()
        for server in servers:
            server.shutdown()


def test_several_edges_share_one_port_and_outlive_each_other(tmp_path: Path) -> None:
    """`parley run --edges N`: N Caddy processes bound to one port, each holding some of the sockets
    (an edge holds two open files per socket, so N hold N times as many). One killed closes its
    own sockets (their clients see the close, and may reconnect) and no other: the rest go on, and
    every new socket reaches an edge left."""

    def echo(ws: ServerConnection) -> None:
        for message in ws:
            ws.send(f"echo:{message!s}")

    server = ws_serve(echo, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    upstream = f"127.0.0.1:{server.socket.getsockname()[1]}"
    port = srv.free_port()
    edges = [
        CaddyServer(tmp_path / name, port=port, upstreams={"session_gateway": upstream}, name=name)
        for name in ("caddy-1", "caddy-2")
    ]
    try:
        for edge in edges:
            edge.start()
            edge.wait_ready(20)
        assert [e.name for e in edges] == ["caddy-1", "caddy-2"]

        def held(edge: CaddyServer) -> int:
            assert edge.proc is not None
            conns = psutil.Process(edge.proc.pid).net_connections(kind="tcp")
            return sum(1 for c in conns if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port)

        with contextlib.ExitStack() as open_sockets:
            sockets = []
            for _ in range(24):
                ws = open_sockets.enter_context(ws_connect(f"ws://127.0.0.1:{port}/realtime", open_timeout=5))
                ws.send("hi")
                assert ws.recv(timeout=5) == "echo:hi"
                sockets.append(ws)
            # Linux hashes each new connection to one of the listeners (2 * 2**-24 that one gets all).
            on_first, on_second = held(edges[0]), held(edges[1])
            assert on_first > 0 and on_second > 0 and on_first + on_second == 24
            assert edges[0].proc is not None
            edges[0].proc.kill()  # SIGKILL: no goodbye to its sockets
            edges[0].proc.wait(10)
            survived = closed = 0
            for ws in sockets:
                try:
                    ws.send("still there?")
                    assert ws.recv(timeout=5) == "echo:still there?"
                    survived += 1
                except ConnectionClosed:
                    closed += 1
            assert (survived, closed) == (on_second, on_first)
        for _ in range(8):  # every new socket now reaches the edge left
            with ws_connect(f"ws://127.0.0.1:{port}/realtime", open_timeout=5) as ws:
                ws.send("again")
                assert ws.recv(timeout=5) == "echo:again"
    finally:
        for edge in edges:
            edge.stop()
        server.shutdown()


def _limited(soft: int, hard: int) -> Callable[[], None]:
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("want", [2048, srv.DESCRIPTORS])
def test_parley_run_raises_its_open_files_limit_for_the_edge(want: int) -> None:
    """The edge holds two descriptors per proxied WebSocket: `parley run` raises the limit it and
    its children get (from 1024 with a hard limit of 4096 here), the hard one too where it may
    (CAP_SYS_RESOURCE), else as far as the hard one goes; never lower than it was."""
    code = (
        "import resource, sys; from parley_devstack.servers import raise_descriptor_limit as r;"
        " got = r(int(sys.argv[1])); print(got, *resource.getrlimit(resource.RLIMIT_NOFILE))"
    )
    limited = _limited(1024, 4096)
    argv = [sys.executable, "-c", code, str(want)]
    out = subprocess.run(argv, preexec_fn=limited, capture_output=True, text=True, check=True).stdout.split()
    got, soft, hard = map(int, out)
    assert got == soft
    if want <= 4096:  # within the hard limit: anyone may
        assert (soft, hard) == (want, 4096)
    else:  # the hard limit raised too when privileged, else the soft one up to it
        assert (soft, hard) in ((want, want), (4096, 4096))
    assert srv.raise_descriptor_limit(want=16) >= 16  # never lowers it (this process's is above 16)

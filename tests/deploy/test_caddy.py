"""The compose edge, run for real: Caddy with deploy/caddy/Caddyfile, its upstreams swapped for fake
servers on loopback ports, and a request per route to see which service answers."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from parley_devstack import edge as make_run_edge

REPO = Path(__file__).resolve().parents[2]
UPSTREAMS = {
    "auth": "auth",
    "catalog": "catalog",
    "session-gateway": "session_gateway",
    "edge-meta": "edge_meta",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_route_table_covers_every_caddyfile_matcher(edge_routes: dict[str, str]) -> None:
    """Each path pattern of the Caddyfile is exercised by at least one route above."""
    caddyfile = (REPO / "deploy/caddy/Caddyfile").read_text()
    patterns = [p for line in re.findall(r"^\s*@\w+ path (.+)$", caddyfile, flags=re.M) for p in line.split()]
    assert patterns
    for pattern in patterns:
        regex = re.compile(re.escape(pattern).replace(r"\*", ".*"))
        assert any(regex.fullmatch(path.split("?")[0]) for path in edge_routes), (
            f"no route exercises {pattern}"
        )


DOCS_URL = "https://parley.example.com/errors"


@contextmanager
def compose_edge(caddy: str, tmp_path: Path, ports: dict[str, int]) -> Iterator[str]:
    """Caddy with the real deploy/caddy/Caddyfile, each upstream `name` (UPSTREAMS' values) at
    127.0.0.1:`ports[name]`; yields the edge's base URL."""
    text = (REPO / "deploy/caddy/Caddyfile").read_text()
    # The real file, three substitutions: no admin endpoint, a loopback listener, loopback upstreams.
    text, n_global = re.subn(r"\A((?:#.*\n|\s*\n)*)\{\n", r"\1{\n\tadmin off\n", text)
    port = free_port()
    text, n_site = re.subn(r"^:8080 \{$", f"http://127.0.0.1:{port} {{", text, flags=re.M)
    for host, name in UPSTREAMS.items():
        text, n = re.subn(
            rf"reverse_proxy {re.escape(host)}:8000\b", f"reverse_proxy 127.0.0.1:{ports[name]}", text
        )
        assert n == 1, f"expected one reverse_proxy to {host}:8000"
    assert (n_global, n_site) == (1, 1), "the Caddyfile's global block or :8080 site moved"
    config = tmp_path / "Caddyfile"
    config.write_text(text)
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "PARLEY_DOCS_URL": DOCS_URL,  # as docker-compose.yml gives the edge
    }
    log = (tmp_path / "caddy.log").open("w")
    proc = subprocess.Popen(
        [caddy, "run", "--config", str(config), "--adapter", "caddyfile"], env=env, stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, (tmp_path / "caddy.log").read_text()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                assert time.monotonic() < deadline, "caddy did not listen within 20 s"
                time.sleep(0.05)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def edge(caddy: str, fake_servers: Any, tmp_path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    fakes = {name: fake_servers(name) for name in UPSTREAMS.values()}
    with compose_edge(caddy, tmp_path, {name: fake.port for name, fake in fakes.items()}) as base:
        yield base, fakes


def fetch(url: str, method: str = "GET") -> tuple[int, dict[str, Any], dict[str, str]]:
    request = urllib.request.Request(url, method=method, data=b"{}" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), dict(err.headers)


def test_every_route_reaches_its_service(
    edge: tuple[str, dict[str, Any]], edge_routes: dict[str, str]
) -> None:
    base, _ = edge
    wrong = {}
    for path, service in edge_routes.items():
        status, body, _ = fetch(base + path)
        if status != 200 or body.get("upstream") != service:
            wrong[path] = (status, body.get("upstream"), service)
    assert wrong == {}, "path: (status, answered by, expected)"


def test_requests_arrive_unchanged_with_forwarding_headers(edge: tuple[str, dict[str, Any]]) -> None:
    base, fakes = edge
    status, body, _ = fetch(base + "/api/agent-sessions/s1/trigger?x=1", method="POST")
    assert (status, body["path"]) == (200, "/api/agent-sessions/s1/trigger")
    method, raw_path, headers = fakes["session_gateway"].requests[-1]
    assert (method, raw_path) == ("POST", "/api/agent-sessions/s1/trigger?x=1")
    assert headers.get("X-Forwarded-Proto") == "http"
    assert headers.get("X-Forwarded-For") == "127.0.0.1"
    assert headers.get("Host", "").startswith("127.0.0.1:"), "the client's Host is passed through"


def test_unknown_paths_go_to_edge_meta(edge: tuple[str, dict[str, Any]]) -> None:
    """edge-meta answers what no service owns with the 404 error envelope (as under `make run`)."""
    base, fakes = edge
    for path in ("/nope", "/api/unknown", "/userz", "/"):
        status, body, _ = fetch(base + path)
        assert (status, body) == (200, {"upstream": "edge_meta", "path": path}), path
    assert all(not fake.requests for name, fake in fakes.items() if name != "edge_meta")


def _samples(pattern: str) -> list[str]:
    """Concrete paths a `make run` route pattern matches: inner `*` is one segment, a trailing `*`
    is a prefix."""
    inner = pattern.rstrip("*").replace("*", "x1")
    if not pattern.endswith("*"):
        return [inner]
    return [inner, inner.rstrip("/") + "/y2"] if not inner.endswith("/") else [inner + "y2"]


def test_routes_match_make_run(edge: tuple[str, dict[str, Any]]) -> None:
    """The compose edge routes every path of `make run`'s table (parley_devstack) to the same owner."""
    base, _ = edge
    wrong = {}
    for owner, patterns in make_run_edge.EDGE_ROUTES:
        for pattern in patterns:
            for path in _samples(pattern):
                _, body, _ = fetch(base + path)
                if body.get("upstream") != owner:
                    wrong[path] = (body.get("upstream"), owner)
    assert wrong == {}, "path: (compose edge, make run)"


def test_metrics_are_not_public(edge: tuple[str, dict[str, Any]]) -> None:
    """/metrics is for Prometheus inside the network: through the edge it reaches edge-meta under a
    path it does not serve (its 404 envelope), never a service's real metrics."""
    base, fakes = edge
    for path in ("/metrics", "/metrics/x"):
        _, body, _ = fetch(base + path)
        assert body["upstream"] == "edge_meta" and body["path"] != path, path
    assert all(path != "/metrics" for fake in fakes.values() for _, path, _ in fake.requests)


def test_edge_errors_are_envelopes_with_the_public_docs_url(caddy: str, tmp_path: Path) -> None:
    """A service that is down: the compose edge answers the `Error` envelope, doc_url from
    PARLEY_DOCS_URL; the `handle_errors` bodies are exactly make run's (parley_devstack)."""
    with compose_edge(caddy, tmp_path, {name: free_port() for name in UPSTREAMS.values()}) as base:
        status, body, headers = fetch(base + "/agents/a1")
    assert (status, headers["Content-Type"]) == (503, "application/json")
    assert body == {
        "code": "service.unavailable",
        "message": "The service is not ready.",
        "doc_url": f"{DOCS_URL}#service-unavailable",
    }
    text = (REPO / "deploy/caddy/Caddyfile").read_text()
    block = r"^\thandle_errors ?(.*?) \{\n.*?\n\t\trespond `(.*?)` (\S+)$"
    blocks = re.findall(block, text, flags=re.M | re.S)
    placeholder = "{$PARLEY_DOCS_URL:http://localhost:8080/errors}"
    assert blocks == make_run_edge.edge_error_responses(placeholder)


def test_gateway_proxy_options_match_make_run() -> None:
    """The session gateway's reverse_proxy sets the same WebSocket copy buffer as `make run`'s edge
    (parley_devstack.edge.EDGE_STREAM_BUFFER) and flushes every write in both."""
    text = (REPO / "deploy/caddy/Caddyfile").read_text()
    block = re.search(r"^\treverse_proxy session-gateway:8000 \{\n(.*?)\n\t\}$", text, flags=re.M | re.S)
    assert block is not None
    options = dict(line.split(None, 1) for line in block.group(1).split("\n"))
    make_run = make_run_edge.caddyfile(9999, {"session_gateway": "127.0.0.1:1"})
    assert options["stream_buffer_size"] == make_run_edge.EDGE_STREAM_BUFFER
    assert f"\t\tstream_buffer_size {make_run_edge.EDGE_STREAM_BUFFER}\n" in make_run
    assert options["flush_interval"] == "-1" and "\t\tflush_interval -1\n" in make_run


def test_big_headers_pass_the_edge_to_the_services_limit(edge: tuple[str, dict[str, Any]]) -> None:
    """60 KB of headers (over Caddy's default limit) are not refused by Caddy's parser in plain
    text: they reach the service, whose own limit answers with the 431 envelope
    (parley_common.http.HeaderLimitMiddleware)."""
    base, fakes = edge
    request = urllib.request.Request(base + "/agents/a1", headers={"X-Big": "a" * 60_000})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    assert fakes["catalog"].requests[-1][2]["X-Big"] == "a" * 60_000


def test_access_and_error_logs_hold_no_credentials(caddy: str, tmp_path: Path) -> None:
    """A request with credentials in its query string, cookie and authorization header, to a
    service that is down: neither the access log nor the error log of the edge holds them."""
    text = (REPO / "deploy/caddy/Caddyfile").read_text()
    assert "\n".join(make_run_edge.access_log()) in text  # the same filter as make run's edge
    key, session, secret = "sk_live_" + "Q" * 40, "ps_" + "S" * 40, "hunter2-" + "x" * 30
    with compose_edge(caddy, tmp_path, {name: free_port() for name in UPSTREAMS.values()}) as base:
        request = urllib.request.Request(
            f"{base}/realtime?token={key}&apikey={secret}&resume=c1",
            headers={"Cookie": f"parley_session={session}", "Authorization": f"Bearer {key}"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 503
        log = tmp_path / "caddy.log"
        deadline = time.monotonic() + 10
        while "handled request" not in log.read_text():
            assert time.monotonic() < deadline, "no access log line"
            time.sleep(0.05)
    logged = log.read_text()
    assert "resume=c1" in logged and "token=%5Bredacted%5D" in logged  # the request is logged
    for credential in (key, session, secret):
        assert credential not in logged

"""The webhook address guard connects to the address it checked (no DNS-rebinding window) and TLS
still verifies the URL's hostname."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from parley_common.netguard import BlockedDestination, guarded_client, vet

PUBLIC = "93.184.216.34"  # a public address; nothing answers it from this sandbox


class Hits(BaseHTTPRequestHandler):
    count = 0

    def do_GET(self) -> None:
        Hits.count += 1
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def local_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hits)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Hits.count = 0
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


@pytest.fixture
def rebinding(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """`rebind.test` answers a public address to the first lookup and 127.0.0.1 to the next ones,
    like an attacker's DNS server with a zero TTL. Returns the answers given, in order."""
    real = socket.getaddrinfo
    answers: list[str] = []

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in ("rebind.test", b"rebind.test"):
            address = PUBLIC if not answers else "127.0.0.1"
            answers.append(address)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port or 0)))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


async def test_the_connection_goes_to_the_address_that_was_checked(
    rebinding: list[str], local_server: int
) -> None:
    async with guarded_client(timeout=1.0) as client:
        with pytest.raises(httpx.TransportError):  # the public address does not answer here
            await client.get(f"http://rebind.test:{local_server}/")
    assert rebinding == [PUBLIC]  # resolved once, the vetted answer used
    assert Hits.count == 0  # the second answer (127.0.0.1) was never connected to


async def test_an_unguarded_client_would_have_been_rebound(rebinding: list[str], local_server: int) -> None:
    """What the guard prevents: check with one lookup, let the client resolve again."""
    assert (await vet("rebind.test", local_server)).address == PUBLIC
    async with httpx.AsyncClient(timeout=1.0) as client:
        response = await client.get(f"http://rebind.test:{local_server}/")
    assert response.text == "ok" and Hits.count == 1 and rebinding == [PUBLIC, "127.0.0.1"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/",
        "http://localhost:9/",
        "http://10.1.2.3/",
        "http://[::1]:9/",
        "http://0.0.0.0:9/",
    ],
)
async def test_private_destinations_are_refused_before_connecting(url: str, local_server: int) -> None:
    async with guarded_client(timeout=1.0) as client:
        with pytest.raises(BlockedDestination):
            await client.get(url)
        with pytest.raises(BlockedDestination, match="loopback"):
            await client.get(f"http://127.0.0.1:{local_server}/")
    assert Hits.count == 0


async def test_the_guard_can_be_switched_off_at_run_time(local_server: int) -> None:
    allow = [False]
    async with guarded_client(lambda: not allow[0], timeout=1.0) as client:
        with pytest.raises(BlockedDestination):
            await client.get(f"http://127.0.0.1:{local_server}/")
        allow[0] = True
        assert (await client.get(f"http://127.0.0.1:{local_server}/")).text == "ok"


async def test_tls_still_verifies_the_hostname(monkeypatch: pytest.MonkeyPatch) -> None:
    """The socket goes to the vetted IP, but TLS is started for the URL's hostname: SNI and the
    certificate check name `rebind.test`, not the address."""
    seen: list[tuple[Any, bool, ssl.VerifyMode]] = []
    original = ssl.SSLContext.wrap_bio

    def wrap_bio(self: ssl.SSLContext, *args: Any, server_hostname: Any = None, **kwargs: Any) -> Any:
        seen.append((server_hostname, self.check_hostname, self.verify_mode))
        return original(self, *args, server_hostname=server_hostname, **kwargs)  # type: ignore[misc]

    monkeypatch.setattr(ssl.SSLContext, "wrap_bio", wrap_bio)
    with socket.socket() as listener:  # a TCP server that accepts and stays silent
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        real = socket.getaddrinfo

        def to_local(host: Any, p: Any, *args: Any, **kwargs: Any) -> Any:
            if host in ("tls.test", b"tls.test"):
                return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC, int(p or 0)))]
            return real(host, p, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", to_local)
        backend_connects: list[str] = []
        async with guarded_client(timeout=0.5) as client:
            pool: Any = client._transport._pool  # type: ignore[attr-defined]
            guarded = pool._network_backend
            inner = guarded.inner

            class Redirect:
                """Stands in for the network: the vetted public address is reached at the local
                listener, so the TLS handshake can start."""

                async def connect_tcp(self, host: str, p: int, **kwargs: Any) -> Any:
                    backend_connects.append(host)
                    return await inner.connect_tcp("127.0.0.1", port, **kwargs)

            guarded.inner = Redirect()
            with pytest.raises(httpx.TransportError):
                await client.get("https://tls.test/")
    assert backend_connects == [PUBLIC]  # the socket went to the vetted address
    # ... and TLS named the host of the URL, with the certificate checked against it.
    assert seen == [(b"tls.test", True, ssl.CERT_REQUIRED)]

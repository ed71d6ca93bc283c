"""The address guard of outgoing webhook calls (catalog tools, the runtime's FUNCTION.WEBHOOK): no
request into the platform's own networks.

The guard sits where the connection is made, in the HTTP client's network backend: the host of
each new connection is resolved once, every address it resolves to must be public, and the socket
is opened to that vetted address. No second lookup happens between the check and the connection,
so a DNS answer that changes in between (DNS rebinding) cannot slip a private address through.
The URL keeps its hostname, so the `Host` header, TLS SNI and certificate verification, and the
client's connection pool (keyed by hostname) are exactly those of an unguarded request.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class BlockedDestination(Exception):
    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"{host}: {reason}")
        self.host, self.reason = host, reason


@dataclass(frozen=True)
class Destination:
    host: str  # as written in the URL
    address: str  # the vetted IP to connect to


def why_blocked(address: IPAddress) -> str | None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return why_blocked(address.ipv4_mapped)
    checks = (
        (address.is_loopback, "loopback address"),
        (address.is_link_local, "link-local address"),
        (address.is_private, "private address"),
        (address.is_multicast, "multicast address"),
        (address.is_reserved, "reserved address"),
        (address.is_unspecified, "unspecified address"),
        (not address.is_global, "not a public address"),
    )
    return next((reason for hit, reason in checks if hit), None)


async def resolve(host: str, port: int) -> list[IPAddress]:
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    else:
        return [literal]
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise BlockedDestination(host, f"cannot resolve: {exc}") from exc
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


async def vet(host: str, port: int) -> Destination:
    """The address to connect to, or `BlockedDestination` if any address of `host` is not public."""
    addresses = await resolve(host, port)
    if not addresses:
        raise BlockedDestination(host, "resolves to no address")
    for address in addresses:
        reason = why_blocked(address)
        if reason is not None:
            raise BlockedDestination(host, f"{address}: {reason}")
    return Destination(host=host, address=str(addresses[0]))


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with the guard in `connect_tcp`, while `enabled()` is true (a
    setting read at each connection, so `*_ALLOW_PRIVATE` can change at run time)."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend, enabled: Callable[[], bool]) -> None:
        self.inner, self.enabled = inner, enabled

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if self.enabled():
            try:
                async with asyncio.timeout(timeout):
                    host = (await vet(host, port)).address
            except TimeoutError as exc:
                raise httpcore.ConnectTimeout(f"resolving {host} took over {timeout} s") from exc
        return await self.inner.connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if self.enabled():
            raise BlockedDestination(path, "unix sockets are local")
        return await self.inner.connect_unix_socket(path, timeout=timeout, socket_options=socket_options)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def guarded_client(enabled: Callable[[], bool] = lambda: True, **kwargs: Any) -> httpx.AsyncClient:
    """An `httpx.AsyncClient` for calls to user-given URLs: the guard on every connection (see
    the module doc), no redirects (one could lead past it), no proxy settings from the environment.
    A request refused by the guard raises `BlockedDestination`."""
    transport = httpx.AsyncHTTPTransport(trust_env=False)
    # httpx has no public way to give its connection pool a network backend; the pool is httpcore's
    # AsyncConnectionPool, which opens every connection through this attribute.
    # tests: libs/common/tests/test_netguard.py would see a request reach 127.0.0.1 if this broke.
    pool: Any = transport._pool
    pool._network_backend = GuardedNetworkBackend(pool._network_backend, enabled)
    return httpx.AsyncClient(transport=transport, follow_redirects=False, trust_env=False, **kwargs)

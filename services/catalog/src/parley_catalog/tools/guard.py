"""The address guard of webhook tools: no requests into the platform's own networks.

The host is resolved once, every address it resolves to must be public, and the request then goes
to that address (with the original name in `Host` and in TLS SNI), so a DNS answer that changes
between the check and the connection (DNS rebinding) cannot slip a private address through.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

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

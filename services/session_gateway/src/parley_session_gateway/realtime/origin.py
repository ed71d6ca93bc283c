"""Cross-site WebSocket hijacking guard: a socket the session cookie authenticates must be opened
by a page of one of the platform's own origins.

A browser attaches the cookie to a WebSocket upgrade opened by other pages too (`SameSite=Lax`
keeps it from other sites, not from other origins of the same site: another subdomain or port),
and it always sends that page's `Origin`. A `?token=` credential is not ambient (the page must
know it), so only the cookie is checked. An upgrade without `Origin` comes from a non-browser
client, which could send any value: it is let through.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.websockets import WebSocket

from parley_common.authenticator import MAX_CREDENTIAL
from parley_common.errors import Codes
from parley_session_gateway.access import Refused
from parley_session_gateway.settings import GatewaySettings

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def origin_of(url: str) -> str | None:
    """`scheme://host[:port]` as a browser writes `Origin` (lowercase, default port dropped)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "")
    if not scheme or not host:
        return None
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{scheme}://{host}" if port in (None, _DEFAULT_PORTS.get(scheme)) else f"{scheme}://{host}:{port}"


def allowed_origins(settings: GatewaySettings) -> frozenset[str]:
    configured = settings.gateway_allowed_origins.split(",") if settings.gateway_allowed_origins else []
    raw = [o for o in configured if o.strip()] or [settings.public_url]
    return frozenset(o for o in map(origin_of, raw) if o)


def socket_credential(ws: WebSocket, settings: GatewaySettings) -> str | None:
    """The socket's credential: `?token=` (or `Authorization: Bearer`, for clients that can set
    headers: the media workers), else the session cookie, whose page's origin must be allowed
    (`realtime.origin_not_allowed` otherwise). Over-long ones are refused as HTTP's are."""
    token = ws.query_params.get("token")
    scheme, _, bearer = ws.headers.get("authorization", "").partition(" ")
    if not token and scheme.lower() == "bearer":
        token = bearer.strip()
    if token:
        if len(token) > MAX_CREDENTIAL:
            raise Refused(Codes.UNAUTHENTICATED)
        return token
    cookie = ws.cookies.get(settings.gateway_cookie_name)
    origin = ws.headers.get("origin")
    if cookie and origin is not None and origin_of(origin) not in allowed_origins(settings):
        raise Refused(Codes.REALTIME_ORIGIN_NOT_ALLOWED)
    if cookie and len(cookie) > MAX_CREDENTIAL:
        raise Refused(Codes.UNAUTHENTICATED)
    return cookie

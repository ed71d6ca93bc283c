"""The origins allowed to open cookie-authenticated sockets (`PARLEY_GATEWAY_ALLOWED_ORIGINS`)."""

from __future__ import annotations

import pytest
from starlette.websockets import WebSocket

from parley_session_gateway.access import Refused
from parley_session_gateway.realtime.origin import allowed_origins, origin_of, socket_credential
from parley_session_gateway.settings import GatewaySettings


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("https://Parley.Example.com/some/path?q=1", "https://parley.example.com"),
        ("https://parley.example.com:443", "https://parley.example.com"),
        ("http://parley.example.com:80/", "http://parley.example.com"),
        ("https://parley.example.com:8443", "https://parley.example.com:8443"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("null", None),
        ("", None),
        ("https://bad:port", None),
    ],
)
def test_origin_of(url: str, origin: str | None) -> None:
    assert origin_of(url) == origin


def test_default_is_the_public_url() -> None:
    settings = GatewaySettings(public_url="https://parley.example.com/")
    assert allowed_origins(settings) == {"https://parley.example.com"}


def test_a_list_replaces_the_default() -> None:
    settings = GatewaySettings(
        public_url="https://parley.example.com",
        gateway_allowed_origins=" https://app.example.com, https://studio.example.com:8443 ,",
    )
    assert allowed_origins(settings) == {"https://app.example.com", "https://studio.example.com:8443"}


def _socket(query: str = "", **headers: str) -> WebSocket:
    scope = {
        "type": "websocket",
        "path": "/realtime",
        "query_string": query.encode(),
        "headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
    }
    return WebSocket(scope, receive=None, send=None)  # type: ignore[arg-type]


def test_a_socket_s_credential() -> None:
    """`?token=`, or `Authorization: Bearer` (what clients that can set headers use: the media
    workers), else the cookie from an allowed origin. A token is never subject to the origin."""
    s = GatewaySettings(public_url="https://parley.example.com")
    evil = "https://evil.example.com"
    assert socket_credential(_socket("token=q"), s) == "q"
    assert socket_credential(_socket(authorization="Bearer h", origin=evil), s) == "h"
    assert socket_credential(_socket("token=q", authorization="Bearer h"), s) == "q"
    assert socket_credential(_socket(authorization="Basic x"), s) is None
    cookie = "kivox_session=c"
    assert socket_credential(_socket(cookie=cookie, origin="https://parley.example.com"), s) == "c"
    with pytest.raises(Refused):
        socket_credential(_socket(cookie=cookie, origin=evil), s)
    with pytest.raises(Refused):
        socket_credential(_socket(authorization="Bearer " + "x" * 5000), s)

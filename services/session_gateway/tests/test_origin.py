"""The origins allowed to open cookie-authenticated sockets (`PARLEY_GATEWAY_ALLOWED_ORIGINS`)."""

from __future__ import annotations

import pytest

from parley_session_gateway.realtime.origin import allowed_origins, origin_of
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

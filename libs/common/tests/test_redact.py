"""The one redaction helper: every credential shape Parley handles, and nothing else, is replaced."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley_common.redact import _PATTERNS, REDACTED, redact_event, redact_text, redact_url, redact_value

KEY = "sk_live_Q2xvdWRzIGFyZSBub3Qgc2VjcmV0cw-_x"
SESSION = "ps_6fJ3kq0Vw8mZbT1xRrY2pA9sLdN4cHeU7iGoK5zQ"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4IiwiZXhwIjoxfQ.c2lnbmF0dXJlLXBhcnQtaGVyZQ"
RESET = "N3rT8vJqL2pXw9ZcYb4HfKd6Ms1GaUe0Ri5Ot7Sy3Vw"


@pytest.mark.parametrize(
    "text",
    [
        f'127.0.0.1:5000 - "WebSocket /realtime?token={KEY}" [accepted]',
        f"GET /chat/ws?session_id=1&token={JWT}&last_event=3",
        f"https://parley.example/reset-password?token={RESET}",
        f"http://crm.example/hook?apikey={RESET}&x=1",
        f"< Cookie: parley_session={SESSION}; theme=dark",
        f"< authorization: Bearer {RESET}",
        f'{{"type": "token-refresh", "token": "{RESET}"}}',
        f"{{'password': '{RESET}', 'email': 'a@b.c'}}",
        f"login failed password={RESET} user=1",
        f"key {KEY} in prose, session {SESSION}, client token {JWT}",
    ],
)
def test_credentials_are_replaced(text: str) -> None:
    out = redact_text(text)
    for secret in (KEY, SESSION, JWT, RESET):
        assert secret not in out, out
    assert REDACTED in out


@pytest.mark.parametrize(
    "text",
    [
        "http.request method=GET path=/agents/1 status=200",
        "catalog.tool_retry tool=weather attempt=1 code=tool.webhook_timeout",
        '{"code": "auth.unauthenticated", "message": "Authentication is required."}',
        "GET /realtime?resume=abc&last_event=4",
        "the cookie jar",
    ],
)
def test_everything_else_is_kept(text: str) -> None:
    assert redact_text(text) == text


def test_urls() -> None:
    assert (
        redact_url(f"wss://h/realtime?token={KEY}&resume=c1")
        == f"wss://h/realtime?token={REDACTED}&resume=c1"
    )
    assert redact_url("https://user:pw@h/x?key=abc") == f"https://{REDACTED}@h/x?key={REDACTED}"
    assert redact_url("/plain/path") == "/plain/path"


def test_values_walk_mappings_and_sequences() -> None:
    value = {"headers": {"Authorization": "anything", "Accept": "json"}, "items": [f"k={KEY}"], "n": 3}
    assert redact_value(value) == {
        "headers": {"Authorization": REDACTED, "Accept": "json"},
        "items": [f"k={REDACTED}"],
        "n": 3,
    }


PIECES = [
    "sk_live_",
    "ps_",
    "eyJ",
    "=",
    ":",
    "?",
    "&",
    ";",
    '"',
    "'",
    " ",
    "\n",
    "Bearer ",
    "basic ",
    "token",
    "Cookie",
    "password",
    "set-cookie",
    "x-api-key",
    "a",
    "Z",
    "0",
    "_",
    "-",
    ".",
    KEY,
]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=12).map("".join))
def test_the_quick_check_never_skips_a_credential(text: str) -> None:
    """Text without anything every pattern needs skips the patterns: the answer is the same as
    running them all."""
    slow = text
    for pattern, replacement in _PATTERNS:
        slow = pattern.sub(replacement, slow)
    assert redact_text(text) == slow


def test_a_log_lines_own_fields_are_left_and_the_rest_redacted() -> None:
    line = {"event": "login password=x", "timestamp": "2026-01-01T00:00:00Z", "level": "info", "token": "x"}
    assert redact_event(None, "info", line) == {
        "event": f"login password={REDACTED}",
        "timestamp": "2026-01-01T00:00:00Z",
        "level": "info",
        "token": REDACTED,
    }

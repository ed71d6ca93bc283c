"""Keep credentials out of logs, span attributes and error texts: one redaction helper for all.

Credentials reach text in a few shapes, each handled here:
- a URL's query string (`/realtime?token=sk_live_…`, a reset link's `?token=…`, a webhook URL's
  `?apikey=…`): the values of sensitive parameters are replaced;
- a credential Parley issues, wherever it appears: API keys (`sk_live_…`), cookie session tokens
  (`ps_…`) and client tokens (JWTs, `eyJ….eyJ….…`) have recognisable shapes;
- `Authorization: Bearer …`, `Cookie: …` and `Set-Cookie: …` as header lines or values;
- JSON or mapping entries whose key names a secret (`"token": "…"`, `password=…`).
Agent secrets and passwords have no recognisable shape: they are kept out by construction (never
logged, never put into an error text other than through `redact_url`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, MutableMapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "[redacted]"

# Names of fields, JSON keys, mapping keys and headers whose value is a credential.
SECRET_FIELDS = frozenset(
    {
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "api_key",
        "apikey",
        "api-key",
        "secret",
        "client_secret",
        "password",
        "new_password",
        "current_password",
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "x-turnstile-token",
    }
)
# Query parameters also carry credentials under shorter, more generic names.
SECRET_QUERY = SECRET_FIELDS | {"key", "code", "sig", "signature", "auth", "pass", "pwd"}


def _alternation(names: frozenset[str]) -> str:
    return "|".join(sorted((re.escape(n) for n in names), key=len, reverse=True))


_FIELDS, _QUERY = _alternation(SECRET_FIELDS), _alternation(SECRET_QUERY)

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # Credentials Parley issues, by shape.
    (re.compile(r"\bsk_live_[A-Za-z0-9_\-]{4,}"), REDACTED),
    (re.compile(r"\bps_[A-Za-z0-9_\-]{20,}"), REDACTED),
    (re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*"), REDACTED),
    # `?token=…&` in URLs, also percent-encoded inside another string.
    (re.compile(rf"(?i)([?&;](?:{_QUERY})=)[^&\s\"'#<>]*"), rf"\1{REDACTED}"),
    # Header lines and values: `Authorization: Bearer …`, `cookie: a=b; c=d`.
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]+"), rf"\1 {REDACTED}"),
    (
        re.compile(
            r"(?i)\b((?:proxy-)?authorization|set-cookie|cookie|x-api-key|x-turnstile-token)(\s*[:=]\s*)[^\r\n,}\]]+"
        ),
        rf"\1\2{REDACTED}",
    ),
    # JSON / repr entries: `"token": "…"`, `'password': '…'`.
    (
        re.compile(rf"""(?i)(["'](?:{_FIELDS})["']\s*:\s*)(["'])(?:(?!\2)[^\\]|\\.)*\2"""),
        rf"\1\2{REDACTED}\2",
    ),
    # key=value pairs in prose (`password=hunter2`).
    (re.compile(rf"(?i)(?<![\w\-?&;])((?:{_FIELDS})=)[^\s&,;\"')\]}}]+"), rf"\1{REDACTED}"),
]


# What every pattern above needs somewhere in the text (a superset: case folded, anywhere): most
# strings of a log line (ids, names, codes) have none of it and skip the eight passes.
_MAYBE = re.compile(r"(?i)[=:]|sk_live_|ps_|eyj|bearer|basic")


def redact_text(text: str) -> str:
    """`text` with every credential shape above replaced by `[redacted]`."""
    if not text or _MAYBE.search(text) is None:
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_url(url: str) -> str:
    """A URL with the values of its sensitive query parameters (and any user:password) replaced."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, REDACTED if k.lower() in SECRET_QUERY else v) for k, v in pairs], safe="[]")
    return redact_text(urlunsplit(parts._replace(netloc=netloc, query=query)))


def redact_value(value: Any, key: str | None = None) -> Any:
    """Strings redacted, mappings and sequences walked; a value under a sensitive key is replaced."""
    if key is not None and key.lower() in SECRET_FIELDS and value not in (None, "", [], {}):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: redact_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_value(v) for v in value)
    return value


def redact_event(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> Mapping[str, Any]:
    """structlog processor: every field of a log line, the message and any traceback included
    (not the level, logger name and time, which the logging setup itself writes)."""
    return {
        k: v if k in _OWN_FIELDS else redact_value(v, k if k not in _LOG_FIELDS else None)
        for k, v in event_dict.items()
    }


# Fields structlog itself adds: their names are never credentials (`event` is the message).
_LOG_FIELDS = frozenset(
    {"event", "level", "logger", "timestamp", "exception", "trace_id", "span_id", "service"}
)
# ... and of those, the ones structlog's processors always overwrite (`add_log_level`,
# `add_logger_name`, `TimeStamper`): their values are never a caller's.
_OWN_FIELDS = frozenset({"level", "logger", "timestamp"})

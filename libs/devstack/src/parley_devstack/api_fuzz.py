"""What the services' schemathesis tests share: a service's API fuzzed in-process over ASGI.

Each service's `tests/test_schemathesis.py` keeps its own part (which credentials to send, which
real identifiers to plug into a case); this module holds the rest: the checks, the schema loader,
the module-scoped setting the apps run in, and the call that says what was really sent.
Needs schemathesis (the workspace's dev dependency group), so only tests import it.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import schemathesis
import structlog
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from structlog.processors import JSONRenderer, add_log_level, format_exc_info

# No 5xx; status codes, content types and response bodies as the app's OpenAPI documents them.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

_SEQ = itertools.count()


def load_schema(app: Any, *, seed: int, max_examples: int) -> schemathesis.BaseSchema:
    """The OpenAPI of `app` (one that is never started: no I/O, so collection can read it before
    `infra` exists), with a deterministic run of at most `max_examples` cases per operation.

    (`schemathesis.pytest.from_fixture` would defer loading to a fixture, but schemathesis 4.32
    breaks on pytest 9.2 there: it sets `request.node._nodeid`, which pytest 9.2 no longer has.)
    """
    config = schemathesis.Config.from_dict(
        {
            "seed": seed,
            "generation": {"max-examples": max_examples, "deterministic": True, "database": "none"},
        }
    )
    return schemathesis.openapi.from_dict(app.openapi(), config=config)


@contextmanager
def fuzzing() -> Iterator[None]:
    """For the length of a module's run: plain JSON logs, and at the end every lifespan that
    schemathesis started (broker, pools, background tasks) stopped while the servers are up.

    The apps log every unhandled exception; structlog's console renderer draws each as a rich
    traceback with locals, about a second each, which makes shrinking a failure take minutes.
    """
    saved_processors = structlog.get_config()["processors"]
    structlog.configure(processors=[add_log_level, format_exc_info, JSONRenderer()])
    try:
        yield
    finally:
        asgi.shutdown_lifespans()
        structlog.configure(processors=saved_processors)


def unique(prefix: str) -> str:
    """A name no other case of the run uses (slugs, e-mail addresses)."""
    return f"{prefix}-{next(_SEQ)}-{uuid.uuid4().hex[:8]}"


def call_and_validate(
    case: schemathesis.Case[Any], app: Any, headers: dict[str, str], *, use_key: bool
) -> None:
    """Send `case` to `app` with `headers` (an API key's or a session cookie's) and run `CHECKS`.

    An exception the app did not handle comes straight out of the in-process transport (Starlette
    re-raises it after answering 500), and schemathesis then describes the case as generated,
    before the real identifiers were plugged in: the note says what was actually sent.
    """
    try:
        case.call_and_validate(app=app, headers=headers, checks=CHECKS)
    except Exception as exc:
        credential = "API key" if use_key else "session cookie"
        exc.add_note(f"Sent: {case.method} {case.formatted_path} with a {credential}, body {case.body!r}")
        raise

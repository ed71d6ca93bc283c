"""`SessionBridge.attach` subscribes outside the caller's trace context.

nats-py starts a task per subscription, and a task keeps a copy of the context it was created in
for as long as it runs (the session's lifetime): subscribed inside the handshake's span, both
readers would keep that span in memory while the socket stays open (docs/performance.md, "Memory
per idle session in the gateway"). The caller's context is back once `attach` returns.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, cast

from nats.js.errors import NotFoundError
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from parley_session_gateway.bridge import SessionBridge


class _Sub:
    async def unsubscribe(self) -> None:
        return None


class _Nats:
    """Records the span current when each subscription is made (what its task would keep): by
    `subscribe`, or by the steps of it `parley_common.held_subscription` takes."""

    is_closed = is_draining = is_reconnecting = False
    _error_cb = None

    def __init__(self) -> None:
        self.spans: list[trace.Span] = []
        self._sid = 0
        self._subs: dict[int, Any] = {}

    async def subscribe(self, subject: str, **_: Any) -> _Sub:
        self.spans.append(trace.get_current_span())
        return _Sub()

    async def _send_subscribe(self, sub: Any) -> None:
        self.spans.append(trace.get_current_span())

    def _remove_sub(self, sid: int) -> None:
        self._subs.pop(sid, None)

    async def _send_unsubscribe(self, sid: int, limit: int = 0) -> None:
        return None

    def jetstream(self) -> _Nats:
        return self

    async def get_last_msg(self, stream: str, subject: str) -> Any:
        self.spans.append(trace.get_current_span())  # the resume's catch-up, in its own task
        raise NotFoundError


class _Events:
    consumer_gate = asyncio.Semaphore(1)

    def on_reconnect(self, _: Any) -> Any:
        return lambda: None


async def _ignore(_: Any) -> None:
    return None


async def test_the_readers_are_subscribed_without_the_callers_span() -> None:
    nc = _Nats()
    bridge = SessionBridge(cast(Any, nc), cast(Any, _Events()), uuid.uuid4())
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("realtime.handshake") as handshake:
        await bridge.attach(_ignore, _ignore)  # a resume: the output is caught up from the stream
        assert trace.get_current_span() is handshake
    for _ in range(100):
        if len(nc.spans) >= 3:
            break
        await asyncio.sleep(0.01)
    # the control subject, the output's subject, then the catch-up's looks at the stream
    assert len(nc.spans) >= 3
    assert all(not span.get_span_context().is_valid for span in nc.spans)
    await bridge.detach()

"""The durable JetStream consumer that persists conversation events from the runtimes.

One durable pull consumer (`catalog-conversations` on stream `CONVERSATIONS`, subjects
`conv.events.>`) shared by every catalog replica. The messages of one fetch are applied in one
transaction (`apply_events`) and acked after its commit; should that transaction fail, each
message of the batch is handled on its own, as follows. A message holds one event, or the events
of one commit of a runtime (`ConversationEventBatch`); each event is applied once, by its
`event_id`, whichever message brought it. Per message:

- not an event (bad JSON, unknown type, out-of-range values): logged and terminated, never
  redelivered, and it holds up nothing else (an event of a batch that PostgreSQL could not store
  is logged and left out, the others are stored);
- applied (or found already applied: replays change nothing): acked;
- the database is unreachable: negatively acked with a delay, redelivered until it is back;
- any other failure: retried a few times, then logged and terminated.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import BadRequestError, NotFoundError
from opentelemetry import trace
from opentelemetry.propagate import extract
from opentelemetry.trace import Link
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.exc import DataError, IntegrityError, InterfaceError, OperationalError

from parley_catalog.conversations.service import AnyEvent, apply_events, prune_processed
from parley_catalog.db import Database
from parley_catalog.settings import CatalogSettings
from parley_common import subjects
from parley_common.conversation_contract import ConversationEventBatch, ConversationEventBody
from parley_common.jetstream import DurableConsumer
from parley_common.session_contract import STREAMS
from parley_common.settings import common_settings
from parley_common.telemetry import current_span

log = structlog.get_logger(__name__)
tracer = trace.get_tracer(__name__)

BODIES: TypeAdapter[AnyEvent | ConversationEventBatch] = TypeAdapter(ConversationEventBody)
SUBJECTS = f"{subjects.CONVERSATION_EVENTS}.>"
# Failures that are not a database outage get this many deliveries before the message is dropped.
MAX_UNEXPECTED_DELIVERIES = 5
_TRANSIENT = (OperationalError, InterfaceError, ConnectionError, OSError, TimeoutError)
_PERMANENT = (DataError, IntegrityError)
_MAX_BIGINT = 2**63 - 1
_TEXTS = ("content", "summary", "channel")
PRUNE_EVERY_S = 3600.0


def _span_context(msg: Msg) -> trace.SpanContext | None:
    ctx = trace.get_current_span(extract(msg.headers or {})).get_span_context()
    return ctx if ctx.is_valid else None


class MalformedEvent(ValueError):
    pass


def parse(data: bytes) -> tuple[list[AnyEvent], list[str]]:
    """The events in a message body that PostgreSQL can store as they are, and what is wrong with
    each of the others; `MalformedEvent` if the body is neither an event nor a batch of them."""
    try:
        body = BODIES.validate_json(data)
    except ValidationError as exc:
        detail = exc.errors(include_url=False, include_input=False)[0]
        raise MalformedEvent(f"{'.'.join(map(str, detail['loc']))}: {detail['msg']}") from exc
    events: list[AnyEvent] = []
    problems: list[str] = []
    for event in body.events if isinstance(body, ConversationEventBatch) else [body]:
        problem = _unstorable(event)
        if problem is not None:
            problems.append(problem)
        elif event.at.tzinfo is None:  # a naive time from a runtime is taken as UTC, not server-local
            events.append(event.model_copy(update={"at": event.at.replace(tzinfo=UTC)}))
        else:
            events.append(event)
    return events, problems


def _unstorable(event: AnyEvent) -> str | None:
    # The fields read from the model's `__dict__`: `getattr` with a default for a field an event
    # type does not have goes through pydantic's `__getattr__` and an AttributeError, ~4 µs each.
    fields = event.__dict__
    if any(isinstance(t := fields.get(name), str) and "\x00" in t for name in _TEXTS):
        return "NUL characters cannot be stored"
    if fields.get("seq", 0) > _MAX_BIGINT:
        return "seq is out of range"
    return None


async def ensure_stream(js: JetStreamContext, max_age_s: float) -> float:
    """Create the CONVERSATIONS stream if it does not exist (an existing one is left as it is);
    returns its retention in seconds (0: unlimited)."""
    try:
        return float((await js.stream_info(subjects.CONVERSATIONS_STREAM)).config.max_age or 0)
    except NotFoundError:
        pass
    # The one definition of the stream (libs/common), with the catalog's own retention setting.
    config = dataclasses.replace(
        STREAMS[subjects.CONVERSATIONS_STREAM],
        max_age=max_age_s,
        num_replicas=common_settings().jetstream_replicas,
    )
    try:
        await js.add_stream(config)
    except BadRequestError:
        # Another process created it in between (with its own settings): that one stands.
        return float((await js.stream_info(subjects.CONVERSATIONS_STREAM)).config.max_age or 0)
    return max_age_s


class ConversationConsumer(DurableConsumer):
    name = "conversation-consumer"

    def __init__(self, settings: CatalogSettings, db: Database) -> None:
        super().__init__(
            subject=SUBJECTS,
            stream=subjects.CONVERSATIONS_STREAM,
            durable=settings.catalog_conversations_durable,
        )
        self.settings = settings
        self.db = db
        self.batch = settings.catalog_conversations_batch
        self.batch_wait_s = settings.catalog_conversations_batch_wait_s
        self.retention_s = 0.0
        self._pruned_at = 0.0
        # What else this process did with the messages it was given (for logs, metrics and tests).
        self.malformed = 0
        self.retried = 0
        self.dropped = 0

    async def prepare(self, js: JetStreamContext) -> None:
        self.retention_s = await ensure_stream(js, self.settings.catalog_conversations_max_age_days * 86400)

    async def prune(self) -> int:
        """Drop processed-event ids the stream can no longer replay (older than its retention plus
        a day). An unlimited stream keeps them all."""
        if self.retention_s <= 0:
            return 0
        cutoff = datetime.now(UTC) - timedelta(seconds=self.retention_s) - timedelta(days=1)
        async with self.db.sessions() as session:
            count = await prune_processed(session, cutoff)
            await session.commit()
        return count

    async def tick(self) -> None:
        """Once an hour: prune what the stream can no longer replay."""
        now = time.monotonic()
        if now - self._pruned_at < PRUNE_EVERY_S:
            return
        self._pruned_at = now
        try:
            pruned = await self.prune()
        except Exception as exc:  # next hour, then
            log.warning("catalog.processed_events_prune_failed", error=str(exc)[:300])
        else:
            if pruned:
                log.info("catalog.processed_events_pruned", count=pruned)

    async def handle_batch(self, messages: list[Msg]) -> None:
        """Apply a fetch's events in one transaction, then ack them; on any failure of that
        transaction, handle each message on its own (which isolates a bad one)."""
        if len(messages) == 1:
            await self.handle(messages[0])
            return
        parsed: list[tuple[Msg, list[AnyEvent]]] = []
        for msg in messages:
            events = await self._parse(msg)
            if events:
                parsed.append((msg, events))
        if not parsed:
            return
        links = [Link(ctx) for msg, _ in parsed if (ctx := _span_context(msg)) is not None]
        events = [event for _, of_msg in parsed for event in of_msg]
        attributes = {"parley.events": len(events)}
        with current_span(tracer, "catalog.persist_conversation_events", links=links, attributes=attributes):
            try:
                async with self.db.sessions() as session:
                    applied = iter(await apply_events(session, events))
                    await session.commit()
            except Exception as exc:
                log.info("catalog.conversation_batch_split", events=len(events), error=type(exc).__name__)
                for msg, _ in parsed:
                    await self.handle(msg)
                return
        for msg, of_msg in parsed:
            await self._ack_events(msg, [next(applied) for _ in of_msg])

    async def _parse(self, msg: Msg) -> list[AnyEvent]:
        """The message's events that can be stored; the others are logged (and counted), and a
        message with none is terminated."""
        try:
            events, problems = parse(msg.data)
        except MalformedEvent as exc:
            events, problems = [], [str(exc)]
        for problem in problems:
            log.warning("catalog.conversation_event_malformed", subject=msg.subject, detail=problem)
            self.malformed += 1
        if not events:
            await msg.term()
        return events

    async def _ack_events(self, msg: Msg, applied: list[bool]) -> None:
        """Ack a message handled for good, counting each of its events applied or found applied."""
        self.applied += sum(applied)
        self.duplicates += len(applied) - sum(applied)
        await msg.ack()

    async def handle(self, msg: Msg) -> None:
        with current_span(tracer, "catalog.persist_conversation_event", context=extract(msg.headers or {})):
            await self._handle(msg)

    async def _handle(self, msg: Msg) -> None:
        events = await self._parse(msg)
        if not events:
            return
        event_id = ",".join(str(event.event_id) for event in events)
        try:
            async with self.db.sessions() as session:
                applied = await apply_events(session, events)
                await session.commit()
        except _PERMANENT as exc:
            log.error("catalog.conversation_event_rejected", event_id=event_id, error=str(exc)[:300])
            self.dropped += 1
            await msg.term()
            return
        except _TRANSIENT as exc:
            log.warning("catalog.conversation_event_retry", event_id=event_id, error=str(exc)[:300])
            self.retried += 1
            await msg.nak(delay=self.settings.catalog_conversations_retry_delay_s)
            return
        except Exception as exc:
            await self._unexpected(msg, event_id, exc)
            return
        await self._ack_events(msg, applied)

    async def _unexpected(self, msg: Msg, event_id: Any, exc: Exception) -> None:
        deliveries = msg.metadata.num_delivered or 1
        if deliveries >= MAX_UNEXPECTED_DELIVERIES:
            log.error(
                "catalog.conversation_event_dropped",
                event_id=str(event_id),
                deliveries=deliveries,
                exc_info=exc,
            )
            self.dropped += 1
            await msg.term()
        else:
            log.warning("catalog.conversation_event_failed", event_id=str(event_id), exc_info=exc)
            self.retried += 1
            await msg.nak(delay=self.settings.catalog_conversations_retry_delay_s)

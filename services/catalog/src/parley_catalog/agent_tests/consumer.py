"""Persists test-run results from the runtimes (durable consumer on `AGENT_TEST_RESULTS`).

Events may come twice (redelivery, a resumed run republishing) and out of order; each is applied
under a lock on its run and changes nothing it should not:

- an event of an older attempt than the run's is stale and dropped; one of a newer attempt first
  drops what the older attempt had stored (the run started over with a new conversation);
- progress moves the run forward only when its `step` is beyond the stored one, and never
  touches a finished run;
- a message is stored once per (run, index);
- the verdict is stored once, with its remarks, in the same transaction.

A result for a run that is not (yet) in the database is retried for a while: the catalog queues a
run's job just before it commits the run.
"""

from __future__ import annotations

import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from parley_catalog.agent_tests.models import AgentTestMessage, AgentTestRemark, AgentTestRun
from parley_catalog.db import Database
from parley_catalog.settings import CatalogSettings
from parley_common import subjects
from parley_common.agent_test_contract import (
    AgentTestEvent,
    RunFinished,
    RunMessage,
    RunProgress,
    RunStatus,
    ensure_streams,
)
from parley_common.jetstream import DurableConsumer

log = structlog.get_logger(__name__)
EVENTS: TypeAdapter[RunProgress | RunMessage | RunFinished] = TypeAdapter(AgentTestEvent)
_TRANSIENT = (OperationalError, InterfaceError, ConnectionError, OSError, TimeoutError)
UNKNOWN_RUN_DELIVERIES = 20  # about a minute of retries for a run whose row is not committed yet
MAX_UNEXPECTED_DELIVERIES = 5


class UnknownRun(LookupError):
    pass


def _clean(text: str) -> str:
    """PostgreSQL text cannot hold NUL characters; an LLM's output may."""
    return text.replace("\x00", "")


async def apply(db: AsyncSession, event: RunProgress | RunMessage | RunFinished) -> bool:
    """Apply one event; False when it changed nothing (stale or already applied)."""
    run = await db.get(AgentTestRun, event.run_id, with_for_update=True, populate_existing=True)
    if run is None:
        raise UnknownRun(str(event.run_id))
    if event.attempt < run.attempt:
        return False
    if event.attempt > run.attempt:
        await db.execute(delete(AgentTestMessage).where(AgentTestMessage.run_id == run.id))
        await db.execute(delete(AgentTestRemark).where(AgentTestRemark.run_id == run.id))
        run.attempt, run.step, run.turns_done, run.error = event.attempt, -1, 0, None
        if RunStatus(run.status).finished:
            run.status, run.finished_at = RunStatus.RUNNING.value, None
    finished = RunStatus(run.status).finished
    if isinstance(event, RunMessage):
        inserted = await db.execute(
            insert(AgentTestMessage)
            .values(
                run_id=run.id,
                index=event.index,
                attempt=event.attempt,
                role=event.role.value,
                content=_clean(event.content),
                created_at=event.at,
            )
            .on_conflict_do_nothing()
            .returning(AgentTestMessage.index)
        )
        return inserted.first() is not None
    if finished or event.step <= run.step:
        return False
    run.step = event.step
    run.turns_done = max(run.turns_done, event.turns_done)
    run.updated_at = event.at
    if isinstance(event, RunProgress):
        run.status = event.status.value
        run.conversation_id = event.conversation_id or run.conversation_id
        run.engine = event.engine or run.engine
        run.started_at = run.started_at or event.at
        return True
    run.status = event.status.value
    run.finished_at = event.at
    run.started_at = run.started_at or event.at
    run.error = event.error.model_dump(mode="json", exclude_none=True) if event.error else None
    for position, remark in enumerate(event.remarks):
        db.add(
            AgentTestRemark(
                run_id=run.id,
                position=position,
                criterion_id=remark.criterion_id,
                criterion=_clean(remark.criterion),
                verdict=remark.verdict.value,
                severity=remark.severity.value,
                message_index=remark.message_index,
                quote=_clean(remark.quote) if remark.quote is not None else None,
                explanation=_clean(remark.explanation),
            )
        )
    return True


class ResultConsumer(DurableConsumer):
    name = "agent-test-results"

    def __init__(self, settings: CatalogSettings, db: Database) -> None:
        super().__init__(
            subject=f"{subjects.AGENT_TEST_RESULTS}.>",
            stream=subjects.AGENT_TEST_RESULTS_STREAM,
            durable=subjects.CATALOG_AGENT_TEST_RESULTS_CONSUMER,
        )
        self.settings = settings
        self.db = db

    async def prepare(self, js: JetStreamContext) -> None:
        await ensure_streams(js)

    async def handle(self, msg: Msg) -> None:
        try:
            event = EVENTS.validate_json(msg.data)
        except ValidationError as exc:
            log.warning("catalog.agent_test_event_malformed", subject=msg.subject, error=str(exc)[:300])
            await msg.term()
            return
        deliveries = msg.metadata.num_delivered or 1
        delay = self.settings.catalog_conversations_retry_delay_s
        try:
            async with self.db.sessions() as session:
                applied = await apply(session, event)
                await session.commit()
        except UnknownRun:
            if deliveries >= UNKNOWN_RUN_DELIVERIES:
                log.warning("catalog.agent_test_event_orphan", run_id=str(event.run_id))
                await msg.term()
            else:
                await msg.nak(delay=delay)
            return
        except _TRANSIENT as exc:
            log.warning("catalog.agent_test_event_retry", run_id=str(event.run_id), error=str(exc)[:300])
            await msg.nak(delay=delay)
            return
        except Exception as exc:
            if deliveries >= MAX_UNEXPECTED_DELIVERIES:
                log.error("catalog.agent_test_event_dropped", run_id=str(event.run_id), exc_info=exc)
                await msg.term()
            else:
                log.warning("catalog.agent_test_event_failed", run_id=str(event.run_id), exc_info=exc)
                await msg.nak(delay=delay)
            return
        await self.ack(msg, applied=applied)

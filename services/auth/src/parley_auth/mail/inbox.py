"""Mail other services ask for (`mail.send`, JetStream stream `MAIL`), put into the outbox.

Runtimes have no mail of their own: an EMAIL_NOTIFY node publishes a `MailRequest`, and the auth
service, which already delivers mail, queues it in its outbox table under the request's `mail_id`,
so a request published or delivered twice is sent once. Requests that can never be valid are
terminated; a database outage makes the message come back later.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from pydantic import ValidationError
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley_auth.mail.models import OutboxMail
from parley_common import subjects
from parley_common.session_contract import MailRequest, ensure_streams

log = structlog.get_logger(__name__)


async def store(sessions: async_sessionmaker[AsyncSession], request: MailRequest) -> bool:
    """Queue the mail; False when this `mail_id` was queued before."""
    statement = (
        insert(OutboxMail)
        .values(id=request.mail_id, to_addr=request.to, subject=request.subject, body=request.body)
        .on_conflict_do_nothing(index_elements=[OutboxMail.id])
    )
    async with sessions() as db, db.begin():
        result = await db.execute(statement)
    return bool(getattr(result, "rowcount", 0))


class MailInbox:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self._sub: JetStreamContext.PullSubscription | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, nc: Client) -> None:
        js = nc.jetstream()
        await ensure_streams(js, [subjects.MAIL_STREAM])
        self._sub = await js.pull_subscribe(
            subjects.MAIL_SEND,
            durable=subjects.AUTH_MAIL_CONSUMER,
            stream=subjects.MAIL_STREAM,
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=30, max_deliver=-1),
        )
        self._task = asyncio.create_task(self._run(), name="mail-inbox")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    async def _run(self) -> None:
        assert self._sub is not None
        while True:
            try:
                msgs = await self._sub.fetch(16, timeout=1.0)
            except (NatsTimeoutError, TimeoutError):
                continue
            except Exception as exc:  # NATS reconnecting
                log.warning("mail.inbox_fetch_failed", error=str(exc))
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                await self._handle(msg)

    async def _handle(self, msg: Msg) -> None:
        try:
            request = MailRequest.model_validate_json(msg.data)
        except ValidationError as exc:
            log.error("mail.inbox_bad_request", error=str(exc))
            await msg.term()
            return
        try:
            queued = await store(self.sessions, request)
        except Exception as exc:  # the database is down or restarting: try again later
            log.warning("mail.inbox_store_failed", mail_id=str(request.mail_id), error=str(exc))
            await msg.nak(delay=2)
            return
        log.info("mail.queued", mail_id=str(request.mail_id), duplicate=not queued)
        await msg.ack()

"""Mail other services ask for (`mail.send`, JetStream stream `MAIL`), put into the outbox.

Runtimes have no mail of their own: an EMAIL_NOTIFY node publishes a `MailRequest`, and the auth
service, which already delivers mail, queues it in its outbox table under the request's `mail_id`,
so a request published or delivered twice is sent once. Requests that can never be valid are
terminated; a database outage makes the message come back later.
"""

from __future__ import annotations

import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from pydantic import ValidationError
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley_auth.mail.models import OutboxMail
from parley_auth.mail.outbox import wake_after_commit
from parley_common import subjects
from parley_common.jetstream import DurableConsumer
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
        wake_after_commit(db)
    return bool(getattr(result, "rowcount", 0))


class MailInbox(DurableConsumer):
    name = "mail-inbox"
    batch = 16
    fetch_retry_s = 0.5

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        super().__init__(
            subject=subjects.MAIL_SEND,
            stream=subjects.MAIL_STREAM,
            durable=subjects.AUTH_MAIL_CONSUMER,
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=30, max_deliver=-1),
        )
        self.sessions = sessions

    async def prepare(self, js: JetStreamContext) -> None:
        await ensure_streams(js, [subjects.MAIL_STREAM])

    async def handle(self, msg: Msg) -> None:
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

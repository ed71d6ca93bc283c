"""Enqueue mail in the caller's transaction; a background task delivers it.

Delivery goes over SMTP when `PARLEY_AUTH_SMTP_HOST` is set, otherwise each message is written as
an `.eml` file to the mail sink directory (`PARLEY_AUTH_MAIL_DIR`, `.parley/mail` under make run).

The task wakes when a transaction that queued mail commits (`wake_after_commit`: the sessions'
factory carries the task's `asyncio.Event` in `Session.info`), so mail goes out at once without a
query a second. It also looks every `PARLEY_AUTH_OUTBOX_POLL_S` (10 s) for what no wake-up
announced: retries that came due, mail another replica queued before it stopped.
"""

from __future__ import annotations

import asyncio
import os
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

import aiosmtplib
import structlog
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley_auth.mail.models import OutboxMail
from parley_auth.settings import AuthSettings

log = structlog.get_logger(__name__)
MAX_ATTEMPTS = 8
BATCH = 20
WAKE = "parley_auth.outbox_wake"  # the key of the outbox task's Event in a session's `info`


def enqueue(db: AsyncSession, to: str, subject: str, body: str) -> None:
    db.add(OutboxMail(to_addr=to, subject=subject, body=body))
    wake_after_commit(db)


def wake_after_commit(db: AsyncSession) -> None:
    """Wake the outbox task once `db`'s transaction has committed (before, it would not see the
    mail). A session from a factory without the task's Event (a script's) wakes nothing."""
    wake: asyncio.Event | None = db.info.get(WAKE)
    if wake is not None:
        event.listen(db.sync_session, "after_commit", lambda _session: wake.set(), once=True)


def build_message(settings: AuthSettings, row: OutboxMail) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = settings.auth_mail_from
    msg["To"] = row.to_addr
    msg["Subject"] = row.subject
    msg["Date"] = format_datetime(row.created_at)
    msg["Message-ID"] = make_msgid(idstring=str(row.id), domain="parley.local")
    msg.set_content(row.body)
    return msg


async def deliver(settings: AuthSettings, row: OutboxMail) -> None:
    message = build_message(settings, row)
    if settings.auth_smtp_host:
        await aiosmtplib.send(
            message,
            hostname=settings.auth_smtp_host,
            port=settings.auth_smtp_port,
            username=settings.auth_smtp_username,
            password=settings.auth_smtp_password,
            start_tls=settings.auth_smtp_starttls,
            timeout=10,
        )
        return
    directory = Path(settings.auth_mail_dir)
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    stamp = row.created_at.strftime("%Y%m%dT%H%M%S")
    final = directory / f"{stamp}-{row.id}.eml"
    tmp = final.with_suffix(".tmp")
    # Write then rename, so a reader never sees half a message.
    await asyncio.to_thread(tmp.write_bytes, bytes(message))
    await asyncio.to_thread(os.replace, tmp, final)


async def drain_once(
    settings: AuthSettings, sessions: async_sessionmaker[AsyncSession], batch: int = BATCH
) -> int:
    """Deliver due messages; rows are locked with SKIP LOCKED so replicas never send one twice."""
    sent = 0
    async with sessions() as db, db.begin():
        now = datetime.now(UTC)
        rows = (
            await db.scalars(
                select(OutboxMail)
                .where(OutboxMail.sent_at.is_(None), OutboxMail.next_attempt_at <= now)
                .where(OutboxMail.attempts < MAX_ATTEMPTS)
                .order_by(OutboxMail.next_attempt_at)
                .limit(batch)
                .with_for_update(skip_locked=True)
            )
        ).all()
        for row in rows:
            try:
                await deliver(settings, row)
            except Exception as exc:
                row.attempts += 1
                row.last_error = str(exc)[:2000]
                row.next_attempt_at = now + timedelta(seconds=min(3600, 2**row.attempts))
                log.warning(
                    "mail.delivery_failed", mail_id=str(row.id), attempts=row.attempts, error=str(exc)
                )
            else:
                row.sent_at = now
                row.attempts += 1
                sent += 1
                log.info("mail.sent", mail_id=str(row.id), via="smtp" if settings.auth_smtp_host else "sink")
    return sent


async def run_outbox(
    settings: AuthSettings, sessions: async_sessionmaker[AsyncSession], wake: asyncio.Event
) -> None:
    """Deliver what is due whenever `wake` is set, and every `auth_outbox_poll_s` besides."""
    while True:
        wake.clear()  # before the drain: mail committed during it wakes the next one
        sent = 0
        try:
            sent = await drain_once(settings, sessions)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the database may be restarting; keep the loop alive
            log.warning("mail.outbox_error", error=str(exc))
        if sent >= BATCH:  # a full batch: more may be waiting
            continue
        # `asyncio.timeout`, not `wait_for`: on Python 3.11 a cancel that lands as `wake` is set
        # is swallowed by `wait_for` (it returns the result), and the loop would run on with the
        # service stopping and its lifespan waiting for this task.
        with suppress(TimeoutError):
            async with asyncio.timeout(settings.auth_outbox_poll_s):
                await wake.wait()

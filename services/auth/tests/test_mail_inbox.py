"""Mail requested over the bus (`mail.send`) lands in the outbox once per `mail_id` and is delivered."""

from __future__ import annotations

import asyncio
import time
import uuid
from email import message_from_bytes
from pathlib import Path
from typing import Any

import nats
from fastapi import FastAPI

from parley_auth.context import AuthContext
from parley_auth.mail.models import OutboxMail
from parley_common import subjects
from parley_common.session_contract import MailRequest

from .support import mail_files


async def _wait_for(predicate: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_requested_mail_is_queued_once_and_delivered(auth_app: FastAPI, infra: Any) -> None:
    ctx: AuthContext = auth_app.state.ctx
    request = MailRequest(
        mail_id=uuid.uuid4(),
        to="someone@example.com",
        subject=f"Lead {uuid.uuid4().hex[:6]}",
        body="A visitor asked to be called back.",
    )
    nc = await nats.connect(infra.nats_url)
    try:
        js = nc.jetstream()
        # Garbage first: it must be dropped without holding up what follows.
        await js.publish(subjects.MAIL_SEND, b"{not json")
        body = request.model_dump_json().encode()
        # Twice, under distinct stream message ids: only the outbox can tell they are the same mail.
        await js.publish(subjects.MAIL_SEND, body, headers={"Nats-Msg-Id": uuid.uuid4().hex})
        await js.publish(subjects.MAIL_SEND, body, headers={"Nats-Msg-Id": uuid.uuid4().hex})

        async def drained() -> bool:
            info = await js.consumer_info(subjects.MAIL_STREAM, subjects.AUTH_MAIL_CONSUMER)
            return bool(info.num_pending == 0 and info.num_ack_pending == 0)

        # All three were settled (acked or terminated), none is left for redelivery.
        await _wait_for(drained)
    finally:
        await nc.close()

    async def sent() -> OutboxMail | None:
        async with ctx.db.sessions() as db:
            row = await db.get(OutboxMail, request.mail_id)
        return row if row is not None and row.sent_at is not None else None

    row = await _wait_for(sent)
    assert (row.to_addr, row.subject, row.body) == (request.to, request.subject, request.body)

    directory = Path(ctx.settings.auth_mail_dir)
    matching = [p for p in mail_files(directory) if request.subject in p.read_text()]
    assert len(matching) == 1
    assert message_from_bytes(matching[0].read_bytes())["To"] == request.to

"""Mail outbox delivery over real SMTP (aiosmtpd), and retry with backoff when SMTP is down."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import suppress
from email import message_from_bytes
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Message as MessageHandler
from fastapi import FastAPI

from parley_auth.context import AuthContext
from parley_auth.mail import outbox
from parley_auth.mail.models import OutboxMail
from parley_auth.settings import AuthSettings


class Collect(MessageHandler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[bytes] = []

    def handle_message(self, message) -> None:  # type: ignore[no-untyped-def]
        self.messages.append(bytes(message))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp() -> Iterator[tuple[Collect, int]]:
    handler = Collect()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


@pytest.fixture
async def paused_outbox(auth_app: FastAPI) -> AsyncIterator[None]:
    """Stop the background worker so the test alone decides when and how mail is delivered."""
    auth_app.state.outbox.cancel()
    with suppress(asyncio.CancelledError):
        await auth_app.state.outbox
    yield
    auth_app.state.outbox = auth_app.state.start_outbox()


async def _add(ctx: AuthContext, to: str) -> OutboxMail:
    row = OutboxMail(to_addr=to, subject="Hello", body="Body text")
    async with ctx.db.sessions() as db:
        db.add(row)
        await db.commit()
    return row


async def test_outbox_delivers_over_smtp_once(
    ctx: AuthContext, smtp: tuple[Collect, int], paused_outbox: None
) -> None:
    handler, port = smtp
    settings = ctx.settings.model_copy(
        update={"auth_smtp_host": "127.0.0.1", "auth_smtp_port": port, "auth_smtp_starttls": False}
    )
    row = await _add(ctx, "smtp-target@example.com")
    await outbox.drain_once(settings, ctx.db.sessions)
    await outbox.drain_once(settings, ctx.db.sessions)  # a second pass must not resend
    mine = [m for m in map(message_from_bytes, handler.messages) if m["To"] == "smtp-target@example.com"]
    assert len(mine) == 1 and mine[0]["Subject"] == "Hello"
    async with ctx.db.sessions() as db:
        sent = await db.get(OutboxMail, row.id)
    assert sent is not None and sent.sent_at is not None and sent.attempts == 1


async def test_outbox_retries_with_backoff_when_smtp_down(ctx: AuthContext, paused_outbox: None) -> None:
    down = ctx.settings.model_copy(
        update={"auth_smtp_host": "127.0.0.1", "auth_smtp_port": free_port(), "auth_smtp_starttls": False}
    )
    row = await _add(ctx, "down@example.com")
    assert await outbox.drain_once(down, ctx.db.sessions) == 0
    async with ctx.db.sessions() as db:
        failed = await db.get(OutboxMail, row.id)
    assert failed is not None and failed.sent_at is None and failed.attempts == 1 and failed.last_error
    assert failed.next_attempt_at > failed.created_at
    # Not due yet: nothing is attempted until the backoff has passed.
    await outbox.drain_once(down, ctx.db.sessions)
    async with ctx.db.sessions() as db:
        assert (await db.get(OutboxMail, row.id)).attempts == 1  # type: ignore[union-attr]


async def test_mail_goes_out_when_its_transaction_commits_not_when_the_outbox_polls(
    auth_app: FastAPI, ctx: AuthContext
) -> None:
    """The app's outbox looks on its own only every 600 s here (conftest): a mail queued in a
    transaction is delivered because the commit woke it, and not before the commit."""
    sink = Path(ctx.settings.auth_mail_dir)

    def delivered() -> list[Path]:
        return [p for p in sink.glob("*.eml") if "To: wake@example.com" in p.read_text()]

    async with ctx.db.sessions() as db:
        outbox.enqueue(db, "wake@example.com", "Woken", "Body text")
        await db.flush()
        await asyncio.sleep(0.3)
        assert delivered() == []  # not committed: nothing to deliver yet
        await db.commit()
    async with asyncio.timeout(5):
        while not delivered():
            await asyncio.sleep(0.05)
    assert len(delivered()) == 1


async def test_a_stop_as_mail_wakes_the_worker_still_stops_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lifespan cancels the worker to stop the service. On Python 3.11 `asyncio.wait_for`
    swallowed a cancel that landed as its wait ended (mail committed at that moment): the worker
    ran on and the stop waited for it forever (an auth schemathesis run hung so in CI)."""

    async def nothing_due(*_: object) -> int:
        return 0

    monkeypatch.setattr(outbox, "drain_once", nothing_due)
    settings = AuthSettings(auth_outbox_poll_s=60)
    wake = asyncio.Event()
    worker = asyncio.create_task(outbox.run_outbox(settings, None, wake))  # type: ignore[arg-type]
    for _ in range(5):  # into its wait
        await asyncio.sleep(0)
    wake.set()  # mail committed ...
    worker.cancel()  # ... as the service stops
    done, _ = await asyncio.wait({worker}, timeout=2)
    assert done, "the worker ran on after it was cancelled"
    assert worker.cancelled()

"""`reply_inbox.request` against a real server: `nc.request`'s answers and errors, no reply left
waiting, and a cancel that lands as the reply arrives is not lost (it is in `nc.request` on 3.11)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from parley_common.acked_together import Publication, publish_durably_together
from parley_common.jetstream import publish_durably
from parley_common.reply_inbox import ReplyInbox, reply_inbox, request

from .conftest import ScratchStream


@pytest.fixture
async def nc(infra: Any) -> AsyncIterator[Client]:
    client = await nats.connect(infra.nats_url)
    try:
        yield client
    finally:
        await client.close()


async def echo(nc: Client, subject: str) -> None:
    async def answer(msg: Msg) -> None:
        await msg.respond(b"re: " + msg.data)

    await nc.subscribe(subject, cb=answer)


async def test_a_request_gets_its_reply_and_leaves_nothing_waiting(nc: Client) -> None:
    await echo(nc, "test.reply_inbox.echo")
    replies = await asyncio.gather(
        *(request(nc, "test.reply_inbox.echo", f"q{i}".encode(), timeout_s=5) for i in range(3))
    )
    assert [m.data for m in replies] == [b"re: q0", b"re: q1", b"re: q2"]
    inbox = await reply_inbox(nc)
    assert inbox is not None and inbox.waiting == {}


async def test_nobody_to_answer_and_no_answer_are_nats_pys_errors(nc: Client) -> None:
    with pytest.raises(NoRespondersError):
        await request(nc, "test.reply_inbox.nobody", b"?", timeout_s=5)
    await nc.subscribe("test.reply_inbox.silent")  # subscribed, never answers
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(NatsTimeoutError):
        await request(nc, "test.reply_inbox.silent", b"?", timeout_s=0.2)
    assert loop.time() - started < 2
    inbox = await reply_inbox(nc)
    assert inbox is not None and inbox.waiting == {}


async def cancelled_as_the_reply_arrives(
    monkeypatch: pytest.MonkeyPatch, owner: type, method: str, ask: Callable[[], Coroutine[Any, Any, object]]
) -> object:
    """Ask, and cancel the asking task in the very callback that completes its reply's future: the
    cancel and the reply land in one loop iteration. What the asking task ended with."""
    asking: asyncio.Task[object] | None = None
    deliver = getattr(owner, method)

    async def deliver_then_cancel(self: Any, msg: Msg) -> None:
        await deliver(self, msg)
        assert asking is not None
        asking.cancel()

    monkeypatch.setattr(owner, method, deliver_then_cancel)
    asking = asyncio.create_task(ask())
    try:
        return await asking
    except asyncio.CancelledError as exc:
        return exc


@pytest.mark.parametrize("asker", ["reply_inbox.request", "nc.request"])
async def test_a_cancel_landing_as_the_reply_arrives(
    nc: Client, monkeypatch: pytest.MonkeyPatch, asker: str
) -> None:
    """`request` keeps it; `nc.request` (its `asyncio.wait_for`) loses it on Python 3.11 and
    returns the reply: why `request` exists."""
    subject = f"test.reply_inbox.{asker}"
    await echo(nc, subject)
    if asker == "nc.request" and sys.version_info >= (3, 12):
        pytest.skip("asyncio.wait_for keeps such a cancel from Python 3.12")
    ours = asker == "reply_inbox.request"
    ended = await cancelled_as_the_reply_arrives(
        monkeypatch,
        ReplyInbox if ours else Client,
        "deliver" if ours else "_request_sub_callback",
        lambda: request(nc, subject, b"q", timeout_s=5) if ours else nc.request(subject, b"q", timeout=5),
    )
    if ours:
        assert isinstance(ended, asyncio.CancelledError)
    else:
        assert isinstance(ended, Msg) and ended.data == b"re: q"


async def test_one_publication_and_several_together_share_the_connections_inbox(
    scratch_stream: ScratchStream,
) -> None:
    nc, subject = scratch_stream.nc, scratch_stream.subject
    ack = await publish_durably(nc, subject, b"one", msg_id="m-1", timeout_s=5)
    acks = await publish_durably_together(
        nc, [Publication(subject, b"two", "m-2"), Publication(subject, b"three", "m-3")], timeout_s=5
    )
    assert [ack.seq, *(a.seq for a in acks)] == [1, 2, 3]
    inbox = await reply_inbox(nc)
    assert inbox is not None and inbox.waiting == {}
    assert inbox.sub is not None
    assert list(nc._subs.values()).count(inbox.sub) == 1  # one subscription for both


async def test_a_durable_publication_cancelled_as_its_ack_arrives_is_cancelled(
    scratch_stream: ScratchStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every JetStream publish and API call of ours asks through `request` (`api_request`)."""
    nc, subject = scratch_stream.nc, scratch_stream.subject
    ended = await cancelled_as_the_reply_arrives(
        monkeypatch,
        ReplyInbox,
        "deliver",
        lambda: publish_durably(nc, subject, b"one", msg_id="m-1", timeout_s=5),
    )
    assert isinstance(ended, asyncio.CancelledError)

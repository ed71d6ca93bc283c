"""Requests over NATS whose replies come to one inbox per connection, awaited under `asyncio.timeout`.

nats-py's `Client.request` waits for its reply with `asyncio.wait_for`, which on Python 3.11 returns
the reply, and drops the cancel, when a cancel of the waiting task lands in the loop iteration in
which the reply arrives (tasks.py). Every JetStream publish and API call of ours went through it:
a task cancelled as its publication's ack came back ran on. `request` here is the same exchange
(a publish with a reply subject, the answer, nats-py's errors) with the wait under `asyncio.timeout`,
which lets an outside cancel through.

The replies come to one subscription per connection (`_INBOX.<nuid>.*`, made at the first use and
kept by nats-py across reconnects), each to a future by its token: `publish_durably_together`
(acked_together.py) awaits several at once through the same inbox.
"""

from __future__ import annotations

import asyncio
import itertools
import weakref

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import Header

_NO_RESPONDERS = "503"  # the status the server answers a request no one subscribes to with


class ReplyInbox:
    """Where the replies to one connection's requests arrive, by token."""

    def __init__(self, nc: Client) -> None:
        self.prefix = f"{nc.new_inbox()}."
        self.waiting: dict[str, asyncio.Future[Msg]] = {}
        self.sub: Subscription | None = None
        self.lock = asyncio.Lock()
        self._tokens = itertools.count()

    def expect(self) -> tuple[str, asyncio.Future[Msg]]:
        """A reply subject's token and the future its reply will complete (drop it from `waiting`
        when done with it)."""
        token = str(next(self._tokens))
        future: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self.waiting[token] = future
        return token, future

    async def deliver(self, msg: Msg) -> None:
        future = self.waiting.pop(msg.subject[len(self.prefix) :], None)
        if future is not None and not future.done():
            future.set_result(msg)


_INBOXES: weakref.WeakKeyDictionary[Client, ReplyInbox] = weakref.WeakKeyDictionary()


async def reply_inbox(nc: Client) -> ReplyInbox | None:
    """The connection's reply inbox; None when it cannot subscribe (draining, closing)."""
    inbox = _INBOXES.get(nc)
    if inbox is None:
        inbox = _INBOXES[nc] = ReplyInbox(nc)
    if inbox.sub is None:
        async with inbox.lock:
            if inbox.sub is None:
                try:
                    inbox.sub = await nc.subscribe(f"{inbox.prefix}*", cb=inbox.deliver)
                except Exception:
                    return None
    return inbox


def no_responders(msg: Msg) -> bool:
    """The server's answer that nobody subscribes to the subject (nats-py's check in `request`)."""
    headers = msg.headers
    return headers is not None and headers.get(Header.STATUS) == _NO_RESPONDERS


async def request(
    nc: Client,
    subject: str,
    payload: bytes,
    *,
    timeout_s: float,
    headers: dict[str, str] | None = None,
) -> Msg:
    """`nc.request(subject, payload, timeout=timeout_s, headers=headers)`, with the same errors
    (`NoRespondersError`, nats-py's `TimeoutError`, a closed or draining connection's), waited for
    under `asyncio.timeout`: a cancel of the caller always propagates."""
    inbox = await reply_inbox(nc)
    if inbox is None:  # the connection refuses new subscriptions: it refuses the request as nats-py's would
        return await nc.request(subject, payload, timeout=timeout_s, headers=headers)
    token, future = inbox.expect()
    try:
        await nc.publish(subject, payload, reply=f"{inbox.prefix}{token}", headers=headers)
        try:
            async with asyncio.timeout(timeout_s):
                msg = await future
        except TimeoutError:
            raise NatsTimeoutError from None
    finally:
        inbox.waiting.pop(token, None)
    if no_responders(msg):
        raise NoRespondersError
    return msg

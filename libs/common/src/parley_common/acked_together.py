"""Several JetStream publications sent together, their acks awaited together.

`publish_durably` is one request and its ack; two in a row (a turn's `turn_complete`, then its
transcript) cost two round trips: a flush each, a read of each ack, the caller woken twice.
`publish_durably_together` writes them all in one go (each with its reply inbox, so nats-py flushes
them together) and waits once for every ack, which usually come back in one read.

Nothing about what is stored changes: each publication carries its own `Nats-Msg-Id`, and any one
not acked plainly on this first attempt (no ack within `ATTEMPT_S`, the connection away, no stream,
an API error) goes on through `publish_durably` under the same id, which retries it through an
outage, drops a copy already stored as a duplicate, and raises what it raises. The messages go out
in the order given, as they did one after the other on the same connection; the only difference is
that a later one no longer waits for the ack of an earlier one before it is sent.

The acks come to one inbox subscription per connection (`_INBOX.<nuid>.*`, made at the first use,
kept by nats-py across reconnects), not through `nc.request`, whose per-request future and
`wait_for` are what is saved.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import PubAck

from parley_common.jetstream import ATTEMPT_S, PUB_ACK_FIELDS, publish_durably
from parley_common.outages import OUTAGE_ERRORS


@dataclass(frozen=True, slots=True)
class Publication:
    subject: str
    payload: bytes
    msg_id: str  # its `Nats-Msg-Id`: a copy within the stream's duplicate window is dropped
    headers: Mapping[str, str] | None = None


class _AckInbox:
    """Where the acks of one connection's publications together arrive, by token."""

    def __init__(self, nc: Client) -> None:
        self.prefix = f"{nc.new_inbox()}."
        self.waiting: dict[str, asyncio.Future[Msg]] = {}
        self.sub: Subscription | None = None
        self.lock = asyncio.Lock()
        self._tokens = itertools.count()

    def token(self) -> str:
        return str(next(self._tokens))

    async def deliver(self, msg: Msg) -> None:
        future = self.waiting.pop(msg.subject[len(self.prefix) :], None)
        if future is not None and not future.done():
            future.set_result(msg)


_INBOXES: weakref.WeakKeyDictionary[Client, _AckInbox] = weakref.WeakKeyDictionary()


async def _inbox(nc: Client) -> _AckInbox | None:
    """The connection's ack inbox; None when it cannot subscribe (draining, closing): then each
    publication goes alone, as `publish_durably` would have sent it."""
    inbox = _INBOXES.get(nc)
    if inbox is None:
        inbox = _INBOXES[nc] = _AckInbox(nc)
    if inbox.sub is None:
        async with inbox.lock:
            if inbox.sub is None:
                try:
                    inbox.sub = await nc.subscribe(f"{inbox.prefix}*", cb=inbox.deliver)
                except Exception:
                    return None
    return inbox


def _plain_ack(future: asyncio.Future[Msg]) -> PubAck | None:
    """The stream's ack of a stored message; None for anything else (no answer, a status such as
    no responders, an API error), which `publish_durably` then handles as it always has."""
    if not future.done() or future.cancelled():
        return None
    msg = future.result()
    if msg.headers or not msg.data:
        return None
    try:
        resp = json.loads(msg.data)
    except ValueError:
        return None
    if not isinstance(resp, dict) or not resp or not resp.keys() <= PUB_ACK_FIELDS:
        return None
    return PubAck(**resp)


async def publish_durably_together(
    nc: Client, publications: Sequence[Publication], *, timeout_s: float
) -> list[PubAck]:
    """Each publication stored as `publish_durably` stores it, the acks in the same order; sent
    together, awaited together. Raises what `publish_durably` raises for the first one that fails
    (the others may be stored: their ids make a later publication of them a no-op)."""
    inbox = await _inbox(nc) if len(publications) > 1 and nc.is_connected else None
    if inbox is None:
        return [await _alone(nc, p, timeout_s) for p in publications]
    loop = asyncio.get_running_loop()
    sent: list[tuple[str, asyncio.Future[Msg]]] = []
    try:
        try:
            for p in publications:
                token = inbox.token()
                future: asyncio.Future[Msg] = loop.create_future()
                inbox.waiting[token] = future
                headers = {**p.headers, "Nats-Msg-Id": p.msg_id} if p.headers else {"Nats-Msg-Id": p.msg_id}
                try:
                    await nc.publish(p.subject, p.payload, reply=f"{inbox.prefix}{token}", headers=headers)
                except BaseException:
                    del inbox.waiting[token]
                    raise
                sent.append((token, future))
        except OUTAGE_ERRORS:
            pass  # the rest go one by one below, waiting for the connection as `publish_durably` does
        if sent:
            await asyncio.wait([future for _, future in sent], timeout=min(ATTEMPT_S, timeout_s))
    finally:
        for token, _ in sent:
            inbox.waiting.pop(token, None)
    acks: list[PubAck] = []
    for i, p in enumerate(publications):
        ack = _plain_ack(sent[i][1]) if i < len(sent) else None
        if ack is None:
            ack = await _alone(nc, p, timeout_s)  # its own deadline, as one after the other had
        acks.append(ack)
    return acks


async def _alone(nc: Client, p: Publication, timeout_s: float) -> PubAck:
    return await publish_durably(
        nc, p.subject, p.payload, msg_id=p.msg_id, headers=p.headers, timeout_s=timeout_s
    )

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

The acks come to the connection's reply inbox (reply_inbox.py), which a single publication's ack
(`publish_durably`) comes to as well; here they are awaited together, with one `asyncio.wait`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import PubAck

from parley_common.jetstream import ATTEMPT_S, PUB_ACK_FIELDS, publish_durably
from parley_common.outages import OUTAGE_ERRORS
from parley_common.reply_inbox import reply_inbox


@dataclass(frozen=True, slots=True)
class Publication:
    subject: str
    payload: bytes
    msg_id: str  # its `Nats-Msg-Id`: a copy within the stream's duplicate window is dropped
    headers: Mapping[str, str] | None = None


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
    inbox = await reply_inbox(nc) if len(publications) > 1 and nc.is_connected else None
    if inbox is None:
        return [await _alone(nc, p, timeout_s) for p in publications]
    sent: list[tuple[str, asyncio.Future[Msg]]] = []
    try:
        try:
            for p in publications:
                token, future = inbox.expect()
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

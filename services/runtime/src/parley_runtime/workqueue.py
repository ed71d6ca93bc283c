"""Working off a JetStream work queue (`bus.WorkQueue`): what the session worker and the
agent-test worker share.

A worker pulls up to `limit` messages and holds each one unacked while a task works on it: it
sends `in progress` for every held message each heartbeat, and the task acks it when the work is
done. If the worker dies the heartbeats stop and JetStream delivers the message again after
`ack_wait` to another worker, which resumes the work from Redis. A worker stopping on purpose
hands back what it holds (negative ack), so another worker takes it at once. A subclass says
what a message starts (`claim`).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from typing import Generic, TypeVar

import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from parley_common.jetstream import fetch_batch, hand_back, in_progress
from parley_runtime.bus import WorkQueue

log = structlog.get_logger(__name__)


def body_let_go(msg: Msg) -> None:
    """`msg` loses its body and headers, once they are read: a held message is acked, nacked and
    kept in progress by its reply subject on its connection, and nothing else of it is read
    again. A session's start message kept its JSON and trace headers (~0.9 KiB) for as long as
    the session was held."""
    msg.data = b""
    msg.headers = None


@dataclass(slots=True)
class Held:
    """A message this worker holds, and the task working on it."""

    msg: Msg
    task: asyncio.Task[None] | None = None
    acked: bool = False

    @property
    def deliveries(self) -> int:
        return self.msg.metadata.num_delivered or 1

    async def ack(self) -> None:
        if not self.acked:
            self.acked = True
            await self.msg.ack()


H = TypeVar("H", bound=Held)


class QueueWorker(Generic[H]):
    name = "queue"  # task names and log events (`<name>.fetch_failed`, `<name>.heartbeat_failed`)

    def __init__(self, js: JetStreamContext, queue: WorkQueue, *, limit: int, ack_wait_s: float) -> None:
        self.js, self.queue = js, queue
        self.limit, self.ack_wait_s = limit, ack_wait_s
        self.held: dict[uuid.UUID, H] = {}
        self._slots = asyncio.Event()
        self._sub: JetStreamContext.PullSubscription | None = None

    async def claim(self, msg: Msg) -> None:
        """Start working on a message (or terminate it, or leave it for another worker)."""
        raise NotImplementedError

    async def subscribe(self) -> asyncio.Task[None]:
        """Bind the queue's consumer; returns the task pulling from it."""
        self._sub = await self.queue.bind(self.js, ack_wait_s=self.ack_wait_s)
        return asyncio.create_task(self._fetch_loop(), name=f"{self.name}-fetch")

    def freed(self) -> None:
        """A task ended: there is room to pull again."""
        self._slots.set()

    async def _fetch_loop(self) -> None:
        assert self._sub is not None
        while True:
            free = self.limit - len(self.held)
            if free <= 0:
                self._slots.clear()
                await self._slots.wait()
                continue
            for msg in await fetch_batch(
                self._sub, min(free, 32), event=f"{self.name}.fetch_failed", pause_s=0.5
            ):
                await self.claim(msg)

    async def beat(self) -> None:
        """`in progress` for every held message, in one write (nats-py buffers it while the broker
        is away)."""
        held = [h.msg for h in self.held.values() if not h.acked]
        try:
            await in_progress(held)
        except Exception as exc:
            log.warning(f"{self.name}.heartbeat_failed", count=len(held), error=str(exc))

    async def hand_back(self) -> None:
        """Give everything still held back to JetStream and stop pulling (the fetch task is
        cancelled by the caller first)."""
        await hand_back(self.held.values())
        self.held.clear()
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

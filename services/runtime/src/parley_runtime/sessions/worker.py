"""Claims sessions from the `SESSIONS` work queue and runs each one until it closes (the pulling,
heartbeats and hand-back every work queue of the runtime shares are in workqueue.py).

Every worker pulls from one durable consumer, so any worker can take any session. A claimed start
message stays unacknowledged while the session runs: the worker sends `in progress` for it every
heartbeat, and acks it when the session is closed. If the worker dies, the heartbeats stop and
JetStream delivers the message again after `ack_wait` to another worker, which resumes the
session from Redis (see runner.py). A worker stopping on purpose hands its sessions over at once
(negative ack) instead of making them wait for `ack_wait`.

JetStream also redelivers when only the heartbeats were lost: a broker restart longer than
`ack_wait` (the restarted server finds every claim overdue). So each heartbeat also renews the
session's lease in Redis, and a worker offered a start message again (a redelivery) takes it only
if no other worker holds the lease; otherwise it leaves the message alone, the living owner's
heartbeats keep it, and the session runs on undisturbed. After a reconnect the heartbeat goes out at
once. A dead owner's lease lapses before JetStream's redelivery, so failover is unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError

from parley_common import metrics, subjects
from parley_common.outages import describe, is_outage
from parley_common.session_contract import STREAMS, SessionStart, ensure_streams
from parley_common.tasks import cancel_and_wait
from parley_runtime import bus
from parley_runtime.sessions.runner import Deps, SessionRunner
from parley_runtime.workqueue import Held, QueueWorker, body_let_go

log = structlog.get_logger(__name__)

OWN_STREAMS = (
    subjects.SESSIONS_STREAM,
    subjects.SESSION_IN_STREAM,
    subjects.SESSION_OUT_STREAM,
    subjects.MAIL_STREAM,
    subjects.CONVERSATIONS_STREAM,
)
assert set(OWN_STREAMS) <= set(STREAMS)


@dataclass(slots=True)
class _Claim(Held):
    runner: SessionRunner | None = None
    lease_key: str = ""  # the session's lease in Redis (`StateStore.lease_key`), renewed each heartbeat


class SessionWorker(QueueWorker[_Claim]):
    name = "sessions"

    def __init__(self, deps: Deps) -> None:
        super().__init__(
            deps.js,
            bus.SESSION_STARTS,
            limit=deps.settings.runtime_max_sessions,
            ack_wait_s=deps.settings.runtime_claim_ack_wait_s,
        )
        self.deps = deps
        self.settings = deps.settings
        self.claims = self.held
        self._tasks: list[asyncio.Task[None]] = []
        self._unhook: Callable[[], None] | None = None
        self._leader: Subscription | None = None  # `SESSION_IN`'s new leaders (bus.watch_input_leader)
        self._lease_trouble = False  # renewing leases failed (logged once per outage)

    @property
    def active(self) -> int:
        return len(self.claims)

    async def start(self) -> None:
        await ensure_streams(self.deps.js, OWN_STREAMS)
        self._tasks = [
            await self.subscribe(),
            asyncio.create_task(self._heartbeat_loop(), name="sessions-heartbeat"),
            asyncio.create_task(self._pending_loop(), name="sessions-pending"),
        ]
        # Back from a broker outage: tell JetStream at once that every claim is still in progress.
        self._unhook = self.deps.events.on_reconnect(self.beat)
        self._leader = await bus.watch_input_leader(self.deps.nc, self.deps.events)

    async def stop(self) -> None:
        """Drain: stop claiming, let running turns finish (up to the drain timeout), then hand every
        session still owned back to JetStream, so another worker resumes it at once."""
        if self._unhook is not None:
            self._unhook()
        if self._leader is not None:
            with contextlib.suppress(Exception):  # the connection may be closing
                await self._leader.unsubscribe()
        fetch, *others = self._tasks
        await cancel_and_wait(fetch)  # its fetch may lose a cancel (tasks.py): cancelled until it ends
        self.deps.draining.set()  # no new turn starts; queued input stays for the next owner
        deadline = time.monotonic() + self.settings.runtime_drain_timeout_s
        while (left := deadline - time.monotonic()) > 0:
            self.deps.turn_over.clear()
            if not any(c.runner is not None and c.runner.busy for c in self.claims.values()):
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self.deps.turn_over.wait()
        await cancel_and_wait(*others)  # heartbeats ran during the drain; now the claims go back
        await self.hand_back()
        self._gauge()

    async def claim(self, msg: Msg) -> None:
        try:
            start = SessionStart.model_validate_json(msg.data)
        except ValidationError as exc:
            log.error("sessions.bad_start", error=str(exc))
            await msg.term()  # never valid: do not redeliver
            return
        headers = dict(msg.headers or {})
        body_let_go(msg)  # held for as long as the session runs
        existing = self.claims.get(start.conversation_id)
        if existing is not None:
            # Redelivered to us while we run it (a late heartbeat): keep running, hold the new one.
            existing.msg = msg
            return
        if (msg.metadata.num_delivered or 1) > 1 and await self._owned_elsewhere(start.conversation_id):
            return
        claim = _Claim(msg=msg, lease_key=self.deps.store.lease_key(start.conversation_id))
        self.claims[start.conversation_id] = claim
        self._gauge()
        runner = claim.runner = SessionRunner(self.deps, start, claim)
        claim.task = asyncio.create_task(
            self._run(start.conversation_id, runner, headers), name=f"session-{start.conversation_id}"
        )

    async def _owned_elsewhere(self, conversation_id: uuid.UUID) -> bool:
        """A redelivered start: does another (living) worker still run this session?"""
        try:
            holder = await self.deps.store.lease_holder(conversation_id)
        except Exception as exc:  # Redis is away: we could not take it anyway; offered again later
            log.info("session.claim_deferred", conversation_id=str(conversation_id), error=describe(exc))
            return True
        if holder is None or holder == self.deps.token:
            return False
        # Left alone (neither acked nor nacked): the owner's heartbeats keep the message.
        log.info("session.claim_declined", conversation_id=str(conversation_id), owner=holder)
        return True

    async def _run(self, conversation_id: uuid.UUID, runner: SessionRunner, headers: dict[str, str]) -> None:
        failed = False
        try:
            await runner.run(headers)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # JetStream gives the session to a worker again (up to max_claims times).
            failed = True
            if is_outage(exc):  # Redis or the bus stayed away too long: handed over, not a bug
                log.warning("session.handed_over", conversation_id=str(conversation_id), error=describe(exc))
            else:
                log.exception("session.crashed", conversation_id=str(conversation_id))
        finally:
            claim = self.claims.pop(conversation_id, None)
            if claim is not None:
                # The lease goes first, so the next worker offered the session takes it at once.
                with contextlib.suppress(Exception):
                    await self.deps.store.release(conversation_id, self.deps.token)
                if failed and not claim.acked:
                    with contextlib.suppress(Exception):
                        await claim.msg.nak(delay=1)
            self._gauge()
            self.freed()

    def _gauge(self) -> None:
        metrics.SESSIONS_ACTIVE.set(len(self.claims))
        metrics.WORKER_CAPACITY_IN_USE.set(len(self.claims) / self.settings.runtime_max_sessions)

    async def _heartbeat_loop(self) -> None:
        # Nothing in here waits for a reply from NATS: while the broker is away the heartbeats
        # are buffered and the leases (Redis) renewed, on time.
        while True:
            await asyncio.sleep(self.settings.runtime_claim_heartbeat_s)
            await self.beat()
            await self._renew_leases()

    async def _pending_loop(self) -> None:
        # Apart from the heartbeats: a JetStream API call waits up to its timeout during an outage.
        while True:
            await self._report_pending()
            await asyncio.sleep(self.settings.runtime_claim_heartbeat_s * 4)

    async def _renew_leases(self) -> None:
        running = [c.lease_key for c in self.claims.values() if not c.acked]
        try:
            await self.deps.store.renew_leases(running, self.deps.token)
        except Exception as exc:
            if not self._lease_trouble:
                log.warning("sessions.lease_renewal_failed", count=len(running), error=describe(exc))
            self._lease_trouble = True
        else:
            if self._lease_trouble:
                log.info("sessions.lease_renewal_recovered", count=len(running))
            self._lease_trouble = False

    async def _report_pending(self) -> None:
        """Session starts nobody has claimed yet (what autoscaling and the dashboards watch)."""
        try:
            info = await self.deps.js.consumer_info(
                subjects.SESSIONS_STREAM, subjects.RUNTIME_SESSIONS_CONSUMER
            )
        except Exception as exc:
            log.debug("sessions.consumer_info_failed", error=str(exc))
            return
        metrics.JETSTREAM_CONSUMER_PENDING.labels(
            subjects.SESSIONS_STREAM, subjects.RUNTIME_SESSIONS_CONSUMER
        ).set(info.num_pending or 0)

"""Claims sessions from the `SESSIONS` work queue and runs each one until it closes.

Every worker pulls from one durable consumer, so any worker can take any session. A claimed start
message stays unacknowledged while the session runs: the worker sends `in progress` for it every
heartbeat, and acks it when the session is closed. If the worker dies, the heartbeats stop and
JetStream delivers the message again after `ack_wait` to another worker, which resumes the
session from Redis (see runner.py). A worker stopping on purpose hands its sessions over at once
(negative ack) instead of making them wait for `ack_wait`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass

import structlog
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from pydantic import ValidationError

from parley_common import metrics, subjects
from parley_common.session_contract import STREAMS, SessionStart, ensure_streams
from parley_runtime.sessions.runner import Deps, SessionRunner

log = structlog.get_logger(__name__)

OWN_STREAMS = (
    subjects.SESSIONS_STREAM,
    subjects.SESSION_IN_STREAM,
    subjects.SESSION_OUT_STREAM,
    subjects.MAIL_STREAM,
    subjects.CONVERSATIONS_STREAM,
)
assert set(OWN_STREAMS) <= set(STREAMS)


@dataclass
class _Claim:
    msg: Msg
    task: asyncio.Task[None] | None = None
    runner: SessionRunner | None = None
    acked: bool = False

    @property
    def deliveries(self) -> int:
        return self.msg.metadata.num_delivered or 1

    async def ack(self) -> None:
        if not self.acked:
            self.acked = True
            await self.msg.ack()


class SessionWorker:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.settings = deps.settings
        self.claims: dict[uuid.UUID, _Claim] = {}
        self._slots = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._sub: JetStreamContext.PullSubscription | None = None

    @property
    def active(self) -> int:
        return len(self.claims)

    async def start(self) -> None:
        js = self.deps.js
        await ensure_streams(js, OWN_STREAMS)
        config = ConsumerConfig(
            durable_name=subjects.RUNTIME_SESSIONS_CONSUMER,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.settings.runtime_claim_ack_wait_s,
            max_deliver=-1,
            # Every running session holds one unacked message: no cap below the cluster's capacity.
            max_ack_pending=-1,
            filter_subject=subjects.SESSION_START,
        )
        await js.add_consumer(subjects.SESSIONS_STREAM, config)
        self._sub = await js.pull_subscribe_bind(
            durable=subjects.RUNTIME_SESSIONS_CONSUMER, stream=subjects.SESSIONS_STREAM
        )
        self._tasks = [
            asyncio.create_task(self._fetch_loop(), name="sessions-fetch"),
            asyncio.create_task(self._heartbeat_loop(), name="sessions-heartbeat"),
        ]

    async def stop(self) -> None:
        """Drain: stop claiming, let running turns finish (up to the drain timeout), then hand every
        session still owned back to JetStream, so another worker resumes it at once."""
        fetch, *others = self._tasks
        fetch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await fetch
        self.deps.draining.set()  # no new turn starts; queued input stays for the next owner
        deadline = time.monotonic() + self.settings.runtime_drain_timeout_s
        while (left := deadline - time.monotonic()) > 0:
            self.deps.turn_over.clear()
            if not any(c.runner is not None and c.runner.busy for c in self.claims.values()):
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.deps.turn_over.wait(), left)
        for task in others:  # heartbeats ran during the drain; now the claims go back
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        claims = list(self.claims.values())
        for claim in claims:
            if claim.task is not None:
                claim.task.cancel()
        for claim in claims:
            if claim.task is not None:
                with contextlib.suppress(BaseException):
                    await claim.task
            if not claim.acked:
                with contextlib.suppress(Exception):
                    await claim.msg.nak()
        self.claims.clear()
        self._gauge()
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    async def _fetch_loop(self) -> None:
        assert self._sub is not None
        while True:
            free = self.settings.runtime_max_sessions - len(self.claims)
            if free <= 0:
                self._slots.clear()
                await self._slots.wait()
                continue
            try:
                msgs = await self._sub.fetch(min(free, 32), timeout=1.0)
            except (NatsTimeoutError, TimeoutError):
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS reconnecting: keep trying
                log.warning("sessions.fetch_failed", error=str(exc))
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                await self._claim(msg)

    async def _claim(self, msg: Msg) -> None:
        try:
            start = SessionStart.model_validate_json(msg.data)
        except ValidationError as exc:
            log.error("sessions.bad_start", error=str(exc))
            await msg.term()  # never valid: do not redeliver
            return
        existing = self.claims.get(start.conversation_id)
        if existing is not None:
            # Redelivered to us while we run it (a late heartbeat): keep running, hold the new one.
            existing.msg = msg
            return
        claim = _Claim(msg=msg)
        self.claims[start.conversation_id] = claim
        self._gauge()
        runner = claim.runner = SessionRunner(self.deps, start, claim)
        claim.task = asyncio.create_task(
            self._run(start.conversation_id, runner, dict(msg.headers or {})),
            name=f"session-{start.conversation_id}",
        )

    async def _run(self, conversation_id: uuid.UUID, runner: SessionRunner, headers: dict[str, str]) -> None:
        try:
            await runner.run(headers)
        except asyncio.CancelledError:
            raise
        except Exception:
            # JetStream gives the session to a worker again (up to max_claims times).
            log.exception("session.crashed", conversation_id=str(conversation_id))
            claim = self.claims.get(conversation_id)
            if claim is not None and not claim.acked:
                with contextlib.suppress(Exception):
                    await claim.msg.nak(delay=1)
        finally:
            self.claims.pop(conversation_id, None)
            self._gauge()
            self._slots.set()

    def _gauge(self) -> None:
        metrics.SESSIONS_ACTIVE.set(len(self.claims))
        metrics.WORKER_CAPACITY_IN_USE.set(len(self.claims) / self.settings.runtime_max_sessions)

    async def _heartbeat_loop(self) -> None:
        beats = 0
        while True:
            await asyncio.sleep(self.settings.runtime_claim_heartbeat_s)
            beats += 1
            if beats % 4 == 1:
                await self._report_pending()
            claims = [c for c in self.claims.values() if not c.acked]
            results = await asyncio.gather(*(c.msg.in_progress() for c in claims), return_exceptions=True)
            failures = [r for r in results if isinstance(r, Exception)]
            if failures:
                log.warning("sessions.heartbeat_failed", count=len(failures), error=str(failures[0]))

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

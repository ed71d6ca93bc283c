"""Octavus agent sessions on the bus: create, get, restore and trigger, in the runtime queue group.

A trigger is answered at once (ok, or the 4xx the request deserves); the execution then runs in
the background, publishing `StreamFrame`s to the subject the gateway named, and saves the session
before the last frame, so a GET after the stream shows everything it streamed.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any
from uuid import UUID

import structlog
from faststream.nats import NatsBroker
from nats.aio.client import Client as NatsClient
from pydantic import BaseModel

from parley_common.auth_contract import Principal
from parley_common.catalog_contract import AgentSnapshot
from parley_common.errors import Codes, ParleyError
from parley_common.octavus import AgentBundle, AgentDefinition, DefinitionError, load_definition
from parley_common.octavus import events as ev
from parley_common.octavus import sessions as wire
from parley_common.outages import OUTAGE_ERRORS, describe
from parley_common.tasks import cancel_and_wait
from parley_runtime.agents import AgentCache
from parley_runtime.engine import SessionEngine
from parley_runtime.llm_port import LLMPort
from parley_runtime.octavus import views
from parley_runtime.octavus.executor import Plan, ProtocolEngine, now_iso
from parley_runtime.octavus.state import Session
from parley_runtime.octavus.store import SessionStore
from parley_runtime.octavus.values import check_input

log = structlog.get_logger(__name__)


def _reply(body: BaseModel, status: int = 200) -> wire.OctavusReply:
    return wire.OctavusReply(
        ok=True, status=status, body=body.model_dump_json(by_alias=True, exclude_none=True)
    )


def _owns(principal: Principal, owner_user_id: UUID | None, owner_org_id: UUID | None) -> bool:
    """An API key reaches its project: its org's agents and sessions, or its user's own."""
    if principal.org_id is not None:
        return owner_org_id == principal.org_id
    return owner_org_id is None and owner_user_id == principal.user_id


def _session_not_found() -> ParleyError:
    return ParleyError(Codes.NOT_FOUND, params={"resource": "session"})


class OctavusService:
    def __init__(
        self,
        *,
        broker: NatsBroker,
        store: SessionStore,
        agents: AgentCache,
        llm: LLMPort,
        ping_s: float,
        drain_s: float,
    ) -> None:
        self.broker, self.store, self.agents, self.llm = broker, store, agents, llm
        self.ping_s, self.drain_s = ping_s, drain_s
        self._bundles: dict[tuple[str, int], AgentBundle] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def stop(self, timeout_s: float | None = None) -> None:
        """Let running executions finish (they hold session locks and unsaved state), for up to
        `timeout_s` (default `drain_s`); cancel the rest."""
        if self._tasks:
            limit = self.drain_s if timeout_s is None else timeout_s
            _, late = await asyncio.wait(set(self._tasks), timeout=limit)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    # --- agents ---------------------------------------------------------------------------

    async def _agent(self, principal: Principal, agent_id: str) -> tuple[AgentSnapshot, AgentBundle]:
        snapshot = await self.agents.get(agent_id)
        if not _owns(principal, snapshot.owner_user_id, snapshot.owner_org_id):
            raise ParleyError(Codes.NOT_FOUND, params={"resource": "agent"})
        key = (str(snapshot.agent_id), snapshot.version)
        bundle = self._bundles.get(key)
        if bundle is None:
            bundle = self._load(snapshot)
            self._bundles = {k: v for k, v in self._bundles.items() if k[0] != key[0]}
            self._bundles[key] = bundle
        return snapshot, bundle

    @staticmethod
    def _load(snapshot: AgentSnapshot) -> AgentBundle:
        if snapshot.protocol is None:
            raise ParleyError(Codes.OCTAVUS_NOT_PROTOCOL_AGENT, params={"agent_id": str(snapshot.agent_id)})
        definition = AgentDefinition.model_validate(snapshot.protocol)
        try:
            bundle, _ = load_definition(
                definition.protocol, definition.settings.model_dump(), definition.prompt_map()
            )
        except DefinitionError as exc:
            raise ParleyError(Codes.RUNTIME_AGENT_UNAVAILABLE, params={"detail": str(exc)}) from exc
        if bundle.settings.format != "interactive" or bundle.protocol.agent is None:
            raise ParleyError(Codes.OCTAVUS_NOT_PROTOCOL_AGENT, params={"agent_id": str(snapshot.agent_id)})
        return bundle

    # --- create / get / restore -------------------------------------------------------------

    async def create(self, req: wire.OctavusCreateRequest) -> wire.OctavusReply:
        snapshot, bundle = await self._agent(req.principal, req.body.agent_id)
        stamp = now_iso()
        session = _fresh(str(uuid.uuid4()), snapshot, bundle, req.body.input, created_at=stamp)
        if not await self.store.create(session):  # a UUID4 collision: practically never
            raise ParleyError(Codes.CONFLICT)
        log.info("octavus.session_created", session_id=session.id, agent_id=session.agent_id)
        return _reply(wire.SessionCreated(session_id=session.id))

    async def _session(self, principal: Principal, session_id: str) -> Session | wire.ExpiredSession:
        session = await self.store.load(session_id)
        if session is not None:
            if not _owns(principal, session.owner_user_id, session.owner_org_id):
                raise _session_not_found()
            return session
        tomb = await self.store.tombstone(session_id)
        if tomb is None or not tomb.agent_id or not _owns(principal, tomb.owner_user_id, tomb.owner_org_id):
            raise _session_not_found()
        return wire.ExpiredSession(session_id=session_id, agent_id=tomb.agent_id, created_at=tomb.created_at)

    async def get(self, req: wire.OctavusGetRequest) -> wire.OctavusReply:
        found = await self._session(req.principal, req.session_id)
        if isinstance(found, wire.ExpiredSession):
            return _reply(found)
        return _reply(views.ui_body(found) if req.format == "ui" else views.state_body(found))

    async def restore(self, req: wire.OctavusRestoreRequest) -> wire.OctavusReply:
        found = await self._session(req.principal, req.session_id)
        if isinstance(found, Session):
            return _reply(wire.SessionRestored(session_id=found.id, restored=False))
        snapshot, bundle = await self._agent(req.principal, found.agent_id)
        async with self.store.locked(req.session_id):
            session = _fresh(req.session_id, snapshot, bundle, req.body.input, created_at=found.created_at)
            views.restore_messages(session, req.body.messages)
            await self.store.save(session)
        log.info("octavus.session_restored", session_id=session.id, messages=len(session.messages))
        return _reply(wire.SessionRestored(session_id=session.id, restored=True))

    # --- trigger ----------------------------------------------------------------------------

    async def trigger(self, req: wire.OctavusTriggerRequest) -> wire.OctavusReply:
        found = await self._session(req.principal, req.session_id)
        if isinstance(found, wire.ExpiredSession):
            raise ParleyError(
                Codes.NOT_FOUND,
                "The session expired; restore it (POST /api/agent-sessions/{id}/restore) to go on.",
                params={"resource": "session"},
            )
        stack = contextlib.AsyncExitStack()
        await stack.enter_async_context(self.store.locked(req.session_id))
        try:
            session = await self.store.load(req.session_id)  # as the previous execution left it
            if session is None:
                raise _session_not_found()
            snapshot, bundle = await self._agent(req.principal, session.agent_id)
            plan = make_plan(bundle, session, req.body)
        except BaseException:
            await stack.aclose()
            raise
        task = asyncio.create_task(self._execute(session, snapshot, bundle, plan, req.stream, stack))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return wire.OctavusReply(ok=True, status=200)

    async def _execute(
        self,
        session: Session,
        snapshot: AgentSnapshot,
        bundle: AgentBundle,
        plan: Plan,
        stream: str,
        stack: contextlib.AsyncExitStack,
    ) -> None:
        nc: NatsClient = self.broker.connection
        seq = 0

        async def publish(frame: wire.StreamFrame) -> None:
            await nc.publish(stream, frame.model_dump_json(exclude_none=True).encode())

        async def emit(event: BaseModel) -> None:
            nonlocal seq
            body = event.model_dump(mode="json", by_alias=True, exclude_none=True)
            await publish(wire.StreamFrame(seq=seq, event=body))
            seq += 1

        async def keepalive() -> None:
            while True:
                await asyncio.sleep(self.ping_s)
                await publish(wire.StreamFrame(seq=-1))

        pinger = asyncio.create_task(keepalive())
        engine: SessionEngine[Session, Plan, ev.FinishEvent | None] = ProtocolEngine(
            bundle=bundle, llm=self.llm, secrets=snapshot.secrets, emit=emit
        )
        try:
            finish: BaseModel | None = None
            try:
                finish = await engine.turn(session, plan)
            except Exception:
                log.exception("octavus.execution_failed", session_id=session.id)
                finish = _internal_error()
            # Saved before `finish`: a client that reads the session after it sees this round.
            session.updated_at = now_iso()
            try:
                await self.store.save(session)
            except ParleyError as exc:  # too large: this round is not kept
                finish = ev.ErrorEvent(error_type="execution_error", message=exc.message, code=exc.code.code)
            except OUTAGE_ERRORS as exc:  # Redis stayed away longer than the store waits
                log.warning("octavus.save_unavailable", session_id=session.id, error=describe(exc))
                err = ParleyError(Codes.SERVICE_UNAVAILABLE)
                finish = ev.ErrorEvent(
                    error_type="internal_error", message=err.message, retryable=True, code=err.code.code
                )
            except Exception:
                log.exception("octavus.save_failed", session_id=session.id)
                finish = _internal_error()
            if finish is not None:
                await emit(finish)
        finally:
            try:
                await cancel_and_wait(pinger)
            finally:
                # Unlock first: a client that posts again as soon as its stream ends finds it free.
                try:
                    await stack.aclose()
                finally:
                    with contextlib.suppress(Exception):
                        await publish(wire.StreamFrame(seq=seq, done=True))


def _fresh(
    session_id: str,
    snapshot: AgentSnapshot,
    bundle: AgentBundle,
    given: dict[str, Any] | None,
    *,
    created_at: str,
) -> Session:
    """A session as the protocol starts one: checked input, default resources and variables."""
    protocol = bundle.protocol
    return Session(
        id=session_id,
        agent_id=str(snapshot.agent_id),
        owner_user_id=snapshot.owner_user_id,
        owner_org_id=snapshot.owner_org_id,
        created_at=created_at,
        updated_at=now_iso(),
        input=check_input(protocol.input, given, protocol.types, what="input"),
        resources={n: r.default for n, r in protocol.resources.items()},
        variables={n: v.default for n, v in protocol.variables.items()},
    )


def _internal_error() -> ev.ErrorEvent:
    err = ParleyError(Codes.INTERNAL)
    return ev.ErrorEvent(error_type="internal_error", message=err.message, retryable=True, code=err.code.code)


def make_plan(bundle: AgentBundle, session: Session, body: ev.TriggerBody) -> Plan:
    """Which execution the body asks for, checked: a new trigger, or tool results continuing the
    paused one (a server-side continuation repeats the trigger; a client one has none)."""
    protocol = bundle.protocol
    continuing = bool(body.tool_results) or (body.execution_id is not None and body.trigger_name is None)
    if continuing:
        pending = session.pending
        if pending is None:
            raise ParleyError(Codes.OCTAVUS_NO_PENDING_TOOLS, params={"detail": "no execution is waiting"})
        if body.execution_id is not None and body.execution_id != pending.execution_id:
            raise ParleyError(
                Codes.OCTAVUS_NO_PENDING_TOOLS,
                params={"detail": f"executionId {body.execution_id} is not the paused execution"},
            )
        if body.trigger_name is not None and body.trigger_name != pending.trigger:
            raise ParleyError(
                Codes.OCTAVUS_NO_PENDING_TOOLS,
                params={
                    "detail": f"the paused execution is of trigger {pending.trigger}, not {body.trigger_name}"
                },
            )
        results = {r.tool_call_id: r for r in body.tool_results or []}
        wanted = {c.id for c in pending.calls}
        missing, extra = sorted(wanted - set(results)), sorted(set(results) - wanted)
        if missing or extra:
            detail = f"missing results for {missing}" if missing else f"unknown tool calls {extra}"
            raise ParleyError(Codes.OCTAVUS_NO_PENDING_TOOLS, params={"detail": detail})
        return Plan(trigger=pending.trigger, trigger_input=pending.trigger_input, results=results)
    name = body.trigger_name
    if name is None:
        raise ParleyError(
            Codes.OCTAVUS_INVALID_INPUT,
            params={"detail": "triggerName is required (or toolResults to continue)"},
        )
    trigger = protocol.triggers.get(name)
    if trigger is None or name not in protocol.handlers:
        raise ParleyError(Codes.OCTAVUS_UNKNOWN_TRIGGER, params={"name": name})
    trigger_input = check_input(trigger.input, body.input, protocol.types, what=f"trigger {name} input")
    return Plan(trigger=name, trigger_input=trigger_input)

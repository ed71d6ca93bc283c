"""What the session tests share: a runtime worker's dependencies on a real NATS (the module's own)
and Redis, with the agent and the LLM replaced by fakes, and a client's view of the session's
streams (what it sends to `session.<id>.in`, what it reads from `session.<id>.out`)."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from pydantic import TypeAdapter
from redis.asyncio import Redis

from parley_common import subjects
from parley_common.auth_contract import CredentialKind, Principal
from parley_common.blueprint import Blueprint
from parley_common.bus import BusEvents, make_broker
from parley_common.catalog_contract import AgentConfig, AgentSnapshot, AgentStatus
from parley_common.conversation_contract import (
    ConversationEvent,
    ConversationEventBatch,
    ConversationEventBody,
)
from parley_common.session_contract import (
    InputEnd,
    InputText,
    ServerEvent,
    SessionInput,
    SessionInputEnvelope,
    SessionOutput,
    SessionStart,
    ensure_streams,
    trace_headers,
)
from parley_runtime.agents import AgentCache
from parley_runtime.llm import LLMRegistry
from parley_runtime.llm_port import ChatReuse, LLMPort, OnText
from parley_runtime.sessions.runner import Deps
from parley_runtime.sessions.state import HistoryItem
from parley_runtime.sessions.store import StateStore
from parley_runtime.sessions.worker import OWN_STREAMS
from parley_runtime.settings import RuntimeSettings

AGENT_ID = uuid.uuid4()
_CONVERSATION_BODY: TypeAdapter[ConversationEventBody] = TypeAdapter(ConversationEventBody)


def greeting_then_dialog() -> Blueprint:
    """Greets, then answers every message with the LLM until the client ends the session."""
    return Blueprint.model_validate(
        {
            "entries": [
                {
                    "name": "main",
                    "workflow": {
                        "nodes": [
                            {"id": "s", "type": "CONTROL.START", "data": {"greeting": "Hi"}},
                            {
                                "id": "d",
                                "type": "CONTROL.DIALOG",
                                "data": {"prompt": "Help.", "max_turns": 1000},
                            },
                        ],
                        "edges": [{"source": "s", "target": "d"}],
                    },
                }
            ]
        }
    )


class FixedAgent(AgentCache):
    """Every agent id resolves to one snapshot (no catalog on this bus)."""

    def __init__(self, snapshot: AgentSnapshot, nats_url: str) -> None:
        super().__init__(
            make_broker(RuntimeSettings(nats_url=nats_url), name="fixed-agent"), ttl_s=0, timeout_s=1
        )
        self.snapshot = snapshot

    async def get(self, agent_id: str) -> AgentSnapshot:
        return self.snapshot


class EchoLLM(LLMPort):
    """Answers `You said: <last message>` in two chunks. While `hold` is clear it stops after the
    first chunk until it is set (or the stream is cancelled); while `begin` is clear, before it."""

    def __init__(self) -> None:
        super().__init__(LLMRegistry())
        self.hold = asyncio.Event()
        self.hold.set()
        self.begin = asyncio.Event()
        self.begin.set()
        self.calls: list[tuple[str, list[HistoryItem]]] = []

    async def stream(
        self,
        snapshot: AgentSnapshot,
        system: str,
        history: list[HistoryItem],
        on_text: OnText,
        reuse: ChatReuse | None = None,
    ) -> None:
        self.calls.append((system, list(history)))
        await self.begin.wait()
        await on_text("You said: ")
        await self.hold.wait()
        await on_text(history[-1].content if history else "")


@dataclass
class FakeClaim:
    """The start message a worker would hold (runner tests run a runner without a worker)."""

    deliveries: int = 1
    acks: int = 0

    async def ack(self) -> None:
        self.acks += 1


def session_start(conversation_id: uuid.UUID | None = None) -> SessionStart:
    principal = Principal(kind=CredentialKind.SESSION, credential_id=uuid.uuid4(), user_id=uuid.uuid4())
    return SessionStart(
        conversation_id=conversation_id or uuid.uuid4(),
        agent_id=str(AGENT_ID),
        principal=principal,
        started_at=datetime.now(UTC),
        connection_id="conn-1",
    )


@dataclass
class Conversation:
    """One conversation as the gateway and the catalog see it."""

    conversation_id: uuid.UUID
    out: asyncio.Queue[SessionOutput] = field(default_factory=asyncio.Queue)
    transcript: list[ConversationEvent] = field(default_factory=list)  # the events, in order
    transcript_msgs: list[tuple[dict[str, str], ConversationEventBody]] = field(default_factory=list)

    async def next(self, timeout_s: float = 10) -> ServerEvent:
        return (await asyncio.wait_for(self.out.get(), timeout_s)).event

    async def until(self, kind: str, timeout_s: float = 10) -> list[dict[str, Any]]:
        """Events up to and including the first of type `kind` (as JSON dicts)."""
        seen: list[dict[str, Any]] = []
        while not seen or seen[-1]["type"] != kind:
            seen.append((await self.next(timeout_s)).model_dump(mode="json"))
            assert seen[-1]["type"] != "session_closed" or kind == "session_closed", seen
        return seen


@dataclass
class Stack:
    settings: RuntimeSettings
    nc: Client
    redis: Redis
    llm: EchoLLM
    agents: FixedAgent
    http: httpx.AsyncClient
    subs: list[Any] = field(default_factory=list)
    stores: list[StateStore] = field(default_factory=list)

    def deps(self, token: str | None = None) -> Deps:
        """A worker's dependencies (each worker its own `token`, the fence of session ownership)."""
        store = StateStore.from_settings(self.redis, self.settings)
        self.stores.append(store)
        return Deps(
            settings=self.settings,
            nc=self.nc,
            js=self.nc.jetstream(),
            store=store,
            agents=self.agents,
            http=self.http,
            llm=self.llm,
            token=token or f"test-{secrets.token_hex(4)}",
            events=BusEvents(),
        )

    async def client(self, conversation_id: uuid.UUID) -> Conversation:
        """Reads what the runtime publishes for the conversation (subscribe before it starts)."""
        client = Conversation(conversation_id)
        conv = str(conversation_id)

        async def out(msg: Msg) -> None:
            client.out.put_nowait(SessionOutput.model_validate_json(msg.data))

        async def transcript(msg: Msg) -> None:
            body = _CONVERSATION_BODY.validate_json(msg.data)
            client.transcript_msgs.append((dict(msg.headers or {}), body))
            client.transcript.extend(body.events if isinstance(body, ConversationEventBatch) else [body])

        self.subs.append(await self.nc.subscribe(subjects.session_out(conv), cb=out))
        self.subs.append(await self.nc.subscribe(subjects.conversation_event(conv), cb=transcript))
        return client

    async def send(self, conversation_id: uuid.UUID, item: SessionInput) -> int:
        """Publish an input as the gateway does; returns its SESSION_IN sequence."""
        ack = await self.nc.jetstream().publish(
            subjects.session_in(str(conversation_id)),
            SessionInputEnvelope(input=item).model_dump_json().encode(),
            headers=trace_headers({"Nats-Msg-Id": uuid.uuid4().hex}),
        )
        return ack.seq

    async def say(self, conversation_id: uuid.UUID, text: str) -> int:
        return await self.send(
            conversation_id, InputText(text=text, at=datetime.now(UTC), connection_id="conn-1")
        )

    async def end(self, conversation_id: uuid.UUID) -> int:
        return await self.send(conversation_id, InputEnd(at=datetime.now(UTC), connection_id="conn-1"))


@asynccontextmanager
async def stack(nats_url: str, redis_url: str, **settings: Any) -> AsyncIterator[Stack]:
    config = RuntimeSettings(nats_url=nats_url, redis_url=redis_url, **settings)
    nc = await nats.connect(nats_url)
    await ensure_streams(nc.jetstream(), OWN_STREAMS)
    redis = Redis.from_url(redis_url)
    snapshot = AgentSnapshot(
        agent_id=AGENT_ID,
        version=1,
        status=AgentStatus.LIVE,
        config=AgentConfig(name="echo", global_system_prompt="Be brief."),
        blueprint=greeting_then_dialog(),
    )
    llm = EchoLLM()
    result = Stack(config, nc, redis, llm, FixedAgent(snapshot, nats_url), httpx.AsyncClient())
    try:
        yield result
    finally:
        for sub in result.subs:
            await sub.unsubscribe()
        await result.http.aclose()
        await llm.aclose()
        for store in result.stores:
            await store.aclose()
        await redis.aclose()
        await nc.close()

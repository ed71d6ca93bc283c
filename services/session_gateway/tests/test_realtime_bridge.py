"""The gateway's side of the bus, against a scripted runtime: what it publishes for each client
frame (audio bytes included), how it relays output (audio_delta plus its binary frame), ticks from
the runtime's timing, and a newer connection superseding an older one.

The gateway runs in this process under a real uvicorn server on its own NATS; auth and the catalog
are stand-ins answering their bus subjects, so only the gateway is under test here (the real
services are in tests/e2e/test_realtime.py).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
import pytest
import uvicorn
from nats.aio.client import Client
from nats.aio.msg import Msg
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from parley_common import subjects
from parley_common.auth_contract import CredentialKind, Principal, VerifyReply
from parley_common.catalog_contract import AgentAccessReply, AgentStatus
from parley_common.session_contract import (
    ServerAudioDelta,
    ServerTextFull,
    ServerTurnComplete,
    SessionControl,
    SessionInputEnvelope,
    SessionOutput,
    SessionStart,
    SessionTiming,
)
from parley_devstack.servers import NatsServer, free_port
from parley_session_gateway.app import build_app
from parley_session_gateway.settings import GatewaySettings

AGENT = str(uuid.uuid4())
USER = uuid.uuid4()


class Runtime:
    """Stands in for auth, the catalog and a runtime worker on the gateway's NATS."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.starts: asyncio.Queue[SessionStart] = asyncio.Queue()
        self.inputs: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.index: dict[str, int] = {}

    async def start(self) -> None:
        async def verify(msg: Msg) -> None:
            principal = Principal(kind=CredentialKind.SESSION, credential_id=uuid.uuid4(), user_id=USER)
            await msg.respond(VerifyReply(ok=True, principal=principal).model_dump_json().encode())

        async def access(msg: Msg) -> None:
            reply = AgentAccessReply(ok=True, agent_id=AGENT, status=AgentStatus.LIVE, version=1)
            await msg.respond(reply.model_dump_json().encode())

        await self.nc.subscribe(subjects.AUTH_VERIFY, cb=verify)
        await self.nc.subscribe(subjects.CATALOG_AGENT_ACCESS, cb=access)

        async def start(msg: Msg) -> None:
            await self.starts.put(SessionStart.model_validate_json(msg.data))
            await msg.ack()

        async def inputs(msg: Msg) -> None:
            envelope = SessionInputEnvelope.model_validate_json(msg.data)
            await self.inputs.put(envelope.input.model_dump(mode="python"))

        await self.js.subscribe(
            subjects.SESSION_START, stream=subjects.SESSIONS_STREAM, cb=start, manual_ack=True
        )
        await self.js.subscribe("session.*.in", stream=subjects.SESSION_IN_STREAM, cb=inputs)

    async def emit(self, conversation: str, event: Any, remaining_s: float | None = None) -> None:
        """The next output; with `remaining_s`, it carries the session's timing (a turn's first
        output, and its end, do)."""
        self.index[conversation] = self.index.get(conversation, 0) + 1
        timing = None
        if remaining_s is not None:
            now = datetime.now(UTC)
            timing = SessionTiming(
                started_at=now - timedelta(seconds=5), deadline_at=now + timedelta(seconds=remaining_s)
            )
        out = SessionOutput(index=self.index[conversation], event=event, timing=timing)
        await self.js.publish(subjects.session_out(conversation), out.model_dump_json().encode())

    async def output_consumers(self, conversation: str) -> list[str]:
        """The JetStream consumers reading this conversation's output."""
        subject = subjects.session_out(conversation)
        consumers = await self.js.consumers_info(subjects.SESSION_OUT_STREAM)
        return [c.name for c in consumers if c.config.filter_subject == subject]

    async def timing(
        self, conversation: str, connection_id: str, remaining_s: float, *, index: int | None = None
    ) -> None:
        now = datetime.now(UTC)
        control = SessionControl(
            started_at=now - timedelta(seconds=5),
            deadline_at=now + timedelta(seconds=remaining_s),
            connection_id=connection_id,
            index=index,
        )
        await self.nc.publish(subjects.session_ctl(conversation), control.model_dump_json().encode())

    async def next_input(self, kind: str) -> dict[str, Any]:
        while True:
            item = await asyncio.wait_for(self.inputs.get(), 10)
            if item["type"] == kind:
                return item


@pytest.fixture(scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory, infra: Any) -> AsyncIterator[tuple[str, Runtime]]:
    nats_server = NatsServer(tmp_path_factory.mktemp("gw-nats"))
    nats_server.start()
    await asyncio.to_thread(nats_server.wait_ready, 30)
    port = free_port()
    settings = GatewaySettings(
        nats_url=nats_server.url,
        redis_url=infra.redis_url,
        database_url=infra.database_url,
        log_json=False,
        gateway_tick_interval_s=0.1,
        gateway_speech_open_timeout_s=0.3,
        gateway_speech_open_attempts=1,
    )
    app = build_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    serving = asyncio.create_task(server.serve())
    nc = await nats.connect(nats_server.url)
    try:
        while not server.started:
            assert not serving.done(), "the gateway did not start"
            await asyncio.sleep(0.02)
        runtime = Runtime(nc)
        await runtime.start()
        yield f"ws://127.0.0.1:{port}/realtime?token=anything", runtime
    finally:
        await nc.close()
        server.should_exit = True
        await serving
        await asyncio.to_thread(nats_server.stop)


async def handshake(url: str) -> tuple[Any, str]:
    ws = await connect(url)
    await ws.send(json.dumps({"type": "handshake", "agent_id": AGENT, "channel": "web-voice"}))
    reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert reply["type"] == "handshake_ok", reply
    # A voice channel: the formats are announced first.
    announced = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert (announced["type"], announced["name"]) == ("signal", "audio_format"), announced
    return ws, reply["conversation_id"]


async def test_frames_become_inputs_and_audio_travels_both_ways(gateway: tuple[str, Runtime]) -> None:
    url, runtime = gateway
    ws, conversation = await handshake(url)
    try:
        start = await asyncio.wait_for(runtime.starts.get(), 10)
        assert (str(start.conversation_id), start.agent_id, start.channel) == (
            conversation,
            AGENT,
            "web-voice",
        )
        assert start.principal.user_id == USER

        await ws.send(json.dumps({"type": "input_text", "text": "hello"}))
        assert (await runtime.next_input("input_text"))["text"] == "hello"
        # Audio goes to the speech workers, not the runtime; with none running, a clear error
        # (the session goes on).
        await ws.send(json.dumps({"type": "input_audio_stream"}))
        await ws.send(b"\x01\x02")
        error = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert error["code"] == "realtime.speech_unavailable", error
        # The agent's audio, published by speech workers on the session's core subject.
        await runtime.nc.publish(
            subjects.session_audio_out(conversation),
            b"\x07\x08",
            headers={"Parley-Stream": "s1", "Parley-Seq": "0"},
        )
        await runtime.nc.publish(  # a duplicate: dropped
            subjects.session_audio_out(conversation),
            b"\x07\x08",
            headers={"Parley-Stream": "s1", "Parley-Seq": "0"},
        )
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "audio_delta", "size": 2}
        assert await asyncio.wait_for(ws.recv(), 5) == b"\x07\x08"
        # `cancel` goes to the runtime; the agent's audio is not relayed until the turn has ended.
        await ws.send(json.dumps({"type": "cancel"}))
        assert (await runtime.next_input("cancel"))["type"] == "cancel"

        # Output: in order, audio as its JSON header then exactly its bytes.
        await runtime.emit(conversation, ServerTextFull(content="hi"))
        await runtime.emit(conversation, ServerAudioDelta(size=4, audio=b"\x00\x01\x02\x03"))
        assert json.loads(await ws.recv()) == {"type": "text_full", "content": "hi"}
        assert json.loads(await ws.recv()) == {"type": "audio_delta", "size": 4}
        assert await ws.recv() == b"\x00\x01\x02\x03"
        # A new session's output comes over core NATS: no JetStream consumer reads it.
        assert await runtime.output_consumers(conversation) == []

        # Ticks come from the runtime's timing, every tick interval.
        await runtime.timing(conversation, start.connection_id, remaining_s=30)
        ticks: list[Any] = []
        while len(ticks) < 2:
            event = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert event["type"] == "tick", event
            ticks.append(event)
        assert all(25_000 < t["remaining_ms"] <= 30_000 and 5_000 <= t["elapsed_ms"] < 10_000 for t in ticks)
    finally:
        await ws.close()
    # The socket went away without `end`: the runtime is told, so it can wait for a reconnect.
    assert (await runtime.next_input("disconnected"))["connection_id"] == start.connection_id


async def test_a_resumed_connection_supersedes_the_old_one(gateway: tuple[str, Runtime]) -> None:
    url, runtime = gateway
    old, conversation = await handshake(url)
    start = await asyncio.wait_for(runtime.starts.get(), 10)
    await runtime.timing(conversation, start.connection_id, remaining_s=30)  # the runtime knows `old`
    await runtime.emit(conversation, ServerTextFull(content="one"))
    await runtime.emit(conversation, ServerTextFull(content="two"))
    assert json.loads(await old.recv())["content"] == "one"

    new = await connect(f"{url}&resume={conversation}&last_event=1")
    await new.send(json.dumps({"type": "handshake", "agent_id": AGENT}))
    assert json.loads(await asyncio.wait_for(new.recv(), 10)) == {
        "type": "handshake_ok",
        "conversation_id": conversation,
    }
    # Only what the client had not seen.
    assert json.loads(await asyncio.wait_for(new.recv(), 10)) == {"type": "text_full", "content": "two"}
    connected = await runtime.next_input("connected")
    await runtime.timing(conversation, connected["connection_id"], remaining_s=30)
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(old.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4409
    await new.close()


async def test_ticks_follow_the_timing_a_turns_outputs_carry(gateway: tuple[str, Runtime]) -> None:
    """A turn publishes no control message: its first output carries the busy timing and its
    `turn_complete` the waiting one, and the ticks follow them."""
    url, runtime = gateway
    ws, conversation = await handshake(url)

    async def tick(remaining: tuple[float, float]) -> None:
        async def seen() -> None:
            while True:
                event = json.loads(await ws.recv())
                if event["type"] == "tick" and remaining[0] < event["remaining_ms"] / 1000 <= remaining[1]:
                    return

        await asyncio.wait_for(seen(), 5)

    try:
        start = await asyncio.wait_for(runtime.starts.get(), 10)
        await runtime.timing(conversation, start.connection_id, remaining_s=30, index=0)  # the claim
        await tick((25, 30))
        await runtime.emit(conversation, ServerTextFull(content="hi"), remaining_s=3600)
        await tick((3590, 3600))
        await runtime.emit(conversation, ServerTurnComplete(), remaining_s=60)
        await tick((55, 60))
    finally:
        await ws.close()

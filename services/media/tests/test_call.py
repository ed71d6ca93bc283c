"""A media worker's calls against a fake `/realtime` and a real aiortc client peer (ICE on this
machine's host candidates, DTLS, SRTP, SCTP: the whole WebRTC stack, in one process)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

import pytest
from opentelemetry import trace
from pydantic import SecretStr
from structlog.testing import capture_logs

from parley_common.errors import ParleyError
from parley_common.media_contract import MediaOfferRequest
from parley_common.settings import CommonSettings
from parley_common.telemetry import setup_telemetry
from parley_media.client import ClientPeer
from parley_media.service import MediaService
from parley_media.settings import MediaSettings

from .fakes import FakeRealtime, rms

TOKEN = "tok_secret_value_for_this_call_only"


@pytest.fixture
async def fake() -> AsyncIterator[FakeRealtime]:
    async with FakeRealtime().running() as server:
        yield server


def service_for(fake: FakeRealtime, **overrides: object) -> MediaService:
    values: dict[str, object] = {"media_gateway_url": fake.url, "media_connect_timeout_s": 10, **overrides}
    return MediaService(MediaSettings(**values))  # type: ignore[arg-type]


def offer_request(sdp: str, agent_id: str = "agent-1") -> MediaOfferRequest:
    return MediaOfferRequest(sdp=sdp, agent_id=agent_id, token=SecretStr(TOKEN))


async def until(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def connect(service: MediaService) -> tuple[ClientPeer, str]:
    client = ClientPeer()
    reply = await service.answer(offer_request(await client.offer()))
    assert reply.ok and reply.sdp and reply.conversation_id == "conv-1"
    await client.accept(reply.sdp)
    return client, reply.sdp


@contextlib.asynccontextmanager
async def in_call(fake: FakeRealtime, **overrides: object) -> AsyncIterator[tuple[MediaService, ClientPeer]]:
    """A worker with one call answered and connected, its greeting turn complete; the client
    peer closed at the end."""
    service = service_for(fake, **overrides)
    client, _ = await connect(service)
    try:
        await client.wait_event("turn_complete")
        yield service, client
    finally:
        await client.close()


async def test_a_client_waiting_for_an_event_stops_when_cancelled_as_one_comes() -> None:
    """On Python 3.11 `asyncio.wait_for` swallowed a cancel that landed as its wait ended: a
    `wait_event` cancelled as another event arrived waited on until its own timeout."""
    client = ClientPeer()
    await client.offer()
    assert client.channel is not None
    waiting = asyncio.create_task(client.wait_event("turn_complete"))
    try:
        for _ in range(5):  # into its wait
            await asyncio.sleep(0)
        client.channel.emit("message", json.dumps({"type": "text_delta"}))  # an event arrives ...
        waiting.cancel()  # ... as the wait is cancelled
        done, _ = await asyncio.wait({waiting}, timeout=2)
        assert done, "wait_event ran on after it was cancelled"
        assert waiting.cancelled()
    finally:
        waiting.cancel()
        await client.close()


async def test_a_call_bridges_audio_both_ways_and_events_on_the_data_channel(fake: FakeRealtime) -> None:
    service = service_for(fake)
    with capture_logs() as logs:
        client, answer = await connect(service)
        try:
            # The session was opened as a Kivox voice client, with the token as a bearer header.
            assert fake.handshakes == [{"type": "handshake", "agent_id": "agent-1", "channel": "web-voice"}]
            assert fake.auth_headers == [f"Bearer {TOKEN}"]
            assert "a=setup:" in answer and "opus/48000" in answer.lower()

            ready = await client.wait_event("ready")
            assert ready == {
                "type": "ready",
                "conversation_id": "conv-1",
                "input": "pcm16/16000",
                "output": "pcm16/24000",
            }
            # Events sent before the data channel opened arrive after `ready`, in order.
            await client.wait_event("turn_complete")
            kinds = [e["type"] for e in client.events]
            assert kinds[:4] == ["ready", "signal", "text_full", "turn_complete"]
            assert "audio_delta" not in kinds

            # The microphone reaches /realtime as 20 ms PCM16 16 kHz chunks, each announced.
            await until(lambda: len(fake.audio_chunks) >= 25)
            assert {len(c) for c in fake.audio_chunks} == {640}
            assert fake.unannounced_binary == 0
            assert max(rms(c) for c in fake.audio_chunks[5:]) > 1000  # the tone, not silence

            # The greeting's audio comes back on the outgoing track.
            await until(lambda: rms(bytes(client.heard)) > 300, timeout=10)

            client.send({"type": "input_text", "text": "hi there"})
            delta = await client.wait_event("text_delta")
            assert delta["chunk"] == "You said hi there"

            client.send({"type": "end"})
            closed = await client.wait_event("session_closed")
            assert closed["reason"] == "client_end"
            await until(lambda: not service.calls)
            assert {"type": "end"} in fake.received
        finally:
            await client.close()
    # The token is a credential: never in a log line.
    assert all(TOKEN not in json.dumps(entry, default=str) for entry in logs)
    assert any(entry["event"] == "media.call_ended" for entry in logs)


async def test_a_refused_handshake_is_the_offer_s_error_and_nothing_stays_open() -> None:
    async with FakeRealtime(refuse="realtime.token_scope_mismatch").running() as fake:
        service = service_for(fake)
        client = ClientPeer()
        try:
            with pytest.raises(ParleyError) as caught:
                await service.answer(offer_request(await client.offer(), agent_id="someone-elses"))
            assert caught.value.code.code == "realtime.token_scope_mismatch"
            assert service.calls == {} and service.starting == 0
            await asyncio.wait_for(fake.closed.wait(), 5)
        finally:
            await client.close()


async def test_an_unreachable_gateway_is_media_unavailable() -> None:
    settings = MediaSettings(media_gateway_url="ws://127.0.0.1:1/realtime", media_handshake_timeout_s=2)
    service = MediaService(settings)
    client = ClientPeer()
    try:
        with pytest.raises(ParleyError) as caught:
            await service.answer(offer_request(await client.offer()))
        assert caught.value.code.code == "webrtc.media_unavailable"
        assert service.calls == {}
    finally:
        await client.close()


async def test_data_channel_messages_are_checked_and_forwarded(fake: FakeRealtime) -> None:
    async with in_call(fake) as (service, client):
        client.send("not json")
        client.send({"type": "dance"})
        client.send({"type": "input_text", "text": ""})
        client.send({"type": "input_text", "text": 5})
        client.send(["a list"])  # type: ignore[arg-type]
        await until(lambda: sum(e["type"] == "error" for e in client.events) >= 5)
        codes = [e["code"] for e in client.events if e["type"] == "error"]
        assert codes == [
            "realtime.invalid_json",
            "realtime.unknown_type",
            "realtime.invalid_frame",
            "realtime.invalid_frame",
            "realtime.invalid_json",
        ]
        client.send({"type": "cancel"})
        await until(lambda: {"type": "cancel"} in fake.received)
        # Bad messages were not forwarded; the call goes on.
        assert [e["type"] for e in fake.received] == ["cancel"]
        assert service.calls
    await until(lambda: not service.calls)


async def test_data_channel_messages_beyond_the_rate_are_refused(fake: FakeRealtime) -> None:
    async with in_call(fake, media_dc_rate_per_s=1) as (_, client):  # a burst of 2, then 1 a second
        for _ in range(4):
            client.send({"type": "cancel"})
        await until(lambda: sum(e["type"] == "error" for e in client.events) >= 2)
        errors = [e for e in client.events if e["type"] == "error"]
        assert [e["code"] for e in errors] == ["realtime.rate_limited"] * 2
        await until(lambda: len(fake.received) >= 2)
        assert [e["type"] for e in fake.received] == ["cancel", "cancel"]


async def test_hanging_up_ends_the_session(fake: FakeRealtime) -> None:
    async with in_call(fake) as (service, _):
        pass  # the client hangs up
    await until(lambda: {"type": "end"} in fake.received)
    await until(lambda: not service.calls)


async def test_a_lost_socket_is_told_on_the_data_channel_and_closes_the_peer(fake: FakeRealtime) -> None:
    async with in_call(fake) as (service, client):
        await fake.drop_all()
        error = await client.wait_event("error")
        assert error["code"] == "webrtc.media_lost"
        await asyncio.wait_for(client.channel_closed.wait(), 10)
        await until(lambda: not service.calls)
        assert {"type": "end"} not in fake.received


async def test_barge_in_drops_the_agent_s_queued_audio(fake: FakeRealtime) -> None:
    fake.greeting_audio_ms = 20_000
    async with in_call(fake) as (service, client):
        (call,) = service.calls.values()
        await until(lambda: call.playout.queued_ms > 10_000)
        call._relay(json.dumps({"type": "signal", "name": "barge_in", "data": {}}))
        assert call.playout.queued_ms == 0
        assert (await client.wait_event("signal", name="barge_in"))["type"] == "signal"


async def test_a_peer_that_never_connects_is_given_up(fake: FakeRealtime) -> None:
    service = service_for(fake, media_connect_timeout_s=1)
    client = ClientPeer()
    try:
        reply = await service.answer(offer_request(await client.offer()))
        assert reply.ok  # ...but the answer is never applied: no ICE, no DTLS
        await until(lambda: {"type": "end"} in fake.received, timeout=5)
        await until(lambda: not service.calls)
    finally:
        await client.close()


async def test_a_full_worker_refuses_more_calls(fake: FakeRealtime) -> None:
    async with in_call(fake, media_max_peers=1) as (service, _):
        other = ClientPeer()
        try:
            with pytest.raises(ParleyError) as caught:
                await service.answer(offer_request(await other.offer()))
            assert caught.value.code.code == "webrtc.media_unavailable"
            assert len(fake.handshakes) == 1
        finally:
            await other.close()
    await until(lambda: not service.calls)


async def test_shutdown_tells_every_call_and_ends_it(fake: FakeRealtime) -> None:
    async with in_call(fake) as (service, client):
        await service.stop()
        assert not service.calls
        error = await client.wait_event("error")
        assert error["code"] == "webrtc.media_lost"
        assert {"type": "end"} in fake.received  # the conversation ends with the call
        await client.wait_event("session_closed")
        kinds = [e["type"] for e in client.events]
        assert kinds.index("error") < kinds.index("session_closed")  # told why first


async def test_the_call_s_socket_continues_the_offer_s_trace(fake: FakeRealtime) -> None:
    setup_telemetry(CommonSettings())
    service = service_for(fake)
    client = ClientPeer()
    try:
        with trace.get_tracer("test").start_as_current_span("offer") as offer:
            reply = await service.answer(offer_request(await client.offer()))
        assert reply.ok
        (traceparent,) = fake.traceparents
        assert traceparent is not None
        assert traceparent.split("-")[1] == format(offer.get_span_context().trace_id, "032x")
    finally:
        await service.stop()
        await client.close()

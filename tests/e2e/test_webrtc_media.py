# One piece (~530 lines): every call shares one module-scoped `parley run` (media and speech workers
# included, most of a minute to start) and the aiortc caller helpers above; split, each part would
# start its own.
"""WebRTC calls end to end: `parley run` (what `make run` starts: a speech worker and a media
worker included) and an aiortc client doing what a browser page does, through the edge:

realtime-token → csrf-token → offer → answer → ICE/DTLS on this machine's host candidates → the
data channel's `ready`, the greeting (text, and its voice on the track) → a question spoken by
espeak-ng into the microphone track → its transcript, the agent's answer in text and in voice
(transcribed back with whisper) → a typed message → `end` → the conversation persisted like any
other. Then the refusals (another tenant's agent, over HTTP and straight on the bus) and the faults
(a media worker killed under a call).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nats
import numpy as np
import pytest
from pydantic import SecretStr
from redis.asyncio import Redis
from tests.e2e.harness.parley_run import parley_run

from parley_common import subjects
from parley_common.chatty_contract import AGENT_HEADER, CSRF_HEADER
from parley_common.media_contract import MediaOfferReply, MediaOfferRequest
from parley_media.client import RATE, ClientPeer, PcmTrack
from parley_speech.audio.formats import float_to_pcm16

from .voice_support import Voices, words

ACK_WAIT_S = 2.0  # a dead runtime worker's sessions move to the other one after this
PACE_MS = 20
QUESTION = "What is the weather in Paris today?"
# Long enough for the recognizer to hear it in context: a call once heard "Hello, caller." alone
# as "hello color". The greeting's check asks for most of its words, not each one.
GREETING = "Hello, caller. How can I help you?"
GREETING_WORDS = {"hello", "caller", "how", "help"}

AGENT = {
    "config": {"name": "Voice desk"},
    "blueprint": {
        "entries": [
            {
                "name": "main",
                "workflow": {
                    "nodes": [
                        {"id": "start", "type": "CONTROL.START", "data": {"greeting": GREETING}},
                        {"id": "chat", "type": "CONTROL.DIALOG", "data": {"max_turns": 20}},
                        {"id": "end", "type": "CONTROL.END", "data": {}},
                    ],
                    "edges": [{"source": "start", "target": "chat"}, {"source": "chat", "target": "end"}],
                },
            }
        ]
    },
}


@dataclass
class Parley:
    url: str
    home: Path

    def run_state(self) -> dict[str, Any]:
        state: dict[str, Any] = json.loads((self.home / ".parley" / "run.json").read_text())
        return state


def _infra_url(home: Path, scheme: str) -> str:
    """A server `parley run` started (its summary's `infra` line: NATS, Redis, PostgreSQL URLs)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for line in (home / "parley.out").read_text(errors="replace").splitlines():
            if line.strip().startswith("infra"):
                urls = [u for u in line.split()[1:] if u.startswith(f"{scheme}://")]
                if urls:
                    return urls[0]
        time.sleep(0.2)
    raise AssertionError(f"parley run did not print its {scheme} URL")


def _nats_url(home: Path) -> str:
    return _infra_url(home, "nats")


@pytest.fixture(scope="module")
def parley() -> Iterator[Parley]:
    env = dict(
        # Two runtime workers, and a dead one's sessions move on quickly (the worker-kill test).
        PARLEY_RUNTIME_CLAIM_ACK_WAIT_S=str(ACK_WAIT_S),
        PARLEY_RUNTIME_RECONNECT_GRACE_S="1.5",
        PARLEY_SPEECH_WORKERS="1",
        PARLEY_SPEECH_TTS_PROCESSES="1",
        PARLEY_MEDIA_WORKERS="1",
        PARLEY_RUNTIME_BUILTIN_PACE_MS=str(PACE_MS),
        # Each test makes a few offers from this one address.
        PARLEY_GATEWAY_RATE_WEBRTC_IP="1000/minute",
        PARLEY_AUTH_RATE_SIGNUP_IP="1000/minute",  # a caller per test, all from this address
    )
    with parley_run("parley-webrtc-", ["--workers", "2"], env) as (url, home):
        yield Parley(url, home)


@dataclass
class Caller:
    http: httpx.AsyncClient
    agent_id: str


@pytest.fixture
async def caller(parley: Parley) -> AsyncIterator[Caller]:
    async with httpx.AsyncClient(base_url=parley.url, timeout=20) as http:
        yield Caller(http, await signup_with_agent(http))


async def signup_with_agent(http: httpx.AsyncClient) -> str:
    resp = await http.post(
        "/auth/signup",
        json={
            "email": f"rtc-{uuid.uuid4().hex[:10]}@example.com",
            "password": "a long password",
            "name": "R",
        },
    )
    assert resp.status_code == 201, resp.text
    made = await http.post("/users/me/agents", json=AGENT)
    assert made.status_code == 201, made.text
    agent_id = str(made.json()["id"])
    live = await http.patch(f"/agents/{agent_id}/status", json={"status": "live"})
    assert live.status_code == 200, live.text
    return agent_id


async def call(caller: Caller, peer: ClientPeer, mic: Any = None) -> httpx.Response:
    """The ServiceAi client's flow: a realtime token for the agent, then with it as the bearer
    credential a CSRF token and the offer."""
    minted = await caller.http.post("/api/realtime-token", headers={AGENT_HEADER: caller.agent_id}, json={})
    assert minted.status_code == 200, minted.text
    body = minted.json()
    assert body["useWebRTC"] is True and body["fallback"] is False, body
    bearer = {"Authorization": f"Bearer {body['clientSecret']}"}
    csrf = await caller.http.get("/api/csrf-token", headers=bearer)
    assert csrf.status_code == 200, csrf.text
    sdp = await peer.offer(mic)
    return await caller.http.post(
        "/api/realtime/webrtc",
        headers={**bearer, CSRF_HEADER: csrf.json()["token"]},
        json={"sdp": sdp},
    )


async def until(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not met in time"
        await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
async def voices() -> AsyncIterator[Voices]:
    v = Voices()
    await v.start()
    yield v
    await v.close()


def final_transcripts(peer: ClientPeer) -> list[str]:
    return [
        e["data"]["text"]
        for e in peer.find("signal", name="transcript")
        if isinstance(e.get("data"), dict) and e["data"].get("final")
    ]


def level(pcm: bytes | bytearray) -> float:
    samples = np.frombuffer(bytes(pcm), dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0


async def played_out(peer: ClientPeer, since: int, timeout: float = 20.0) -> bytes:
    """The agent's audio heard since byte `since`, once it has started and gone quiet again."""
    window = RATE * 2 // 2  # 0.5 s
    deadline = time.monotonic() + timeout
    started = False
    while time.monotonic() < deadline:
        tail = peer.heard[-window:]
        if len(peer.heard) - since > window and level(peer.heard[since:]) > 200:
            started = True
        if started and level(tail) < 50:
            return bytes(peer.heard[since:])
        await asyncio.sleep(0.1)
    raise AssertionError("the agent's audio did not play out")


async def test_a_spoken_question_is_answered_over_webrtc(caller: Caller, voices: Voices) -> None:
    question = float_to_pcm16(await voices.speak(QUESTION, RATE)).tobytes()
    mic = PcmTrack()  # silent until the greeting has been heard
    peer = ClientPeer()
    try:
        resp = await call(caller, peer, mic)
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"].startswith("application/sdp")
        await peer.accept(resp.text)

        ready = await peer.wait_event("ready", timeout=15)
        assert ready["input"] == "pcm16/16000" and ready["output"] == "pcm16/24000", ready
        conversation_id = ready["conversation_id"]
        assert (await peer.wait_event("text_full"))["content"] == GREETING
        await peer.wait_event("turn_complete", timeout=15)
        await peer.wait_event("tick")  # the session's clock reaches the page too
        greeting = await played_out(peer, 0)
        heard = await voices.words_in(greeting, rate=RATE)
        assert len(GREETING_WORDS & heard) >= 3, heard

        # The question, spoken into the microphone at real-time pace.
        mark = len(peer.heard)
        mic.say(question + bytes(RATE * 2))
        await until(lambda: final_transcripts(peer), timeout=20, what="the question's transcript")
        said = final_transcripts(peer)[0]
        assert {"weather", "paris"} <= words(said), said
        await until(lambda: len(peer.find("turn_complete")) >= 2, timeout=20, what="the answer's turn")
        answer = "".join(e["chunk"] for e in peer.find("text_delta"))
        assert answer == f'You said: "{said}".', answer
        assert {"weather", "paris"} <= await voices.words_in(await played_out(peer, mark), rate=RATE)
        assert peer.find("signal", name="speech_started") and not peer.find("error"), peer.events

        # Typed text works on the same call.
        peer.send({"type": "input_text", "text": "and tomorrow"})
        await until(lambda: len(peer.find("turn_complete")) >= 3, timeout=20, what="the typed turn")

        peer.send({"type": "end"})
        closed = await peer.wait_event("session_closed")
        assert closed["reason"] == "client_end"
        await asyncio.wait_for(peer.channel_closed.wait(), 10)
    finally:
        await peer.close()

    # An ordinary conversation: its transcript persisted, the spoken turn as its words.
    deadline = time.monotonic() + 10
    while True:
        resp = await caller.http.get(f"/conversations/{conversation_id}/messages", params={"limit": 100})
        assert resp.status_code == 200, resp.text
        contents = [m["content"] for m in resp.json()["items"]]
        if "and tomorrow" in contents:
            break
        assert time.monotonic() < deadline, contents
        await asyncio.sleep(0.2)
    assert contents[0] == GREETING and said in contents, contents


LONG = " ".join(f"word{i}" for i in range(30))  # spoken for ~10 s


async def test_talking_over_the_agent_interrupts_it(caller: Caller, voices: Voices) -> None:
    """Barge-in as on the WebSocket: the user's speech stops the agent's voice on the track at once
    (what was queued for playout is dropped), and the user's question is answered."""
    question = float_to_pcm16(await voices.speak(QUESTION, RATE)).tobytes()
    mic = PcmTrack()
    peer = ClientPeer()
    try:
        resp = await call(caller, peer, mic)
        assert resp.status_code == 200, resp.text
        await peer.accept(resp.text)
        await peer.wait_event("turn_complete", timeout=15)
        await played_out(peer, 0)
        peer.send({"type": "input_text", "text": LONG})
        mark = len(peer.heard)
        await until(lambda: len(peer.heard) - mark > RATE * 2 * 2, timeout=15, what="2 s of the answer")
        assert level(peer.heard[-RATE:]) > 200  # the agent is speaking
        mic.say(question + bytes(RATE * 2))
        await peer.wait_event("signal", name="barge_in", timeout=15)
        stopped_at = len(peer.heard)
        await asyncio.sleep(1.0)
        # What was in flight (jitter buffer, a packet or two) may still play; then silence until
        # the answer to the question.
        after = peer.heard[stopped_at + RATE * 2 * 4 // 10 : stopped_at + RATE * 2]
        assert level(after) < 50, level(after)
        await until(lambda: final_transcripts(peer), timeout=20, what="the question's transcript")
        assert {"weather", "paris"} <= words(final_transcripts(peer)[0])
        await until(lambda: len(peer.find("turn_complete")) >= 3, timeout=20, what="the question's answer")
        answered = "".join(e["chunk"] for e in peer.find("text_delta"))
        assert answered.endswith(f'You said: "{final_transcripts(peer)[0]}".'), answered
    finally:
        await peer.close()


async def test_signing_out_ends_the_call(parley: Parley) -> None:
    """The call's token is rooted in the caller's session: logging out revokes it, and the call is
    told and closed like any socket of that credential."""
    async with httpx.AsyncClient(base_url=parley.url, timeout=20) as http:
        caller = Caller(http, await signup_with_agent(http))
        peer = ClientPeer()
        try:
            # Signed in on a page: the cookie, naming the agent.
            headers = {AGENT_HEADER: caller.agent_id}
            csrf = (await http.get("/api/csrf-token", headers=headers)).json()["token"]
            resp = await http.post(
                "/api/realtime/webrtc",
                headers={**headers, CSRF_HEADER: csrf},
                json={"sdp": await peer.offer(PcmTrack())},
            )
            assert resp.status_code == 200, resp.text
            await peer.accept(resp.text)
            await peer.wait_event("turn_complete", timeout=15)
            out = await http.delete("/auth/sessions/me")
            assert out.status_code == 204, out.text
            error = await peer.wait_event("error", code="auth.credential_revoked", timeout=10)
            assert error["message"]
            closed = await peer.wait_event("session_closed", timeout=10)
            assert closed["reason"] == "user_exit"
            await asyncio.wait_for(peer.channel_closed.wait(), 10)
        finally:
            await peer.close()


async def test_another_tenant_s_agent_is_refused(parley: Parley, caller: Caller) -> None:
    async with httpx.AsyncClient(base_url=parley.url, timeout=20) as other_http:
        other_agent = await signup_with_agent(other_http)
        # Drafts are private: make it not live, so only its owner may talk to it.
        await other_http.patch(f"/agents/{other_agent}/status", json={"status": "draft"})
    peer = ClientPeer()
    try:
        headers = {AGENT_HEADER: other_agent}
        csrf = await caller.http.get("/api/csrf-token", headers=headers)
        assert csrf.status_code == 403 and csrf.json()["code"] == "chatty.not_entitled", csrf.text
        mine = await caller.http.get("/api/csrf-token", headers={AGENT_HEADER: caller.agent_id})
        resp = await caller.http.post(
            "/api/realtime/webrtc",
            headers={**headers, CSRF_HEADER: mine.json()["token"]},
            json={"sdp": await peer.offer()},
        )
        assert resp.status_code == 403 and resp.json()["code"] == "chatty.not_entitled", resp.text
    finally:
        await peer.close()


async def test_the_bus_subject_grants_nothing_by_itself(parley: Parley, caller: Caller) -> None:
    """Whoever can publish on `media.webrtc.offer` still needs a token of the agent: a token of
    one agent does not open another's session, and a forged token opens nothing."""
    async with httpx.AsyncClient(base_url=parley.url, timeout=20) as other_http:
        other_agent = await signup_with_agent(other_http)
    minted = await caller.http.post("/api/realtime-token", headers={AGENT_HEADER: caller.agent_id}, json={})
    token = minted.json()["clientSecret"]
    bus = await nats.connect(_nats_url(parley.home))
    try:
        for agent_id, credential, code in [
            (other_agent, token, "realtime.token_scope_mismatch"),
            (caller.agent_id, "forged." + token[7:], "auth.unauthenticated"),
        ]:
            peer = ClientPeer()
            try:
                request = MediaOfferRequest(
                    sdp=await peer.offer(), agent_id=agent_id, token=SecretStr(credential)
                )
                msg = await bus.request(
                    subjects.MEDIA_WEBRTC_OFFER, request.model_dump_json().encode(), timeout=15
                )
            finally:
                await peer.close()
            reply = MediaOfferReply.model_validate_json(msg.data)
            assert not reply.ok and reply.sdp is None
            assert reply.error is not None and reply.error.code == code, reply
    finally:
        await bus.close()


# ------------------------------------------------------------------------------------------ faults


def media_pid(parley: Parley) -> int:
    return int(parley.run_state()["processes"]["media-1"]["pid"])


async def connected_call(caller: Caller) -> tuple[ClientPeer, str]:
    peer = ClientPeer()
    resp = await call(caller, peer, PcmTrack())
    assert resp.status_code == 200, resp.text
    await peer.accept(resp.text)
    conversation_id = (await peer.wait_event("ready", timeout=15))["conversation_id"]
    await peer.wait_event("turn_complete", timeout=15)
    peer.send({"type": "input_text", "text": "first question"})
    await until(lambda: len(peer.find("turn_complete")) >= 2, timeout=15, what="the typed turn")
    return peer, conversation_id


async def messages(caller: Caller, conversation_id: str) -> list[tuple[str, str]]:
    resp = await caller.http.get(f"/conversations/{conversation_id}/messages", params={"limit": 100})
    assert resp.status_code == 200, resp.text
    return [(m["role"], m["content"]) for m in resp.json()["items"]]


async def worker_back(parley: Parley, old_pid: int) -> None:
    """The supervisor restarted the media worker and it takes offers again."""
    await until(lambda: media_pid(parley) != old_pid, timeout=20, what="the media worker's restart")
    await until(
        lambda: httpx.get(f"{parley.url}/readyz", timeout=2).status_code == 200,
        timeout=30,
        what="the stack ready again",
    )


async def test_a_media_worker_stopped_under_a_call_says_so(parley: Parley, caller: Caller) -> None:
    peer, conversation_id = await connected_call(caller)
    pid = media_pid(parley)
    try:
        os.kill(pid, signal.SIGTERM)
        error = await peer.wait_event("error", code="webrtc.media_lost", timeout=10)
        assert "shutting down" in error["message"]
        closed = await peer.wait_event("session_closed", timeout=10)
        assert closed["reason"] == "client_end"
        await asyncio.wait_for(peer.channel_closed.wait(), 10)
    finally:
        await peer.close()
    # The conversation ended cleanly, everything said in it kept once.
    said = await messages(caller, conversation_id)
    assert [c for _, c in said].count("first question") == 1, said
    assert said[0] == ("assistant", GREETING), said
    await worker_back(parley, pid)


async def test_a_media_worker_killed_under_a_call(parley: Parley, caller: Caller) -> None:
    """SIGKILL: nothing can tell the page, so the page notices the silence (no `tick` for 3 s, as
    docs/webrtc.md says clients do); the conversation is intact, and the next call works once the
    supervisor has restarted the worker."""
    peer, conversation_id = await connected_call(caller)
    pid = media_pid(parley)
    try:
        await peer.wait_event("tick")
        os.kill(pid, signal.SIGKILL)
        count = len(peer.events)
        await asyncio.sleep(3.5)
        assert peer.events[count + 1 :] == [], peer.events[count:]  # at most one already in flight
    finally:
        await peer.close()
    said = await messages(caller, conversation_id)
    contents = [c for _, c in said]
    assert contents[0] == GREETING and contents.count("first question") == 1, said
    assert len(said) == 3, said  # the greeting, the question, its answer: nothing lost or doubled

    await worker_back(parley, pid)
    again = ClientPeer()
    try:
        deadline = time.monotonic() + 20
        while (resp := await call(caller, again, PcmTrack())).status_code == 503:
            assert time.monotonic() < deadline, resp.text
            await again.close()
            again = ClientPeer()
            await asyncio.sleep(0.5)
        assert resp.status_code == 200, resp.text
        await again.accept(resp.text)
        await again.wait_event("text_full", timeout=15)
    finally:
        await again.close()


async def test_the_gateway_killed_under_a_call(parley: Parley, caller: Caller) -> None:
    """The call's /realtime socket is cut: the media worker tells the page (`webrtc.media_lost`)
    and closes the call; once the gateway is back, the conversation holds what was said and a new
    call works."""
    peer, conversation_id = await connected_call(caller)
    pid = int(parley.run_state()["processes"]["session_gateway"]["pid"])
    try:
        os.kill(pid, signal.SIGKILL)
        error = await peer.wait_event("error", code="webrtc.media_lost", timeout=10)
        assert "socket closed" in error["message"]
        await asyncio.wait_for(peer.channel_closed.wait(), 10)
        assert not peer.find("session_closed")  # the conversation was not ended by the cut
    finally:
        await peer.close()
    await until(
        lambda: int(parley.run_state()["processes"]["session_gateway"]["pid"]) != pid,
        timeout=20,
        what="the gateway's restart",
    )
    await until(
        lambda: httpx.get(f"{parley.url}/readyz", timeout=2).status_code == 200,
        timeout=30,
        what="the stack ready again",
    )
    said = await messages(caller, conversation_id)
    assert [c for _, c in said].count("first question") == 1, said
    again = ClientPeer()
    try:
        resp = await call(caller, again, PcmTrack())
        assert resp.status_code == 200, resp.text
        await again.accept(resp.text)
        await again.wait_event("text_full", timeout=15)
    finally:
        await again.close()


async def test_the_runtime_worker_killed_under_a_call(parley: Parley, caller: Caller) -> None:
    """As on the other edges: the call's conversation moves to the other runtime worker (JetStream
    redelivery), the call itself stays up, and the next turn is answered once, nothing doubled."""
    peer, conversation_id = await connected_call(caller)
    processes = parley.run_state()["processes"]
    redis = Redis.from_url(_infra_url(parley.home, "redis"), decode_responses=True)
    try:
        owner = await redis.get(f"parley:rt:session:{conversation_id}:owner")
    finally:
        await redis.aclose()
    assert owner, "no runtime worker holds the call's session"
    (victim,) = [n for n, p in processes.items() if n.startswith("runtime-") and f"-{p['pid']}-" in owner]
    try:
        os.kill(int(processes[victim]["pid"]), signal.SIGKILL)
        peer.send({"type": "input_text", "text": "second question"})
        await until(
            lambda: len(peer.find("turn_complete")) >= 3,
            timeout=ACK_WAIT_S + 20,
            what="the turn after the kill",
        )
        assert not peer.find("session_closed") and not peer.channel_closed.is_set()
    finally:
        await peer.close()
    said = await messages(caller, conversation_id)
    contents = [c for _, c in said]
    assert contents.count("first question") == 1 and contents.count("second question") == 1, said
    assert [r for r, _ in said].count("assistant") == 3, said  # greeting and two answers, none doubled
    await until(
        lambda: int(parley.run_state()["processes"][victim]["pid"]) != int(processes[victim]["pid"]),
        timeout=20,
        what="the runtime worker's restart",
    )

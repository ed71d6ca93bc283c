"""Voice on `/realtime` end to end, over the real stack (test_realtime's, plus a speech worker
process): speech made by espeak-ng goes in as PCM16 at real-time pace (or as a WebM/Opus upload, or
μ-law), the speech worker recognises it, the runtime answers and has the answer spoken, and the
gateway relays the audio, which whisper transcribes again here.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import numpy as np
import pytest
from tests.e2e.test_realtime import (
    Stack,
    _ready,
    chat_agent,
    make_agent,
    signup,
    stack,  # noqa: F401 - the module-scoped fixture: this module gets a stack of its own
    transcript,
)
from tests.e2e.voice_support import VoiceClient, Voices, chunks, silence, voice_session, words

from parley_devstack.servers import ManagedProcess, free_port

QUESTION = "What is the weather in Paris today?"


@pytest.fixture(scope="module")
def stack_env() -> dict[str, str]:
    return {
        "PARLEY_SPEECH_HEARTBEAT_S": "0.5",
        "PARLEY_GATEWAY_UPLOAD_IDLE_S": "0.5",
        "PARLEY_GATEWAY_SPEECH_OPEN_TIMEOUT_S": "1.0",
        "PARLEY_GATEWAY_SPEECH_RETRY_S": "0.5",
    }


def start_speech(s: Stack, name: str) -> ManagedProcess:
    port = free_port()
    proc = ManagedProcess(
        name,
        [sys.executable, "-m", "parley_speech"],
        env={**s.env, "PARLEY_HTTP_PORT": str(port), "PARLEY_SPEECH_TTS_PROCESSES": "1"},
        log_path=s.logs / f"{name}.log",
    )
    proc.probe = lambda: _ready(port)  # type: ignore[method-assign]
    proc.start()
    return proc


@pytest.fixture(scope="module")
async def speech(stack: Stack) -> AsyncIterator[list[ManagedProcess]]:  # noqa: F811
    workers = [start_speech(stack, "speech-1")]
    await asyncio.to_thread(workers[0].wait_ready, 60)
    try:
        yield workers
    finally:
        for w in workers:
            await asyncio.to_thread(w.stop, 10)


@pytest.fixture(scope="module")
async def voices() -> AsyncIterator[Voices]:
    v = Voices()
    await v.start()
    yield v
    await v.close()


async def spoken_question(voices: Voices, rate: int = 16000, encoding: str = "pcm16") -> list[bytes]:
    speech = await voices.speak(QUESTION, rate)
    samples = np.concatenate([silence(0.3, rate), speech, silence(1.0, rate)])
    return chunks(samples, rate, encoding)


async def test_spoken_question_is_answered_in_text_and_voice(
    stack: Stack,  # noqa: F811
    speech: list[ManagedProcess],
    voices: Voices,
) -> None:
    user = await signup(stack)
    agent = await make_agent(stack, user, *chat_agent())
    frames = await spoken_question(voices)
    async with voice_session(stack.gateway_url, agent, cookie=user.cookie) as c:
        fmt = await c.recv()
        assert fmt == {
            "type": "signal",
            "name": "audio_format",
            "data": {
                "input": {"encoding": "pcm16", "sample_rate": 16000},
                "output": {"encoding": "pcm16", "sample_rate": 24000},
                "uploads": ["wav", "webm_opus", "ogg_opus"],
            },
        }
        # The greeting is spoken too; turn_complete comes after its last audio.
        greeting = await c.until("turn_complete")
        assert greeting[0]["type"] == "text_full"
        assert greeting[-2]["type"] == "audio_delta"
        assert "hi" in await voices.words_in(c.take_audio())

        await c.stream(frames)
        heard = await c.signal("transcript")
        assert heard["data"]["final"] is True and heard["data"]["utterance"] == 1
        said = heard["data"]["text"]
        assert {"weather", "paris"} <= words(said), said
        answer = await c.until("turn_complete")
        kinds = [e["type"] for e in answer]
        assert "text_delta" in kinds and "audio_delta" in kinds, kinds
        assert kinds[-2] == "audio_delta"  # the last audio before turn_complete
        text = "".join(e["chunk"] for e in answer if e["type"] == "text_delta")
        assert text == f'You said: "{said}".'
        assert {"weather", "paris"} <= await voices.words_in(c.take_audio())
        signals = [e["data"] for e in c.events if e["type"] == "signal"]
        assert {"utterance": 1} in signals  # speech_started / speech_stopped
        await c.send({"type": "end"})
        await c.until("session_closed")
    conversation = await transcript(stack, user, c.conversation_id)
    assert conversation["messages"] == [
        ("assistant", "Hi, I am listening."),
        ("user", said),
        ("assistant", text),
    ]


LONG = " ".join(f"word{i}" for i in range(30))  # spoken for ~10 s
CHUNK_MS = 40  # PARLEY_SPEECH_TTS_CHUNK_MS


async def _long_answer_playing(c: VoiceClient, audio_s: float) -> str:
    """Ask for a long answer; return once `audio_s` of its audio arrived (the full answer text)."""
    await c.send({"type": "input_text", "text": LONG})
    while len(c.audio) < audio_s * 24000 * 2:
        await c.recv()
    return f'You said: "{LONG}".'


async def test_cancel_stops_the_audio_and_keeps_what_was_spoken(
    stack: Stack,  # noqa: F811
    speech: list[ManagedProcess],
) -> None:
    user = await signup(stack)
    agent = await make_agent(stack, user, *chat_agent())
    async with voice_session(stack.gateway_url, agent, cookie=user.cookie) as c:
        await c.until("turn_complete")
        c.take_audio()
        full = await _long_answer_playing(c, 1.0)
        deltas = c.audio_deltas
        await c.send({"type": "cancel"})
        await c.until("turn_complete")
        # What was already on the wire when the gateway read `cancel`; never more than 200 ms.
        assert (c.audio_deltas - deltas) * CHUNK_MS <= 200, c.audio_deltas - deltas
        heard_s = len(c.take_audio()) / 48000
        assert heard_s < 3.0
        # The next turn is spoken in full.
        await c.send({"type": "input_text", "text": "again"})
        await c.until("turn_complete")
        assert len(c.take_audio()) > 0
        await c.send({"type": "end"})
        await c.until("session_closed")
    messages = (await transcript(stack, user, c.conversation_id))["messages"]
    assert messages[1] == ("user", LONG)
    kept = messages[2][1]
    assert messages[2][0] == "assistant" and full.startswith(kept) and 0 < len(kept) < len(full) // 2, kept
    assert messages[3:] == [("user", "again"), ("assistant", 'You said: "again".')]


async def test_barge_in_stops_the_agent_and_the_user_is_answered(
    stack: Stack,  # noqa: F811
    speech: list[ManagedProcess],
    voices: Voices,
) -> None:
    user = await signup(stack)
    agent = await make_agent(stack, user, *chat_agent())
    question = await voices.speak(QUESTION)
    async with voice_session(stack.gateway_url, agent, cookie=user.cookie) as c:
        await c.until("turn_complete")
        await c.stream(chunks(silence(0.4, 16000), 16000))  # the microphone is open
        c.take_audio()
        full = await _long_answer_playing(c, 1.5)
        frames = chunks(np.concatenate([silence(0.6, 16000), question, silence(1.0, 16000)]), 16000)
        sender = asyncio.create_task(c.stream(frames))
        try:
            await c.signal("barge_in")
            deltas = c.audio_deltas
            await c.until("turn_complete")  # the interrupted turn ends
            assert c.audio_deltas == deltas  # not one audio_delta after barge_in
            c.take_audio()
            heard = await c.signal("transcript")
            assert {"weather", "paris"} <= words(heard["data"]["text"])
            await c.until("turn_complete")
            assert {"weather", "paris"} <= await voices.words_in(c.take_audio())
        finally:
            await sender
        await c.send({"type": "end"})
        await c.until("session_closed")
    messages = (await transcript(stack, user, c.conversation_id))["messages"]
    kept = messages[2][1]
    assert full.startswith(kept) and 0 < len(kept) < len(full) // 2, kept
    assert messages[3] == ("user", heard["data"]["text"])

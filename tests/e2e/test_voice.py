"""Voice on `/realtime` end to end, over the real stack (test_realtime's, plus a speech worker
process): speech made by espeak-ng goes in as PCM16 at real-time pace (or as a WebM/Opus upload, or
μ-law), the speech worker recognises it, the runtime answers and has the answer spoken, and the
gateway relays the audio, which whisper transcribes again here.
"""

from __future__ import annotations

import asyncio
import os
import signal
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
from tests.e2e.voice_support import Voices, chunks, silence, voice_session, words

from parley_devstack.servers import ManagedProcess, free_port
from parley_speech.audio.formats import encode_webm_opus

QUESTION = "What is the weather in Paris today?"


@pytest.fixture(scope="module")
def stack_env() -> dict[str, str]:
    return {
        "PARLEY_SPEECH_HEARTBEAT_S": "0.5",
        "PARLEY_GATEWAY_UPLOAD_IDLE_S": "0.5",
        "PARLEY_GATEWAY_SPEECH_OPEN_TIMEOUT_S": "1.0",
        "PARLEY_GATEWAY_SPEECH_RETRY_S": "0.5",
    }


def start_speech(stack: Stack, name: str) -> ManagedProcess:
    port = free_port()
    proc = ManagedProcess(
        name,
        [sys.executable, "-m", "parley_speech"],
        env={**stack.env, "PARLEY_HTTP_PORT": str(port), "PARLEY_SPEECH_TTS_PROCESSES": "1"},
        log_path=stack.logs / f"{name}.log",
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
        assert [e["type"] for e in greeting][0] == "text_full"
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

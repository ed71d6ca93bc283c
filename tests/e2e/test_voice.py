# One piece (~490 lines): every case shares one module-scoped stack and speech worker (starting them
# takes most of a minute), and the espeak-ng/whisper helpers above; split, each part would start its own.
"""Voice on `/realtime` end to end, over the real stack (test_realtime's, plus a speech worker
process): speech made by espeak-ng goes in as PCM16 at real-time pace (or as a WebM/Opus upload, or
μ-law), the speech worker recognises it, the runtime answers and has the answer spoken, and the
gateway relays the audio, which whisper transcribes again here.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import numpy as np
import pytest
from nats.aio.msg import Msg
from tests.e2e.harness import (
    Stack,
    api_key,
    chat_agent,
    make_agent,
    ready,
    signup,
    stack,  # noqa: F401 - the module-scoped fixture: this module gets a stack of its own
    transcript,
)
from tests.e2e.voice_support import VoiceClient, Voices, chunks, silence, voice_session, words
from websockets.asyncio.client import connect

from parley_common import subjects
from parley_devstack.servers import ManagedProcess, free_port, stop_all
from parley_speech.audio.formats import encode_webm_opus, wav_bytes

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
    proc.probe = lambda: ready(port)  # type: ignore[method-assign]
    proc.start()
    return proc


@pytest.fixture(scope="module")
async def speech(stack: Stack) -> AsyncIterator[list[ManagedProcess]]:  # noqa: F811
    """Two speech workers (the recognition of a session moves to the other when its worker dies)."""
    workers = [start_speech(stack, "speech-1"), start_speech(stack, "speech-2")]
    try:
        for w in workers:
            await asyncio.to_thread(w.wait_ready, 60)
        yield workers
    finally:
        await asyncio.to_thread(stop_all, workers, 10)


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
        names = [e["name"] for e in c.events if e["type"] == "signal" and e["data"].get("utterance") == 1]
        assert names == ["speech_started", "speech_stopped", "transcript"], names
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


async def test_a_greeting_cut_short_is_kept_as_far_as_it_was_spoken(
    stack: Stack,  # noqa: F811
    speech: list[ManagedProcess],
) -> None:
    user = await signup(stack)
    greeting = "Hello and welcome. I can tell you about the weather, book a table, and find a train."
    nodes, edges = chat_agent()
    nodes[0]["data"]["greeting"] = greeting
    agent = await make_agent(stack, user, nodes, edges)
    async with voice_session(stack.gateway_url, agent, cookie=user.cookie) as c:
        while len(c.audio) < 1.5 * 48000:
            await c.recv()
        await c.send({"type": "cancel"})
        await c.until("turn_complete")
        await c.send({"type": "end"})
        await c.until("session_closed")
    messages = (await transcript(stack, user, c.conversation_id))["messages"]
    assert len(messages) == 1 and messages[0][0] == "assistant", messages
    kept = messages[0][1]
    assert greeting.startswith(kept) and 0 < len(kept) < len(greeting) - 20, kept


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


async def test_webm_upload_and_mulaw_stream(
    stack: Stack,  # noqa: F811
    speech: list[ManagedProcess],
    voices: Voices,
) -> None:
    user = await signup(stack)
    agent = await make_agent(stack, user, *chat_agent())
    question = await voices.speak(QUESTION, 48000)
    upload = encode_webm_opus(question, 48000)
    # A whole WebM/Opus recording (as MediaRecorder makes it), in two binary frames; it ends on the
    # idle timeout (a JSON frame would end it too).
    async with voice_session(stack.gateway_url, agent, cookie=user.cookie) as c:
        await c.until("turn_complete")
        await c.send({"type": "input_audio"})
        half = len(upload) // 2
        await c.send(upload[:half])
        await c.send(upload[half:])
        heard = await c.signal("transcript")
        assert {"weather", "paris"} <= words(heard["data"]["text"])
        await c.until("turn_complete")
        c.take_audio()
        # Silence uploaded as a WAV: no speech, no turn.
        await c.send({"type": "input_audio"})
        await c.send(wav_bytes(silence(1.0, 16000), 16000))
        await c.send({"type": "input_text", "text": "ping"})  # ends the upload
        assert (await c.signal("no_speech"))["data"]["utterance"] == 2
        await c.until("turn_complete")
        await c.send({"type": "end"})
        await c.until("session_closed")
    messages = (await transcript(stack, user, c.conversation_id))["messages"]
    assert [m[0] for m in messages] == ["assistant", "user", "assistant", "user", "assistant"]
    assert messages[1] == ("user", heard["data"]["text"]) and messages[3] == ("user", "ping")

    # Telephony: μ-law 8 kHz both ways, chosen by the render directive on a text channel.
    frames = await spoken_question(voices, 8000, "mulaw")
    directive = "audio_in=mulaw/8000;audio_out=mulaw/8000"
    async with voice_session(
        stack.gateway_url, agent, cookie=user.cookie, channel="phone", render_directive=directive
    ) as c:
        fmt = await c.recv()
        assert fmt["data"]["input"] == {"encoding": "mulaw", "sample_rate": 8000}
        assert fmt["data"]["output"] == {"encoding": "mulaw", "sample_rate": 8000}
        await c.until("turn_complete")
        c.take_audio()
        await c.stream(frames)
        heard = await c.signal("transcript")
        assert {"weather", "paris"} <= words(heard["data"]["text"])
        await c.until("turn_complete")
        # Telephone-band speech read back by whisper tiny.en: it does not always catch every word,
        # but an answer that was not the spoken sentence (silence, noise, a cut) has neither.
        heard_back = await voices.words_in(c.take_audio(), "mulaw", 8000)
        assert {"weather", "paris"} & heard_back, heard_back
        await c.send({"type": "end"})
        await c.until("session_closed")


async def test_bad_audio_gets_an_error_and_the_session_goes_on(
    stack: Stack,  # noqa: F811
    speech: list[ManagedProcess],
) -> None:
    user = await signup(stack)
    agent = await make_agent(stack, user, *chat_agent())
    rng = np.random.default_rng(7)
    async with voice_session(stack.gateway_url, agent, cookie=user.cookie) as c:
        await c.until("turn_complete")
        # Silence only: no signal, no turn.
        await c.stream(chunks(silence(1.5, 16000), 16000))
        # Garbage: random bytes streamed as PCM16, then a chunk with an odd size.
        await c.stream([rng.bytes(640) for _ in range(25)])
        error = await c.until("error")
        assert error[-1]["code"] == "speech.undecodable_audio", error
        # A garbage "Ogg" upload.
        await c.send({"type": "input_audio"})
        await c.send(b"OggS" + rng.bytes(3000))
        await c.send({"type": "input_text", "text": "still there?"})
        events = await c.until("turn_complete")
        codes = [e.get("code") for e in c.events if e["type"] == "error"]
        assert codes.count("speech.undecodable_audio") >= 2 or "speech.undecodable_audio" in [
            e.get("code") for e in (await c.until("error"))
        ], codes
        assert "".join(e["chunk"] for e in events if e["type"] == "text_delta") == 'You said: "still there?".'
        # A binary frame nobody announced.
        await c.send(b"\x00\x01")
        assert (await c.until("error"))[-1]["code"] == "realtime.unexpected_binary"
        assert not [e for e in c.events if e["type"] == "signal" and e["name"] == "transcript"]
        await c.send({"type": "end"})
        await c.until("session_closed")
    messages = (await transcript(stack, user, c.conversation_id))["messages"]
    assert [m[0] for m in messages] == ["assistant", "user", "assistant"]


@pytest.mark.parametrize(
    ("directive", "reason"),
    [
        ("audio_in=pcm16/11025", "realtime.unsupported_audio_format"),
        ("audio_out=pcm16/48000", "realtime.unsupported_audio_format"),
        ("audio_in=pcm16", "realtime.bad_render_directive"),
        ("audio_rate=16000", "realtime.bad_render_directive"),
    ],
)
async def test_formats_the_platform_does_not_speak_are_refused(
    stack: Stack,  # noqa: F811
    directive: str,
    reason: str,
) -> None:
    user = await signup(stack)
    agent = await make_agent(stack, user, *chat_agent())
    headers = {"Cookie": f"kivox_session={user.cookie}"}
    async with connect(stack.gateway_url, additional_headers=headers) as ws:
        hello = {
            "type": "handshake",
            "agent_id": agent,
            "channel": "web-voice",
            "render_directive": directive,
        }
        await ws.send(json.dumps(hello))
        assert json.loads(await ws.recv()) == {"type": "handshake_error", "reason": reason}


async def test_another_user_cannot_resume_a_voice_session(
    stack: Stack,  # noqa: F811
    speech: list[ManagedProcess],
) -> None:
    owner, other = await signup(stack), await signup(stack)
    agent = await make_agent(stack, owner, *chat_agent())
    async with voice_session(stack.gateway_url, agent, cookie=owner.cookie) as c:
        await c.until("turn_complete")
        url = f"{stack.gateway_url}?resume={c.conversation_id}&last_event=0"
        async with connect(url, additional_headers={"Cookie": f"kivox_session={other.cookie}"}) as ws:
            await ws.send(json.dumps({"type": "handshake", "agent_id": agent, "channel": "web-voice"}))
            reply = json.loads(await ws.recv())
            assert reply["type"] == "handshake_error", reply
            assert reply["reason"] in ("realtime.session_not_found", "resource.not_found")
        # The owner's session is untouched and still speaks.
        await c.send({"type": "input_text", "text": "hello"})
        await c.until("turn_complete")
        assert len(c.take_audio()) > 0


async def test_speech_worker_killed_mid_utterance(
    stack: Stack,  # noqa: F811
    speech: list[ManagedProcess],
    voices: Voices,
) -> None:
    """The worker holding the recognition dies in the middle of the question: the gateway's
    recognition client re-opens on another worker and replays the utterance; the user is answered."""
    user = await signup(stack)
    agent = await make_agent(stack, user, *chat_agent())
    frames = await spoken_question(voices)
    async with voice_session(stack.gateway_url, agent, cookie=user.cookie) as c:
        await c.until("turn_complete")
        holders: list[str] = []

        async def on_event(msg: Msg) -> None:
            holders.append(json.loads(msg.data)["worker_id"])

        assert stack.nats is not None
        nc = await nats.connect(stack.nats.url)
        await nc.subscribe(subjects.session_speech(c.conversation_id), cb=on_event)
        await c.stream(chunks(silence(0.6, 16000), 16000))  # recognition opens on a worker
        while not holders:
            await asyncio.sleep(0.05)
        await nc.close()
        pid = int(holders[0][1:].split("-")[0])  # worker ids are w<pid>-<random>
        victim = next(w for w in speech if w.pid == pid)
        half = len(frames) // 2
        await c.stream(frames[:half])
        assert victim.proc is not None
        victim.proc.send_signal(signal.SIGKILL)
        await c.stream(frames[half:])
        got = await c.until("signal", 30, name="transcript")
        errors = [e for e in got if e["type"] == "error"]
        assert {"weather", "paris"} <= words(got[-1]["data"]["text"]), (got[-1], errors)
        await c.until("turn_complete")
        assert {"weather", "paris"} <= await voices.words_in(c.take_audio())
        await c.send({"type": "end"})
        await c.until("session_closed")


async def test_the_example_client_speaks_a_wav_and_saves_the_answer(
    stack: Stack,  # noqa: F811
    speech: list[ManagedProcess],
    voices: Voices,
    tmp_path: Path,
) -> None:
    user = await signup(stack)
    agent = await make_agent(stack, user, *chat_agent())
    key = await api_key(stack, user)
    question = tmp_path / "question.wav"
    question.write_bytes(wav_bytes(await voices.speak(QUESTION, 24000), 24000))
    answer = tmp_path / "answer.wav"
    example = Path(__file__).resolve().parents[2] / "docs" / "examples" / "voice_client.py"
    argv = ["--url", stack.gateway_url, "--token", key, "--agent", agent, "--wav", str(question)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(example), *argv, "--out", str(answer), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out
    assert b"[transcript]" in out and b"saved" in out, out
    with wave.open(str(answer)) as w:
        assert (w.getframerate(), w.getnchannels()) == (24000, 1)
        audio = w.readframes(w.getnframes())
    assert {"weather", "paris"} <= await voices.words_in(audio)


async def test_the_agents_voice_policy_applies(
    stack: Stack,  # noqa: F811
    speech: list[ManagedProcess],
    voices: Voices,
) -> None:
    """`config.voice.policy` reaches recognition: speech shorter than its `min_speech_ms` is noise."""
    user = await signup(stack)
    agent = await make_agent(stack, user, *chat_agent(), voice={"policy": {"min_speech_ms": 5000}})
    frames = await spoken_question(voices)
    async with voice_session(stack.gateway_url, agent, cookie=user.cookie) as c:
        await c.until("turn_complete")
        await c.stream(frames)
        await c.send({"type": "input_text", "text": "ping"})
        await c.until("turn_complete")
        assert not [e for e in c.events if e["type"] == "signal" and e["name"] != "audio_format"]


async def test_speech_workers_killed_while_the_agent_speaks(
    stack: Stack,  # noqa: F811
    speech: list[ManagedProcess],
) -> None:
    """(Last of the module: it leaves no speech worker.) Every speech worker dies in the middle of
    the agent's answer: one clear `error`, the turn ends, and the session goes on in text."""
    user = await signup(stack)
    agent = await make_agent(stack, user, *chat_agent())
    async with voice_session(stack.gateway_url, agent, cookie=user.cookie) as c:
        await c.until("turn_complete")
        full = await _long_answer_playing(c, 1.0)
        for worker in speech:
            if worker.proc is not None and worker.alive():
                worker.proc.send_signal(signal.SIGKILL)
        got = await c.until("turn_complete", 30)
        errors = [e["code"] for e in got if e["type"] == "error"]
        assert errors in (["speech.worker_lost"], ["bus.timeout"]), got
        assert "".join(e["chunk"] for e in got if e["type"] == "text_delta") in full
        # Without speech workers the agent still answers, in text, with one error per turn.
        await c.send({"type": "input_text", "text": "again"})
        again = await c.until("turn_complete", 30)
        assert "".join(e["chunk"] for e in again if e["type"] == "text_delta") == 'You said: "again".'
        assert [e["code"] for e in again if e["type"] == "error"] == ["bus.timeout"]
        await c.send({"type": "end"})
        await c.until("session_closed")
    messages = (await transcript(stack, user, c.conversation_id))["messages"]
    assert messages[3:] == [("user", "again"), ("assistant", 'You said: "again".')]

"""The offline engines make and understand speech: espeak-ng (from its wheel, out of process)
speaks, faster-whisper tiny.en transcribes it back, Silero finds speech in it and none in silence
or noise."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncGenerator

import numpy as np

from parley_speech.engines.espeak import EspeakTTS
from parley_speech.engines.silero import SileroModel
from parley_speech.engines.whisper import WhisperSTT
from parley_speech.policy import EndOfTurn, PolicyConfig, TurnPolicy

from .conftest import speak, words

SENTENCE = "What is the weather like in Paris today?"


async def test_espeak_speaks_and_whisper_understands(espeak: EspeakTTS, whisper: WhisperSTT) -> None:
    audio = await speak(espeak, SENTENCE)
    assert 1.0 < audio.size / 16000 < 5.0
    text = await whisper.recognize(audio)
    assert {"weather", "paris", "today"} <= words(text), text


async def test_whisper_streams_the_same_as_whole(espeak: EspeakTTS, whisper: WhisperSTT) -> None:
    audio = await speak(espeak, "Hello, I would like to order a pizza.")
    stream = whisper.stream()
    for i in range(0, audio.size, 320):
        await stream.push(audio[i : i + 320])
    text = await stream.end()
    assert {"order", "pizza"} <= words(text), text


async def test_silero_hears_speech_in_tts_and_none_in_silence_or_noise(
    espeak: EspeakTTS, silero: SileroModel
) -> None:
    audio = await speak(espeak, SENTENCE)
    padded = np.concatenate([np.zeros(16000, np.float32), audio, np.zeros(16000, np.float32)])
    vad = silero.stream()
    events = []
    for i in range(0, padded.size, 320):  # 20 ms chunks, as an edge sends them
        events += vad.push(padded[i : i + 320])
    assert [e.kind for e in events][:1] == ["start"] and events[-1].kind == "end"
    assert 900 <= events[0].at_ms <= 1200  # speech starts after the second of silence
    speech_end = (16000 + audio.size) * 1000 // 16000
    assert speech_end - 300 <= events[-1].at_ms <= speech_end + 300

    silence = np.zeros(48000, np.float32)
    noise = (np.random.default_rng(1).standard_normal(48000) * 0.05).astype(np.float32)
    for quiet in (silence, noise):
        assert max(silero.probabilities(quiet)) < 0.5
        assert silero.stream().push(quiet) == []


async def test_turn_ends_in_the_frame_where_the_silence_window_ends(
    espeak: EspeakTTS, silero: SileroModel
) -> None:
    """The policy clocked by `heard_ms` (audio received) instead of `position_ms` (whole 32 ms VAD
    windows) makes the same decision, in the 20 ms frame where the 400 ms silence ends."""
    audio = await speak(espeak, SENTENCE)
    earlier = 0
    for lead in range(0, 160, 20):  # every phase of 20 ms frames against 32 ms windows
        padded = np.concatenate([np.zeros(8000 + lead * 16, np.float32), audio, np.zeros(16000, np.float32)])
        ends: dict[str, tuple[EndOfTurn, int]] = {}
        for clock in ("position_ms", "heard_ms"):
            vad, policy = silero.stream(), TurnPolicy(PolicyConfig(end_of_turn_silence_ms=400))
            for i in range(0, padded.size, 320):
                actions = [a for e in vad.push(padded[i : i + 320]) for a in policy.on_vad(e)]
                actions += policy.on_time(getattr(vad, clock))
                end = next((a for a in actions if isinstance(a, EndOfTurn)), None)
                if end is not None:
                    ends[clock] = (end, (i + 320) // 16)
                    break
        (by_window, window_ms), (by_frame, frame_ms) = ends["position_ms"], ends["heard_ms"]
        assert by_frame == by_window
        assert frame_ms == -(-(by_frame.end_ms + 400) // 20) * 20, (lead, by_frame, frame_ms)
        assert frame_ms <= window_ms
        earlier += window_ms - frame_ms
    assert earlier >= 4 * 20  # 16 ms on average over the phases


async def test_espeak_streams_small_chunks_with_text_alignment(espeak: EspeakTTS) -> None:
    chunks = [c async for c in espeak.synthesize(SENTENCE)]
    assert len(chunks) > 10
    sizes = [c.samples.size for c in chunks if c.samples.size]
    assert max(sizes) <= espeak.sample_rate // 10  # small buffers: the first audio comes early
    ends = [c.text_end for c in chunks if c.text_end is not None]
    assert len(ends) == len(chunks)  # every chunk says how far into the text it reached
    assert ends == sorted(ends)  # alignment only moves forward
    assert ends[-1] == len(SENTENCE)
    assert 0 < ends[len(ends) // 2] < len(SENTENCE)


async def test_espeak_process_is_restarted_when_it_dies(espeak: EspeakTTS) -> None:
    before = espeak.pids()
    os.kill(before[0], signal.SIGKILL)
    await asyncio.sleep(0.05)
    audio = [c async for c in espeak.synthesize("Still here.")]
    assert sum(c.samples.size for c in audio) > 0
    assert espeak.pids() != before and espeak.restarts >= 1


async def test_abandoning_a_sentence_leaves_the_process_usable(espeak: EspeakTTS) -> None:
    agen = espeak.synthesize("This is a rather long sentence. " * 30)
    assert isinstance(agen, AsyncGenerator)
    async for _ in agen:
        break
    await agen.aclose()
    audio = [c async for c in espeak.synthesize("Next one.")]
    assert audio[-1].text_end == len("Next one.")

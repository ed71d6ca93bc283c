"""Offline speech engines in-process: STT latency per utterance, TTS first-audio latency, VAD cost,
and how many real-time recognition sessions one speech worker sustains.

`python -m bench.voice_engines [--utterances N] [--sessions 1,2,4,8] [--seconds S]`

No infrastructure: the engines as a speech worker loads them (faster-whisper tiny.en int8 with
`PARLEY_SPEECH_STT_CONCURRENCY` decoders of one CPU thread each, Silero VAD v6, espeak-ng in its
child processes). Speech to recognise is made by espeak-ng.

Concurrency: N simulated voice sessions each stream a question (then silence) in 20 ms frames at
real-time pace through the worker's own pipeline pieces (soxr resampling, Silero VAD and the turn
policy in the VAD thread, whisper in the STT pool). A level is sustained when every session's
audio is processed in real time (VAD backlog under 200 ms) and the p90 from end of speech (policy
end of turn) to the final transcript stays under 1.5 s. The largest sustained level is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from parley_speech.audio.resample import StreamResampler, resample
from parley_speech.engines.espeak import EspeakTTS
from parley_speech.engines.silero import SileroModel
from parley_speech.engines.whisper import WhisperSTT
from parley_speech.policy import EndOfTurn, PolicyConfig, TurnPolicy
from parley_speech.settings import SpeechSettings

SENTENCES = [
    "What is the weather like in Paris today?",
    "Hello, I would like to order a pizza.",
    "Can you tell me when the next train leaves?",
    "Please cancel my appointment for tomorrow morning.",
    "How much does the blue jacket cost?",
]
FRAME = 320  # 20 ms at 16 kHz


def pct(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def ms(value: float) -> str:
    return f"{value * 1000:8.1f} ms"


async def speak(tts: EspeakTTS, text: str) -> np.ndarray:
    audio = np.concatenate([c.samples async for c in tts.synthesize(text)])
    return resample(audio, tts.sample_rate, 16000)


async def stt_latency(whisper: WhisperSTT, clips: list[np.ndarray], rounds: int) -> None:
    times, rtf, cpu = [], [], []
    for _ in range(rounds):
        for clip in clips:
            started, cpu_started = time.perf_counter(), time.process_time()
            await whisper.recognize(clip)
            elapsed = time.perf_counter() - started
            cpu.append(time.process_time() - cpu_started)
            times.append(elapsed)
            rtf.append(elapsed / (clip.size / 16000))
    print(
        f"STT whisper tiny.en int8 (1 thread), utterances of {min(c.size for c in clips) / 16000:.1f}-"
        f"{max(c.size for c in clips) / 16000:.1f} s, n={len(times)}"
    )
    print(
        f"  per utterance  p50 {ms(pct(times, 50))}  p99 {ms(pct(times, 99))}  "
        f"real-time factor p50 {statistics.median(rtf):.2f}"
    )
    # CPU time does not depend on what else the machine runs: the figure to size a pool with.
    print(f"  CPU per utterance p50 {ms(statistics.median(cpu))} (independent of machine load)")


async def tts_latency(tts: EspeakTTS, rounds: int) -> None:
    first, total, audio = [], [], []
    for _ in range(rounds):
        for text in SENTENCES:
            started = time.perf_counter()
            got_first = None
            samples = 0
            async for chunk in tts.synthesize(text):
                if got_first is None and chunk.samples.size:
                    got_first = time.perf_counter() - started
                samples += chunk.samples.size
            total.append(time.perf_counter() - started)
            first.append(got_first or 0.0)
            audio.append(samples / tts.sample_rate)
    print(f"TTS espeak-ng (child process), sentences of {min(audio):.1f}-{max(audio):.1f} s, n={len(first)}")
    print(f"  first audio    p50 {ms(pct(first, 50))}  p99 {ms(pct(first, 99))}")
    print(f"  whole sentence p50 {ms(pct(total, 50))}  p99 {ms(pct(total, 99))}")


def vad_cost(silero: SileroModel, clip: np.ndarray) -> None:
    stream = silero.stream()
    started = time.perf_counter()
    for i in range(0, clip.size - FRAME, FRAME):
        stream.push(clip[i : i + FRAME])
    per_frame = (time.perf_counter() - started) / (clip.size // FRAME)
    share = per_frame / 0.02 * 100
    print(f"VAD Silero v6: {per_frame * 1e6:.0f} µs per 20 ms frame ({share:.2f}% of one core per session)")


async def session(
    i: int,
    clip: np.ndarray,
    seconds: float,
    silero: SileroModel,
    whisper: WhisperSTT,
    vad_pool: ThreadPoolExecutor,
    eot_latency: list[float],
    backlog: list[float],
) -> None:
    """One voice session at real-time pace: resample (8→16 kHz, as a μ-law line would), VAD,
    policy, whisper at the end of each turn."""
    loop = asyncio.get_running_loop()
    line = resample(clip, 16000, 8000)  # what the edge sends
    frame = FRAME // 2
    vad = silero.stream()
    resampler = StreamResampler(8000, 16000)
    policy = TurnPolicy(PolicyConfig())
    captured: list[np.ndarray] = []
    pending: set[asyncio.Task[None]] = set()
    started = time.monotonic() + i * 0.37  # sessions out of phase
    await asyncio.sleep(max(started - time.monotonic(), 0))
    n = 0
    while time.monotonic() - started < seconds:
        due = started + n * 0.02
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        backlog.append(max(-delay, 0.0))
        pos = (n * frame) % line.size
        chunk = line[pos : pos + frame]
        n += 1

        def work(data: np.ndarray = chunk) -> tuple[np.ndarray, list]:  # type: ignore[type-arg]
            samples = resampler.push(data)
            return samples, vad.push(samples)

        samples, events = await loop.run_in_executor(vad_pool, work)
        captured.append(samples)
        actions = []
        for event in events:
            actions += policy.on_vad(event)
        actions += policy.on_time(vad.position_ms)
        for action in actions:
            if isinstance(action, EndOfTurn):
                audio = np.concatenate(captured)
                captured.clear()
                decided = time.monotonic()

                async def recognise(audio: np.ndarray = audio, decided: float = decided) -> None:
                    await whisper.recognize(audio)
                    eot_latency.append(time.monotonic() - decided)

                task = asyncio.create_task(recognise())
                pending.add(task)
                task.add_done_callback(pending.discard)
        if not policy.in_utterance and len(captured) > 25:
            del captured[:-15]  # keep a pre-roll only
    for task in list(pending):
        await task


async def concurrency(
    levels: list[int], seconds: float, clip: np.ndarray, silero: SileroModel, whisper: WhisperSTT
) -> None:
    print(f"Concurrent real-time sessions on one worker ({seconds:.0f} s per level; μ-law 8 kHz in):")
    print("  sessions  turns  end-of-turn→transcript p50      p90   max frame lag  sustained")
    best = 0
    with ThreadPoolExecutor(1, thread_name_prefix="vad") as vad_pool:
        for level in levels:
            eot: list[float] = []
            lag: list[float] = []
            await asyncio.gather(
                *(session(i, clip, seconds, silero, whisper, vad_pool, eot, lag) for i in range(level))
            )
            ok = bool(eot) and pct(eot, 90) < 1.5 and max(lag) < 0.2
            best = level if ok else best
            p50 = ms(pct(eot, 50)) if eot else "       -"
            p90 = ms(pct(eot, 90)) if eot else "       -"
            print(f"  {level:8d}  {len(eot):5d}  {p50:>25} {p90} {ms(max(lag))}  {'yes' if ok else 'no'}")
            if not ok:
                break
    print(f"  => one worker sustains {best} concurrent real-time voice session(s) on this machine")


async def run(args: argparse.Namespace) -> None:
    settings = SpeechSettings()
    stt_pool = ThreadPoolExecutor(settings.speech_stt_concurrency, thread_name_prefix="stt")
    whisper = WhisperSTT(
        stt_pool, cpu_threads=settings.speech_stt_cpu_threads, num_workers=settings.speech_stt_concurrency
    )
    silero = SileroModel()
    tts = EspeakTTS(processes=1)
    await tts.start()
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.2f} (other work slows every figure)")
    try:
        clips = [await speak(tts, s) for s in SENTENCES]
        await whisper.recognize(clips[0])  # warm-up
        await stt_latency(whisper, clips, args.utterances)
        await tts_latency(tts, args.utterances)
        vad_cost(silero, np.concatenate(clips))
        question = np.concatenate([clips[0], np.zeros(16000, np.float32)])
        levels = [int(x) for x in args.sessions.split(",") if x]
        await concurrency(levels, args.seconds, question, silero, whisper)
    finally:
        await tts.aclose()
        stt_pool.shutdown()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.voice_engines")
    parser.add_argument("--utterances", type=int, default=4, help="rounds over the 5 test sentences")
    parser.add_argument("--sessions", default="1,2,3,4,6,8", help="concurrency levels to try, in order")
    parser.add_argument("--seconds", type=float, default=12.0, help="duration of each level")
    asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])

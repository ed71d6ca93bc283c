"""Voice latency over `/realtime` and speech-worker capacity, on the offline engines.

`python -m bench.voice [--iterations N] [--warmup N] [--levels 1,2,3] [--utterances N]`

Starts its own NATS, Redis and PostgreSQL (`parley_devstack.testing.infra()`), and auth, catalog,
one gateway, two runtime workers (built-in LLM, zero pace) and one speech worker as processes, like
`make run`. A voice client streams a spoken question (espeak-ng, PCM16 16 kHz, 20 ms frames at
real-time pace, the microphone staying open with silence afterwards) and times, from the end of the
speech:

- endpointing: → the `speech_stopped` signal (the policy's silence window, VAD, bus);
- STT: → the final `transcript` signal (whisper tiny.en in the worker);
- LLM first text: → the first `text_delta` (the transcript's durable turn through the runtime);
- TTS first audio: → the first `audio_delta` (espeak-ng, relayed by the gateway);
- total: end of speech → first `audio_delta` at the client.

The in-process baseline (bench/voice_baseline.py) runs the identical steps in this process at the
identical pace, without the sockets, the gateway, the bus or the other services: after each
question, the same 20 ms frames of the same clip go at real-time pace (sleeping to the wall clock,
at the same phase against the 32 ms VAD windows) into the speech worker's own recognition code
(`SpeechService.open_session`: VAD thread, Silero, turn policy, whisper) on a loopback bus, timed
exactly like the socket: endpointing from the instant the last speech frame was sent to the end of
turn (`speech_stopped` emitted), STT from there to the final transcript; then the built-in engine's
first delta on that transcript, and the worker's own synthesis job (`SpeechService.synthesize`:
espeak-ng, resampling, 40 ms chunks) from the request to its first chunk published.

Platform overhead = socket total - (in-process endpointing + the worker's own recognition time
(`stt_ms` of its transcript, since whisper's time varies with the load more than anything the
platform adds) + in-process LLM and TTS first output): what the sockets, the gateway, NATS, the
durable turn input, the runtime and the synthesis request add to the same steps at the same pace.

Capacity: for each level N, N voice sessions speak `--utterances` questions each, at the same time,
on the one speech worker; it prints p50/p90 end of speech → final transcript and the largest N whose
p90 stays within 1.5 s (the worker's real-time target).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from websockets.asyncio.client import ClientConnection, connect

from bench.realtime import Platform, percentile, publish_agent, table
from bench.voice_baseline import FRAME_MS, SILENCE, InProcess
from parley_common.logging import setup_logging
from parley_devstack.servers import ManagedProcess, free_port
from parley_devstack.testing import infra
from parley_speech.audio.formats import float_to_pcm16
from parley_speech.audio.resample import resample
from parley_speech.engines.espeak import EspeakTTS

QUESTIONS = (
    "What is the weather in Paris today?",
    "Can you book a table for two tonight?",
    "How long does the train to Berlin take?",
)
RATE = 16000
STAGES = ("endpointing", "STT", "LLM first text", "TTS first audio", "total")


class VoicePlatform(Platform):
    """The realtime bench's platform plus one speech worker."""

    def start(self) -> None:
        port = self.ports["speech-1"] = free_port()
        proc = ManagedProcess(
            "speech-1",
            [sys.executable, "-m", "parley_speech"],
            env={**self.env, "PARLEY_HTTP_PORT": str(port)},
            log_path=self.workdir / "speech-1.log",
        )
        from bench.realtime import _ready

        proc.probe = lambda: _ready(port)  # type: ignore[method-assign]
        proc.start()
        self.processes.append(proc)
        super().start()


@dataclass
class Clip:
    text: str
    samples: np.ndarray[Any, Any]  # float32 at RATE
    frames: list[bytes]


async def make_clips(tts: EspeakTTS) -> list[Clip]:
    clips = []
    for text in QUESTIONS:
        parts = [c.samples async for c in tts.synthesize(text)]
        samples = resample(np.concatenate(parts), tts.sample_rate, RATE)
        pcm = float_to_pcm16(samples)
        step = RATE * FRAME_MS // 1000
        clips.append(Clip(text, samples, [pcm[i : i + step].tobytes() for i in range(0, pcm.size, step)]))
    return clips


@dataclass
class Turn:
    """One spoken question over the socket: wall times (monotonic) and the worker's positions."""

    speech_start_frame: int = 0  # the clip's first frame: its phase against the VAD windows
    speech_end: float = 0.0
    stopped: float | None = None
    transcript: float | None = None
    first_text: float | None = None
    first_audio: float | None = None
    stt_ms: int | None = None  # the worker's own recognition time
    done: asyncio.Event = field(default_factory=asyncio.Event)


class VoiceSession:
    """A client with an open microphone: silence at real time, a clip when asked."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.pending: list[bytes] = []
        self.sent = 0  # frames since the first one: the worker's audio clock, in frames
        self.turn: Turn | None = None
        self.speaking_until = -1  # frame index of the last speech frame of the current clip
        self.closed = False

    async def mic(self) -> None:
        started = time.monotonic()
        while not self.closed:
            delay = started + self.sent * FRAME_MS / 1000 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            frame = self.pending.pop(0) if self.pending else SILENCE
            await self.ws.send(json.dumps({"type": "input_audio_stream"}))
            await self.ws.send(frame)
            if self.sent == self.speaking_until and self.turn is not None:
                self.turn.speech_end = time.monotonic()
            self.sent += 1

    async def listen(self) -> None:
        while True:
            raw = await self.ws.recv()
            if isinstance(raw, bytes):
                continue
            event = json.loads(raw)
            now, turn = time.monotonic(), self.turn
            if turn is None:
                continue
            kind = event["type"]
            if kind == "signal" and event["name"] == "speech_stopped" and turn.stopped is None:
                turn.stopped = now
            elif kind == "signal" and event["name"] == "transcript" and event["data"]["final"]:
                turn.transcript = turn.transcript or now
                turn.stt_ms = event["data"].get("stt_ms")
            elif kind == "text_delta" and turn.first_text is None:
                turn.first_text = now
            elif kind == "audio_delta" and turn.first_audio is None and turn.first_text is not None:
                turn.first_audio = now
                await self.ws.send(json.dumps({"type": "cancel"}))  # enough: the rest would only play
            elif kind in ("turn_complete", "signal"):
                nothing = kind == "signal" and event["name"] == "no_speech"
                if nothing or (kind == "turn_complete" and turn.first_text is not None):
                    turn.done.set()

    async def ask(self, clip: Clip, limit_s: float = 30.0) -> Turn:
        turn = self.turn = Turn()
        turn.speech_start_frame = self.sent + len(self.pending)
        self.speaking_until = turn.speech_start_frame + len(clip.frames) - 1
        self.pending.extend(clip.frames)
        await asyncio.wait_for(turn.done.wait(), limit_s)
        self.turn = None
        await asyncio.sleep(0.3)
        return turn


async def open_session(url: str, key: str, agent_id: str) -> tuple[VoiceSession, list[asyncio.Task[None]]]:
    ws = await connect(f"{url}?token={key}", max_size=None)
    await ws.send(json.dumps({"type": "handshake", "agent_id": agent_id, "channel": "web-voice"}))
    while True:  # up to the greeting's end
        raw = await ws.recv()
        if isinstance(raw, str) and json.loads(raw)["type"] == "turn_complete":
            break
    session = VoiceSession(ws)
    tasks = [asyncio.create_task(session.mic()), asyncio.create_task(session.listen())]
    return session, tasks


async def close_session(session: VoiceSession, tasks: list[asyncio.Task[None]]) -> None:
    session.closed = True
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await session.ws.close()


def stages(turn: Turn) -> dict[str, float]:
    assert turn.stopped and turn.transcript and turn.first_text and turn.first_audio
    return {
        "endpointing": turn.stopped - turn.speech_end,
        "STT": turn.transcript - turn.stopped,
        "LLM first text": turn.first_text - turn.transcript,
        "TTS first audio": turn.first_audio - turn.first_text,
        "total": turn.first_audio - turn.speech_end,
    }


async def baseline(turn: Turn, clip: Clip, inproc: InProcess) -> dict[str, float]:
    """The same steps in this process at the same pace (bench/voice_baseline.py)."""
    heard = await inproc.recognize(clip.frames, turn.speech_start_frame)
    llm_first = await inproc.llm_first(heard.text)
    tts_first = await inproc.tts_first(heard.text)
    worker_stt = (turn.stt_ms or 0) / 1000
    return {
        "endpointing": heard.endpointing,
        "STT": heard.stt,
        "LLM first text": llm_first,
        "TTS first audio": tts_first,
        "total": heard.endpointing + heard.stt + llm_first + tts_first,
        # What the steps took where they ran (recognition measured by the worker itself).
        "platform_baseline": heard.endpointing + worker_stt + llm_first + tts_first,
    }


async def measure_latency(
    url: str, key: str, agent_id: str, clips: list[Clip], *, iterations: int, warmup: int, local: InProcess
) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    over: list[dict[str, float]] = []
    inproc: list[dict[str, float]] = []
    session, tasks = await open_session(url, key, agent_id)
    try:
        for i in range(warmup + iterations):
            clip = clips[i % len(clips)]
            turn = await session.ask(clip, limit_s=60)
            if i >= warmup and turn.first_audio is not None:
                over.append(stages(turn))
                inproc.append(await baseline(turn, clip, local))
    finally:
        await close_session(session, tasks)
    return over, inproc


async def measure_capacity(
    url: str, key: str, agent_id: str, clips: list[Clip], *, levels: Sequence[int], utterances: int
) -> list[tuple[int, float, float, int]]:
    """Per level: (sessions, p50, p90 end of speech → final transcript, turns measured)."""
    rows = []
    for level in levels:
        opened = [await open_session(url, key, agent_id) for _ in range(level)]
        samples: list[float] = []
        try:
            await asyncio.gather(
                *(_speak(n, s, clips, utterances, samples) for n, (s, _) in enumerate(opened))
            )
        finally:
            for session, tasks in opened:
                await close_session(session, tasks)
        rows.append((level, percentile(samples, 50), percentile(samples, 90), len(samples)))
        if percentile(samples, 90) > 1.5:
            break
    return rows


async def _speak(n: int, session: VoiceSession, clips: list[Clip], utterances: int, out: list[float]) -> None:
    await asyncio.sleep(n * 0.37)  # not all in the same frame
    for k in range(utterances):
        turn = await session.ask(clips[(n + k) % len(clips)], limit_s=60)
        if turn.transcript is not None:
            out.append(turn.transcript - turn.speech_end)


def report(
    over: list[dict[str, float]],
    inproc: list[dict[str, float]],
    capacity: list[tuple[int, float, float, int]],
    out: TextIO,
) -> None:
    ms = "{:.1f} ms".format
    print(f"\nend of user speech → first audio_delta, {len(over)} spoken questions (PCM16 16 kHz):", file=out)
    rows = []
    for stage in STAGES:
        a = [t[stage] * 1000 for t in over]
        b = [t[stage] * 1000 for t in inproc]
        rows.append(
            [
                stage,
                ms(percentile(a, 50)),
                ms(percentile(a, 99)),
                ms(percentile(b, 50)),
                ms(percentile(b, 99)),
            ]
        )
    overhead = [(o["total"] - i["platform_baseline"]) * 1000 for o, i in zip(over, inproc, strict=True)]
    rows.append(["platform overhead", ms(percentile(overhead, 50)), ms(percentile(overhead, 99)), "", ""])
    table(["stage", "socket p50", "socket p99", "in-process p50", "in-process p99"], rows, out)
    print(
        "platform overhead = total over the socket - (in-process endpointing at the same pace"
        " + the worker's own STT time + in-process LLM and TTS)",
        file=out,
    )
    print("\nconcurrent voice sessions on one speech worker (end of speech → final transcript):", file=out)
    table(
        ["sessions", "p50", "p90", "turns"],
        [[str(n), ms(p50 * 1000), ms(p90 * 1000), str(k)] for n, p50, p90, k in capacity],
        out,
    )
    held = [n for n, _, p90, _ in capacity if p90 <= 1.5]
    print(f"served in real time (p90 ≤ 1.5 s): {max(held) if held else 0} sessions", file=out, flush=True)


async def run(stack: Any, *, iterations: int, warmup: int, levels: Sequence[int], utterances: int) -> None:
    with tempfile.TemporaryDirectory(prefix="parley-bench-voice-") as tmp:
        platform = VoicePlatform(stack, Path(tmp))
        local = InProcess()
        async with AsyncExitStack() as cleanup:
            cleanup.callback(platform.stop)
            await asyncio.to_thread(platform.start)
            await local.start()
            cleanup.push_async_callback(local.aclose)
            clips = await make_clips(local.tts)
            key, agent_id = await publish_agent(platform)
            url = f"ws://127.0.0.1:{platform.ports['gateway']}/realtime"
            over, inproc = await measure_latency(
                url, key, agent_id, clips, iterations=iterations, warmup=warmup, local=local
            )
            capacity = await measure_capacity(url, key, agent_id, clips, levels=levels, utterances=utterances)
    report(over, inproc, capacity, sys.stdout)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.voice", description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=12, help="timed spoken questions")
    parser.add_argument("--warmup", type=int, default=2, help="untimed questions first")
    parser.add_argument("--levels", default="1,2,3,4", help="concurrent voice sessions to try, ascending")
    parser.add_argument("--utterances", type=int, default=3, help="questions per session at each level")
    args: Any = parser.parse_args(argv)
    levels = [int(v) for v in args.levels.split(",") if v.strip()]
    if args.iterations < 1 or args.warmup < 0 or not levels or min(levels) < 1 or args.utterances < 1:
        parser.error("--iterations, --utterances and every level must be at least 1, --warmup at least 0")
    setup_logging("bench", "WARNING", json_output=False)
    with infra() as stack:
        asyncio.run(
            run(
                stack,
                iterations=args.iterations,
                warmup=args.warmup,
                levels=levels,
                utterances=args.utterances,
            )
        )


if __name__ == "__main__":
    main(sys.argv[1:])

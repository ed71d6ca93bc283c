"""Offline TTS: espeak-ng, spoken by long-lived child processes (engines/espeak_process.py).

espeak-ng is GPL-3.0: it is loaded only in those children, never in the worker, and the two talk
over stdin/stdout. A pool of `processes` children serves one sentence each at a time; a child that
dies fails its sentence with `speech.engine_failed` and is started again for the next one.
espeak-ng streams its output in 20 ms buffers and reports where each word starts, so the first
chunk is out within milliseconds and every chunk knows how much text it carries.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
import structlog

from parley_common.errors import Codes, ParleyError
from parley_speech.audio.formats import pcm16_to_float
from parley_speech.engines.base import TtsChunk, TTSEngine
from parley_speech.engines.espeak_process import HEADER

log = structlog.get_logger(__name__)

START_TIMEOUT_S = 10.0
# A sentence that produces nothing for this long means a stuck child: it is killed.
FRAME_TIMEOUT_S = 10.0


def _failed(detail: str) -> ParleyError:
    return ParleyError(Codes.SPEECH_ENGINE_FAILED, params={"engine": "espeak", "detail": detail})


@dataclass
class _Child:
    proc: asyncio.subprocess.Process
    sample_rate: int

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    async def read_frame(self) -> tuple[bytes, int, bytes]:
        assert self.proc.stdout is not None
        try:
            async with asyncio.timeout(FRAME_TIMEOUT_S):
                header = await self.proc.stdout.readexactly(HEADER.size)
            kind, request_id, size = HEADER.unpack(header)
            payload = await self.proc.stdout.readexactly(size) if size else b""
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError) as exc:
            self.kill()
            raise _failed("the espeak-ng process stopped") from exc
        return kind, request_id, payload

    def write(self, message: dict[str, object]) -> None:
        assert self.proc.stdin is not None
        if not self.alive or self.proc.stdin.is_closing():
            raise _failed("the espeak-ng process stopped")
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")

    def kill(self) -> None:
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()


class EspeakTTS(TTSEngine):
    name = "espeak"

    def __init__(self, *, processes: int = 2, voice: str = "en-us", rate_wpm: int = 175) -> None:
        self.size = processes
        self.default_voice = voice
        self.rate_wpm = rate_wpm
        self.sample_rate = 22050
        self._children: list[_Child] = []
        self._idle: asyncio.Queue[_Child] | None = None
        self._ids = itertools.count(1)
        self._drains: set[asyncio.Task[None]] = set()
        self.restarts = 0

    async def start(self) -> None:
        self._idle = asyncio.Queue()
        for _ in range(self.size):
            child = await self._spawn()
            self._children.append(child)
            self._idle.put_nowait(child)

    async def _spawn(self) -> _Child:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "parley_speech.engines.espeak_process",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,
        )
        child = _Child(proc, 0)
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                kind, _, payload = await child.read_frame()
        except TimeoutError as exc:
            child.kill()
            raise _failed("the espeak-ng process did not start") from exc
        if kind != b"R":
            child.kill()
            raise _failed("the espeak-ng process did not start")
        child.sample_rate = int(json.loads(payload)["sample_rate"])
        self.sample_rate = child.sample_rate
        # Load the default voice now, not on the first sentence (it takes ~20 ms).
        child.write({"id": 0, "text": " ", "voice": self.default_voice, "rate": self.rate_wpm})
        while (await child.read_frame())[0] not in (b"E", b"X"):
            pass
        return child

    async def _acquire(self) -> _Child:
        if self._idle is None:
            await self.start()
        assert self._idle is not None
        child = await self._idle.get()
        if not child.alive:
            # Died (killed, crashed) since its last sentence: replace it.
            with contextlib.suppress(ProcessLookupError):
                await child.proc.wait()
            self.restarts += 1
            log.warning("espeak.restart", pid=child.proc.pid, returncode=child.proc.returncode)
            try:
                fresh = await self._spawn()
            except ParleyError:
                self._idle.put_nowait(child)  # keep the slot: the next call tries again
                raise
            self._children[self._children.index(child)] = fresh
            child = fresh
        return child

    def _release(self, child: _Child) -> None:
        assert self._idle is not None
        self._idle.put_nowait(child)

    def pids(self) -> list[int]:
        return [c.proc.pid for c in self._children]

    async def synthesize(
        self, text: str, *, voice: str | None = None, language: str | None = None, model: str | None = None
    ) -> AsyncIterator[TtsChunk]:
        for attempt in (1, 2):
            started = False
            try:
                async for chunk in self._speak(text, voice or self.default_voice):
                    started = True
                    yield chunk
                return
            except ParleyError as exc:
                # A child that died while idle shows it only now; nothing was spoken yet, so
                # the sentence is safe to give to a fresh one.
                if started or attempt == 2 or exc.code is not Codes.SPEECH_ENGINE_FAILED:
                    raise

    async def _speak(self, text: str, voice: str) -> AsyncIterator[TtsChunk]:
        child = await self._acquire()
        request_id = next(self._ids)
        words: list[tuple[int, int]] = []  # (start ms, end char)
        produced = 0  # samples yielded so far
        finished = False
        try:
            child.write({"id": request_id, "text": text, "voice": voice, "rate": self.rate_wpm})
            while True:
                kind, rid, payload = await child.read_frame()
                if rid != request_id:
                    continue  # the tail of an earlier, abandoned request
                if kind == b"W":
                    word = json.loads(payload)
                    words.append((int(word["ms"]), min(int(word["end"]), len(text))))
                elif kind == b"A":
                    samples = pcm16_to_float(payload)
                    produced += samples.size
                    end_ms = produced * 1000 // child.sample_rate
                    spoken = [end for start, end in words if start < end_ms]
                    yield TtsChunk(samples, max(spoken) if spoken else 0)
                elif kind == b"E":
                    finished = True
                    yield TtsChunk(np.zeros(0, np.float32), len(text))
                    return
                elif kind == b"X":
                    finished = True
                    raise ParleyError(
                        Codes.SPEECH_ENGINE_REJECTED,
                        params={"engine": self.name, "detail": json.loads(payload).get("message", "")},
                    )
        finally:
            if finished or not child.alive:
                self._release(child)
            else:
                # Abandoned mid-sentence (a cancel): stop the child and read up to its end frame
                # before it speaks for anyone else.
                task = asyncio.create_task(self._drain(child, request_id))
                self._drains.add(task)
                task.add_done_callback(self._drains.discard)

    async def _drain(self, child: _Child, request_id: int) -> None:
        try:
            child.write({"cancel": request_id})
            while True:
                kind, rid, _ = await child.read_frame()
                if rid == request_id and kind in (b"E", b"X"):
                    break
        except ParleyError:
            pass  # the child died: _acquire replaces it
        finally:
            self._release(child)

    async def aclose(self) -> None:
        for task in list(self._drains):
            task.cancel()
        for child in self._children:
            if child.alive and child.proc.stdin is not None:
                child.proc.stdin.close()
        for child in self._children:
            try:
                async with asyncio.timeout(2):
                    await child.proc.wait()
            except TimeoutError:
                child.kill()
                await child.proc.wait()
        self._children.clear()

"""WebRTC media worker: CPU per call and offer-to-answer time, full duplex.

`python -m bench.media [--calls 1,4,8] [--seconds S]`

A media worker's `MediaService` runs in a process of its own, bridged to a stand-in `/realtime`
in that process which answers every call with the agent speaking without pause (PCM16 24 kHz in
100 ms `audio_delta`s at real-time pace) while it takes the microphone's chunks: the worst case of a
call, both directions busy all the time. This process holds the browsers' side (aiortc peers with a
tone as microphone). Measured on the worker's process only (`/proc/<pid>/stat`): CPU time per
second of call (Opus decode + resample to 16 kHz + chunks out, PCM in + resample to 48 kHz + Opus
encode, SRTP both ways, the socket), the share of one core that N calls take, the calls one core
would hold at that rate, and how much of the agent's audio reached the browsers (1.00: every
frame played on time). No NATS, no gateway: the worker's own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing as mp
import os
import statistics
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _tone(ms: int, rate: int = 24000) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return (np.sin(2 * math.pi * 330 * t) * 8000).astype("<i2").tobytes()


# ------------------------------------------------------------------------------ the worker side


async def _agent(ws: Any) -> None:
    """A `/realtime` voice session whose agent never stops talking."""
    hello = json.loads(await ws.recv())
    assert hello["type"] == "handshake"
    await ws.send(json.dumps({"type": "handshake_ok", "conversation_id": "bench"}))
    chunk = _tone(100)

    async def speak() -> None:
        start = time.monotonic()
        n = 0
        while True:
            await ws.send(json.dumps({"type": "audio_delta", "size": len(chunk)}))
            await ws.send(chunk)
            n += 1
            await asyncio.sleep(max(0.0, start + n * 0.1 - time.monotonic()))

    speaker = asyncio.create_task(speak())
    try:
        async for _ in ws:
            pass
    finally:
        speaker.cancel()


def _worker(conn: Connection) -> None:
    async def run() -> None:
        from pydantic import SecretStr
        from websockets.asyncio.server import serve

        from parley_common.media_contract import MediaOfferRequest
        from parley_media.service import MediaService
        from parley_media.settings import MediaSettings

        async with serve(_agent, "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            service = MediaService(
                MediaSettings(media_gateway_url=f"ws://127.0.0.1:{port}/realtime", log_json=False)
            )
            loop = asyncio.get_running_loop()
            while True:
                message = await loop.run_in_executor(None, conn.recv)
                if message is None:
                    break
                started = time.perf_counter()
                reply = await service.answer(
                    MediaOfferRequest(sdp=message, agent_id="bench", token=SecretStr("bench"))
                )
                conn.send((reply.sdp, time.perf_counter() - started))
            await service.stop()

    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    asyncio.run(run())


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


# ------------------------------------------------------------------------------ the browsers


async def _level(calls: int, seconds: float) -> dict[str, float]:
    from parley_media.client import ClientPeer, ToneTrack

    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=_worker, args=(child,), daemon=True)
    proc.start()
    assert proc.pid is not None
    loop = asyncio.get_running_loop()
    peers = [ClientPeer() for _ in range(calls)]
    answer_s: list[float] = []
    try:
        for peer in peers:
            parent.send(await peer.offer(ToneTrack()))
            sdp, took = await loop.run_in_executor(None, parent.recv)
            answer_s.append(took)
            await peer.accept(sdp)
        await asyncio.sleep(2.0)  # ICE, DTLS, the first packets
        heard0 = [len(p.heard) for p in peers]
        cpu0, wall0 = _cpu_s(proc.pid), time.monotonic()
        await asyncio.sleep(seconds)
        cpu1, wall1 = _cpu_s(proc.pid), time.monotonic()
        heard = [len(p.heard) - h for p, h in zip(peers, heard0, strict=True)]
    finally:
        for peer in peers:
            await peer.close()
        parent.send(None)
        await loop.run_in_executor(None, proc.join, 10)
        if proc.is_alive():
            proc.kill()
    wall = wall1 - wall0
    cpu = cpu1 - cpu0
    expected = 48000 * 2 * wall  # PCM16 48 kHz mono, what a browser plays
    return {
        "calls": calls,
        "cpu_share": cpu / wall,
        "cpu_ms_per_call_s": 1000 * cpu / wall / calls,
        "played": statistics.mean(h / expected for h in heard),
        "answer_p50_ms": 1000 * statistics.median(answer_s),
        "answer_max_ms": 1000 * max(answer_s),
    }


def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.media")
    parser.add_argument("--calls", default="1,4,8", help="comma-separated concurrency levels")
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args(list(argv))
    print(
        "calls  worker CPU (share of 1 core)  CPU ms per call-second  calls/core  audio played"
        "  answer p50/max ms"
    )
    for calls in (int(c) for c in args.calls.split(",")):
        r = asyncio.run(_level(calls, args.seconds))
        per_core = 1000 / r["cpu_ms_per_call_s"]
        print(
            f"{calls:5d}  {r['cpu_share']:28.2f}  {r['cpu_ms_per_call_s']:22.1f}  {per_core:10.0f}"
            f"  {r['played']:12.2f}  {r['answer_p50_ms']:6.0f}/{r['answer_max_ms']:.0f}",
            flush=True,
        )


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])

"""A speech worker killed in the middle of an utterance: its heartbeats stop, the edge's
`RecognitionClient` re-opens the session on the other worker and replays the utterance's audio,
and the transcript comes out whole, once. Workers are real processes (`python -m parley_speech`)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import nats
import numpy as np
import pytest
from nats.aio.msg import Msg

from parley_common import subjects
from parley_common.speech_client import RecognitionClient
from parley_common.speech_contract import InputFormat
from parley_devstack.servers import free_port
from parley_devstack.testing import Infra
from parley_speech.engines.espeak import EspeakTTS

from .conftest import speak, words
from .support import Events, frames, open_request, stream, with_silence


@pytest.fixture(scope="module")
def workers(
    infra: Infra, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[subprocess.Popen[bytes]]]:
    logs = tmp_path_factory.mktemp("speech-workers")
    procs, ports = [], []
    for i in range(2):
        port = free_port()
        env = {
            **os.environ,
            **infra.env(),
            "PARLEY_HTTP_PORT": str(port),
            "PARLEY_SPEECH_HEARTBEAT_S": "0.5",
            "PARLEY_SPEECH_STT_CONCURRENCY": "1",
        }
        log = (logs / f"speech-{i}.log").open("wb")
        procs.append(
            subprocess.Popen([sys.executable, "-m", "parley_speech"], env=env, stdout=log, stderr=log)
        )
        ports.append(port)
    try:  # the workers are stopped even when they never got ready
        deadline = time.monotonic() + 60
        for proc, port in zip(procs, ports, strict=True):
            while True:
                assert proc.poll() is None, f"speech worker exited; see {logs}"
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "speech worker not ready"
                time.sleep(0.2)
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


async def test_worker_killed_mid_utterance_the_session_moves_and_nothing_is_lost(
    infra: Infra, workers: list[subprocess.Popen[bytes]], espeak: EspeakTTS
) -> None:
    nc = await nats.connect(infra.nats_url)
    request = open_request()
    heartbeats: list[tuple[float, str, int]] = []

    async def watch(msg: Msg) -> None:
        event = json.loads(msg.data)
        if event["type"] == "heartbeat":
            heartbeats.append((time.monotonic(), event["worker_id"], event["generation"]))

    await nc.subscribe(subjects.session_speech(request.conversation_id), cb=watch)
    events = Events()
    client = RecognitionClient(nc, request, events)
    await client.start()
    first_worker = client.worker_id
    assert first_worker is not None
    pid = int(first_worker[1:].split("-")[0])
    assert pid in {p.pid for p in workers}

    audio = with_silence(await speak(espeak, "What is the weather like in Paris today?"), 16000, 0.5, 1.0)
    chunks = frames(audio, InputFormat())
    await stream(client, chunks[:80])  # 1.6 s: the question is half said
    await events.wait_for(lambda: events.of("speech_started"))
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    await stream(client, chunks[80:])
    await events.wait_for(lambda: events.of("transcript"), timeout=30)

    # The dead worker went silent; the session carried on elsewhere, one generation later.
    assert all(at < killed_at + 0.05 for at, worker, _ in heartbeats if worker == first_worker)
    assert client.reopens == 1 and client.generation == 1 and client.worker_id != first_worker
    # The new worker beats for the session (its first beat may come after the transcript: one a
    # `speech_heartbeat_s`, counted from when it took the session over).
    await events.wait_for(lambda: any(worker == client.worker_id for _, worker, _ in heartbeats), timeout=5)
    # Replay made the new worker say speech_started again: the client delivered it once.
    assert len(events.of("speech_started")) == 1
    finals = events.of("transcript")
    assert len(finals) == 1 and {"weather", "paris", "today"} <= words(finals[0].text)  # type: ignore[union-attr]
    assert finals[0].seq_start is not None and finals[0].seq_start < 25  # type: ignore[union-attr]
    await asyncio.sleep(0.5)
    assert len(events.of("transcript")) == 1
    await client.close()
    await nc.close()


async def test_all_workers_gone_is_a_worker_lost_error(
    infra: Infra, workers: list[subprocess.Popen[bytes]]
) -> None:
    nc = await nats.connect(infra.nats_url)
    events = Events()
    client = RecognitionClient(nc, open_request(), events, open_timeout_s=0.5, open_attempts=2)
    await client.start()
    for proc in workers:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    await client.send_audio(np.zeros(320, np.int16).tobytes())
    await events.wait_for(lambda: events.of("error"), timeout=15)
    error = events.of("error")[0]
    assert error.error.code == "speech.worker_lost" and error.fatal  # type: ignore[union-attr]
    assert client.buffered_ms > 0  # the audio waits in the replay buffer for a worker to come back
    await client.close()
    await nc.close()

"""Text delta coalescing: bursts merge, the first delta and a held-back one are never late."""

from __future__ import annotations

import asyncio
import time

from parley_runtime.sessions.deltas import DeltaCoalescer
from parley_runtime.settings import RuntimeSettings


async def test_a_burst_is_sent_as_the_first_chunk_then_one_more() -> None:
    sent: list[tuple[float, str]] = []

    async def send(text: str) -> None:
        sent.append((time.monotonic(), text))

    deltas = DeltaCoalescer(send, window_s=0.05)
    started = time.monotonic()
    for word in ["a ", "b ", "c ", "d"]:
        await deltas.add(word)
    assert [t for _, t in sent] == ["a "]  # at once
    # Nothing more arrives: the held-back words go out after the window, by themselves.
    deadline = time.monotonic() + 2
    while len(sent) < 2:
        assert time.monotonic() < deadline, "held-back deltas were never sent"
        await asyncio.sleep(0.005)
    assert [t for _, t in sent] == ["a ", "b c d"]
    assert sent[1][0] - started >= 0.045
    await deltas.close()
    assert len(sent) == 2


async def test_spaced_deltas_pass_through_and_close_flushes() -> None:
    sent: list[str] = []

    async def send(text: str) -> None:
        sent.append(text)

    deltas = DeltaCoalescer(send, window_s=0.0)
    for word in ["x", "y"]:
        await deltas.add(word)
    assert sent == ["x", "y"]

    held = DeltaCoalescer(send, window_s=10.0)
    await held.add("1")
    await held.add("2")
    await held.add("3")
    await held.close()  # the answer ended: nothing may stay behind
    assert sent == ["x", "y", "1", "23"]


async def test_the_end_of_an_answer_waits_for_a_delta_being_sent() -> None:
    """A held-back delta whose window ended is being sent when the answer ends (`close`): it goes
    out, before anything `close` sends (it was cancelled half-way before)."""
    gate = asyncio.Event()
    sent: list[str] = []

    async def send(text: str) -> None:
        if text == "b":
            await gate.wait()  # a slow publish
        sent.append(text)

    deltas = DeltaCoalescer(send, window_s=0.01)
    await deltas.add("a")
    await deltas.add("b")
    await asyncio.sleep(0.05)  # the window ended: "b" is on its way
    closing = asyncio.create_task(deltas.close())
    await asyncio.sleep(0.02)
    assert not closing.done()
    gate.set()
    await asyncio.wait_for(closing, 2)
    assert sent == ["a", "b"]


async def test_a_models_pace_is_merged_by_the_default_window() -> None:
    """Tokens 10 ms apart (a model's pace): the first goes out at once, the rest a few per delta,
    not one message each (each costs a bus message, a stored entry and a frame per process)."""
    sent: list[str] = []

    async def send(text: str) -> None:
        sent.append(text)

    window_s = RuntimeSettings().runtime_delta_window_ms / 1000
    deltas = DeltaCoalescer(send, window_s)
    words = [f"w{i} " for i in range(20)]
    for i, word in enumerate(words):
        await deltas.add(word)
        if i == 0:
            assert sent == ["w0 "]  # the first token is never held
        await asyncio.sleep(0.01)
    await deltas.close()
    assert "".join(sent) == "".join(words)
    # ~200 ms of tokens in windows of 50 ms: about five messages (a slow machine sends fewer).
    assert len(sent) <= 8, sent


async def test_a_steady_stream_flushes_as_its_chunks_arrive_not_by_a_timer() -> None:
    """Held text goes out with the first chunk after the window, in that chunk's loop turn: a
    stream at a steady pace wakes nothing up between its chunks. Only a pause lets the timer send
    it, one window after the window ended."""
    sent: list[str] = []

    async def send(text: str) -> None:
        sent.append(text)

    window = 0.5
    deltas = DeltaCoalescer(send, window_s=window)
    started = time.monotonic()
    await deltas.add("a")
    await deltas.add("b")
    await asyncio.sleep(window * 1.2)  # the window ended; no chunk since
    assert sent == ["a"]  # still held: the next chunk takes it
    await deltas.add("c")
    assert sent == ["a", "bc"]  # at once, with the chunk
    await deltas.add("d")  # then the stream pauses
    deadline = time.monotonic() + 5
    while len(sent) < 3:
        assert time.monotonic() < deadline, "held text was never sent"
        await asyncio.sleep(0.01)
    assert sent == ["a", "bc", "d"]
    assert time.monotonic() - started >= window * 1.2 + window  # the timer: one window late
    await deltas.close()
    assert sent == ["a", "bc", "d"]

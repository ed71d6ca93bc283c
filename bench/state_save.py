"""A turn's save of a session's state: the history appended as a list, against the whole state
written as one document (what a save did before change 52, docs/performance.md).

`python -m bench.state_save [--turns N] [--rounds N]`

Uses the Redis at `REDIS_URL`, or starts its own (valkey from the devstack wheel). For each shape
of conversation it runs N turns the way the runtime does (a working copy of the committed state,
the user's message and the answer remembered, the save) twice per round, once through
`StateStore.save` and once through the former save (the same state's JSON, history included, as
one `SET` behind the same owner check, over the same kind of connection), alternating which goes
first, and prints the CPU time of this process per save for both and their ratio. Redis's own CPU
is not in these figures (the full bench, `bench.perf`, has it per process).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from redis.asyncio import Redis

from parley_common.redis_client import LineScript, RedisLine
from parley_devstack.servers import ValkeyServer
from parley_runtime.sessions.state import SessionState
from parley_runtime.sessions.store import StateStore

# The former save: the owner check and the whole state as one document.
_WHOLE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

# (name, message bytes, turns per conversation before a new one starts)
SHAPES = [
    ("ten-turn conversations, 69-byte messages", 69, 10),
    ("long conversation, 2,000-byte messages", 2_000, 0),
]
HISTORY_LIMIT = 100  # the runtime's default (PARLEY_RUNTIME_HISTORY_MAX_MESSAGES)

Save = Callable[[SessionState, str], Awaitable[None]]


def _state() -> SessionState:
    now = datetime.now(UTC)
    variables = {"conversation_id": str(uuid.uuid4()), "agent_id": "bench", "channel": ""}
    return SessionState(
        conversation_id=uuid.uuid4(),
        agent_id="bench",
        started_at=now,
        last_activity_at=now,
        variables=variables,
    )


async def _conversations(
    store: StateStore, save: Save, size: int, per_conversation: int, turns: int
) -> float:
    """CPU seconds of this process per save, over `turns` saves."""
    state = _state()
    await store.claim(state.conversation_id, "bench")
    started = time.process_time()
    for turn in range(turns):
        if per_conversation and turn and turn % per_conversation == 0:
            state = _state()
            await store.claim(state.conversation_id, "bench")
        work = state.working_copy()
        work.remember("user", f"{turn} " + "q" * size, HISTORY_LIMIT)
        work.remember("assistant", f"{turn} " + "a" * size, HISTORY_LIMIT)
        await save(work, "bench")
        state = work
    return (time.process_time() - started) / turns


async def run(redis_url: str, turns: int, rounds: int) -> list[tuple[str, float, float]]:
    redis = Redis.from_url(redis_url)
    store = StateStore(redis, ttl_s=600, closed_ttl_s=60, max_bytes=256 * 1024)
    line = RedisLine(redis.connection_pool)
    whole_script = LineScript(line, _WHOLE)

    async def whole(state: SessionState, token: str) -> None:
        keys = [store.key(state.conversation_id, "owner"), store.key(state.conversation_id, "state")]
        body = state.model_dump_json().encode()
        if not await whole_script(keys=keys, args=[token, body, store.ttl_s]):
            raise RuntimeError("the bench lost its own session")

    results = []
    try:
        for name, size, per_conversation in SHAPES:
            await _conversations(store, store.save, size, per_conversation, min(turns, 50))  # warm-up
            former: list[float] = []
            now: list[float] = []
            for r in range(rounds):
                order = [(whole, former), (store.save, now)]
                for save, into in order if r % 2 == 0 else reversed(order):
                    into.append(await _conversations(store, save, size, per_conversation, turns))
            results.append((name, sorted(former)[len(former) // 2], sorted(now)[len(now) // 2]))
    finally:
        await store.aclose()
        await line.aclose()
        await redis.aclose()
    return results


def report(results: list[tuple[str, float, float]]) -> str:
    lines = [f"{'conversation':44s}{'whole document':>16s}{'history list':>14s}{'ratio':>8s}"]
    for name, former, now in results:
        lines.append(f"{name:44s}{former * 1e6:13.1f} µs{now * 1e6:11.1f} µs{now / former:7.2f}x")
    lines.append("CPU of this process per save (median of the rounds); ratio = history list / whole document")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.state_save", description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=600, help="saves per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="measurements of each save, alternating")
    args = parser.parse_args(argv)
    url = os.environ.get("REDIS_URL")
    if url:
        print(report(asyncio.run(run(url, args.turns, args.rounds))))
        return 0
    with tempfile.TemporaryDirectory(prefix="parley-bench-save-") as tmp:
        server = ValkeyServer(Path(tmp) / "valkey", persistent=False, log_path=Path(tmp) / "valkey.log")
        server.start()
        try:
            server.wait_ready(30)
            print(report(asyncio.run(run(server.url, args.turns, args.rounds))))
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

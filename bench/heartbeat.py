"""What a worker's claim heartbeat costs its process per session held: every held message's
`in progress` ack and the session's lease key, as before change 82 (nats-py's `Msg.in_progress`
for each, the key formatted each time) and as now (`jetstream.in_progress` for all at once, the
key each claim made once), in one process against an embedded nats-server.

    python -m bench.heartbeat [--sessions 5000] [--beats 20] [--rounds 5]

Each round runs `--beats` heartbeats of `--sessions` held messages each way (the order
alternating) and prints this process's CPU per session per heartbeat, the flush to the server
included. The Redis script that renews the leases is the same either way and is not run. See
docs/performance.md, "A worker's heartbeat: one write for every claim".
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

from nats.aio.client import Client
from nats.aio.msg import Msg

from bench._embedded_nats import embedded_nats, median
from bench._options import int_options
from bench.client_loop import run_client
from parley_common.jetstream import in_progress
from parley_runtime.sessions.store import StateStore

KEY_FORMAT = StateStore.key_format  # the runtime's keys of a session


def held(nc: Client, sessions: int) -> list[tuple[uuid.UUID, Msg, str]]:
    """Held session starts: the conversation, its message (a JetStream reply subject, as a claim's
    has), and its lease key made once."""
    out = []
    for i in range(sessions):
        conversation = uuid.uuid4()
        reply = f"$JS.ACK.SESSIONS.runtime-sessions.1.{i + 1}.{i + 1}.1765000000000000000.0"
        msg = Msg(nc, subject="session.start", reply=reply, data=b"")
        out.append((conversation, msg, KEY_FORMAT.format(id=conversation, part="lease")))
    return out


async def before(nc: Client, claims: list[tuple[uuid.UUID, Msg, str]]) -> int:
    for _, msg, _ in claims:
        await msg.in_progress()
    keys = [KEY_FORMAT.format(id=conversation, part="lease") for conversation, _, _ in claims]
    await nc.flush()
    return len(keys)


async def now(nc: Client, claims: list[tuple[uuid.UUID, Msg, str]]) -> int:
    await in_progress([msg for _, msg, _ in claims])
    keys = [key for _, _, key in claims]
    await nc.flush()
    return len(keys)


async def measure(sessions: int, beats: int, rounds: int) -> None:
    async with embedded_nats("parley-bench-heartbeat-") as (nc, _):
        claims = held(nc, sessions)
        ways = {"before": before, "change 82": now}
        print(f"{sessions} held sessions, {beats} heartbeats each way per round")
        print("µs of this process's CPU per session per heartbeat")
        print("round  before  change 82  ratio")
        figures: dict[str, list[float]] = {name: [] for name in ways}
        for index in range(rounds):
            order = list(ways) if index % 2 == 0 else list(reversed(ways))
            result = {}
            for name in order:
                began = time.process_time()
                for _ in range(beats):
                    assert await ways[name](nc, claims) == sessions
                result[name] = (time.process_time() - began) / (beats * sessions) * 1e6
                figures[name].append(result[name])
            old, new = result["before"], result["change 82"]
            print(f"{index + 1:5}  {old:6.2f}  {new:9.2f}  {new / old:.2f}")
        old, new = median(figures["before"]), median(figures["change 82"])
        print(f"median {old:6.2f}  {new:9.2f}  {new / old:.2f}")


def main(argv: Sequence[str] | None = None) -> None:
    args = int_options(__doc__, argv, sessions=5000, beats=20, rounds=5)
    run_client(measure(args.sessions, args.beats, args.rounds))


if __name__ == "__main__":
    main()

"""The stand-ins of `bench.turn_floor`: a session gateway, a runtime worker and the catalog reduced
to the I/O a text turn needs, each a process of its own (`python -m bench._floor_parts <part>`).

They make the same hops as Parley's services, in the same order, with messages of the same sizes
(measured on `parley run` during `bench.perf`'s CPU phase: the input 196 bytes with 157 of
headers, an output ~143, the state 1,757 and a history entry, the turn's transcript 722 with 131
of headers), over the same servers and libraries (uvloop, nats-py, websockets), and nothing
else: no models, validation, spans, logs, metrics, checks or recovery. What they spend is what
the architecture's hops cost on this machine before any of Parley's own work.

- gateway: a WebSocket per session (`/realtime?s=<n>`). Its opening publishes the session's start
  (544 bytes) to `SESSIONS` with an ack and writes its resume record to Redis. A client frame
  becomes the session's input, published to `SESSION_IN` with an ack; the session's outputs, heard
  on `session.*.out`, go to its socket as they are; a `tick` to every socket each second (the
  realtime contract).
- worker (`--workers N` of them, queue group and durable `runtime`): a session's start, pulled from
  the work queue and held unacked, is claimed (its owner set and its state read in one write) and
  greeted with a turn; an input, as the stream republishes it, is a turn: the first `text_delta`
  at once, the state saved to Redis (a `SET` and an `RPUSH` in one write), then the answer's last
  text, `turn_complete` and the transcript, the last two with an ack each, sent together.
- catalog: the transcript's durable pull consumer, a fetch's messages inserted in one
  transaction, then acked.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
from collections.abc import Coroutine, Sequence
from typing import Any, cast

import asyncpg
import nats
import uvloop
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig
from websockets.asyncio.server import ServerConnection, serve

from parley_common import subjects
from parley_common.jetstream import shared_durable
from parley_common.session_contract import ensure_streams

DURABLE = "floor-catalog"
BATCH, BATCH_WAIT_S = 64, 0.2  # the catalog's defaults (catalog_conversations_batch*)
STATE = b"s" * 1757  # a session's state after the bench's turns (parley:rt:session:<id>:state)
HISTORY_ENTRY = b"h" * 190  # a turn's two messages in the history list (3,917 bytes after ~20 turns)
TRANSCRIPT = b"t" * 722
TURN_COMPLETE = (
    b'{"index":%d,"event":{"type":"turn_complete"},"timing":{"started_at":"2026-12-07T19:40:00.587391Z"}}'
)
START = b"a" * 544  # a session's start message (sessions.start)
RESUME_RECORD = b"r" * 106  # the gateway's record of a socket (parley:gw:session:<id>)
OWNER = b"o" * 26
TICK_S = 1.0
READY = "ready"  # what a stand-in prints once it serves


def trace_headers(msg_id: str) -> dict[str, str]:
    """W3C trace context and an id for the stream's dedupe, as every Parley message carries. Its
    ids from `random`, as OpenTelemetry's id generator makes them (no system call)."""
    return {
        "traceparent": f"00-{random.getrandbits(128):032x}-{random.getrandbits(64):016x}-01",
        "Nats-Msg-Id": msg_id,
    }


class Acks:
    """A process's acked publications over one inbox: a future per publication, no task per wait."""

    def __init__(self, nc: Client) -> None:
        self.nc, self.prefix, self.next = nc, f"_INBOX.{secrets.token_hex(8)}.", 0
        self.waiting: dict[str, asyncio.Future[Msg]] = {}

    async def start(self) -> None:
        await self.nc.subscribe(self.prefix + "*", cb=self._on_ack)

    async def _on_ack(self, msg: Msg) -> None:
        future = self.waiting.pop(msg.subject[len(self.prefix) :], None)
        if future is not None and not future.done():
            future.set_result(msg)

    async def publish(self, subject: str, data: bytes, headers: dict[str, str]) -> asyncio.Future[Msg]:
        self.next += 1
        token = str(self.next)
        future = self.waiting[token] = asyncio.get_running_loop().create_future()
        await self.nc.publish(subject, data, reply=self.prefix + token, headers=headers)
        return future


class RedisLine(asyncio.Protocol):
    """One connection to Redis: commands written as RESP, each reply a future, in order. Each reply
    the stand-ins get is one line (`+OK`, `:n`, and `$-1`: a new session's claim finds no state)."""

    def __init__(self) -> None:
        self.replies: list[asyncio.Future[bytes]] = []
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    @classmethod
    async def connect(cls, port: int) -> RedisLine:
        _, line = await asyncio.get_running_loop().create_connection(cls, "127.0.0.1", port)
        return line

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            future = self.replies.pop(0)
            if line.startswith(b"-"):
                future.set_exception(RuntimeError(line.decode()))
            else:
                future.set_result(line)

    def commands(self, *commands: Sequence[bytes]) -> list[asyncio.Future[bytes]]:
        """Write `commands` in one write; their replies' futures."""
        assert self.transport is not None
        out = bytearray()
        loop = asyncio.get_running_loop()
        futures = []
        for args in commands:
            out += b"*%d\r\n" % len(args)
            for arg in args:
                out += b"$%d\r\n%s\r\n" % (len(arg), arg)
            futures.append(loop.create_future())
        self.replies += futures
        self.transport.write(bytes(out))
        return futures


# ----------------------------------------------------------------------------- the gateway


async def gateway(nc: Client, port: int, redis_port: int) -> None:
    acks = Acks(nc)
    await acks.start()
    redis = await RedisLine.connect(redis_port)
    sockets: dict[str, ServerConnection] = {}
    sent = 0

    async def on_output(msg: Msg) -> None:
        ws = sockets.get(msg.subject.split(".")[1])
        if ws is not None:
            await ws.send(msg.data.decode())

    async def session(ws: ServerConnection) -> None:
        nonlocal sent
        assert ws.request is not None
        sid = ws.request.path.rpartition("s=")[2]
        sockets[sid] = ws
        # The opening: the session's start to the workers' queue, its resume record.
        start = await acks.publish(subjects.SESSION_START, START, trace_headers(f"{sid}:start"))
        (recorded,) = redis.commands((b"SET", b"floor:gw:%s" % sid.encode(), RESUME_RECORD))
        await start
        await recorded
        head = (
            b'{"input":{"at":"2026-12-07T19:40:14.819565Z","connection_id":"%s",'
            % secrets.token_hex(16).encode()
        )
        try:
            async for frame in ws:
                sent += 1
                text = frame if isinstance(frame, str) else frame.decode()
                body = head + text.strip()[1:].encode() + b"}"
                await (await acks.publish(subjects.session_in(sid), body, trace_headers(f"{sid}:{sent}")))
        finally:
            sockets.pop(sid, None)

    async def ticks() -> None:
        while True:
            await asyncio.sleep(TICK_S)
            for ws in list(sockets.values()):
                await ws.send('{"type":"tick","timing":{"deadline_at":"2026-12-07T19:50:14.456870Z"}}')

    await nc.subscribe(subjects.session_out("*"), cb=on_output)
    async with serve(session, "127.0.0.1", port, compression=None, ping_interval=None, backlog=4096):
        print(READY, flush=True)
        await ticks()  # for as long as the process lives


# ----------------------------------------------------------------------------- a worker


async def worker(nc: Client, redis_port: int) -> None:
    acks = Acks(nc)
    await acks.start()
    redis = await RedisLine.connect(redis_port)
    index: dict[str, int] = {}

    async def turn(sid: str) -> None:
        out = subjects.session_out(sid)
        n = index.get(sid, 0)
        await nc.publish(out, b'{"index":%d,"event":{"type":"text_delta","text":"You said: How long"}}' % n)
        key = b"floor:%s" % sid.encode()
        save = ((b"SET", key + b":state", STATE), (b"RPUSH", key + b":history", HISTORY_ENTRY))
        for saved in redis.commands(*save):
            await saved
        await nc.publish(
            out, b'{"index":%d,"event":{"type":"text_delta","text":" does a message take?"}}' % (n + 1)
        )
        headers = trace_headers(f"{sid}:{n + 2}")
        done = TURN_COMPLETE % (n + 2)
        together = [
            await acks.publish(out, done, headers),
            await acks.publish(subjects.conversation_event(sid), TRANSCRIPT, headers),
        ]
        for ack in together:
            await ack
        index[sid] = n + 3

    async def claim(msg: Msg) -> None:
        """A session started: claimed (its owner set and its state read in one write), greeted.
        Its start stays unacked, as a worker holds it while it owns the session."""
        sid = msg.headers["Nats-Msg-Id"].partition(":")[0] if msg.headers else ""
        key = b"floor:%s" % sid.encode()
        for claimed in redis.commands((b"SET", key + b":owner", OWNER, b"NX"), (b"GET", key + b":state")):
            await claimed
        await turn(sid)

    async def on_input(msg: Msg) -> None:
        run(turn(msg.subject.split(".")[1]))

    await nc.subscribe(subjects.session_in_stored("*"), queue=subjects.QUEUE_RUNTIME, cb=on_input)
    # As the runtime's `SESSION_STARTS`: every held session keeps its start unacked, no cap on them.
    held = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=600, max_deliver=-1, max_ack_pending=-1)
    starts = await nc.jetstream().pull_subscribe(
        subjects.SESSION_START, durable=subjects.QUEUE_RUNTIME, config=held
    )
    print(READY, flush=True)
    while True:
        try:
            for msg in await starts.fetch(32, timeout=5):
                run(claim(msg))
        except nats.errors.TimeoutError:
            continue


_running: set[asyncio.Task[None]] = set()


def run(work: Coroutine[Any, Any, None]) -> None:
    """A task per turn and per claim, as a worker makes one: sessions overlap, and a subscription's
    next message is not held back by this one's round trips."""
    task = asyncio.create_task(work)
    _running.add(task)
    task.add_done_callback(_running.discard)


# ----------------------------------------------------------------------------- the catalog


async def catalog(nc: Client, database_url: str) -> None:
    db = await asyncpg.connect(database_url)
    await db.execute("CREATE TABLE IF NOT EXISTS floor_messages (subject text, seq bigint, body bytea)")
    js = nc.jetstream()
    config: ConsumerConfig = shared_durable()
    pull = await js.pull_subscribe(f"{subjects.CONVERSATION_EVENTS}.>", durable=DURABLE, config=config)
    loop = asyncio.get_running_loop()
    print(READY, flush=True)
    while True:
        started = loop.time()
        try:
            messages = await pull.fetch(BATCH, timeout=5)
        except nats.errors.TimeoutError:
            continue
        async with db.transaction():
            await db.executemany(
                "INSERT INTO floor_messages VALUES ($1, $2, $3)",
                [(m.subject, m.metadata.sequence.stream, m.data) for m in messages],
            )
        for m in messages:
            await m.ack()
        await asyncio.sleep(max(0.0, BATCH_WAIT_S - (loop.time() - started)))


# ----------------------------------------------------------------------------- main


async def main_async(args: Any) -> None:
    nc = await nats.connect(args.nats, name=f"floor-{args.part}")
    if args.part == "gateway":
        streams = [
            subjects.SESSIONS_STREAM,
            subjects.SESSION_IN_STREAM,
            subjects.SESSION_OUT_STREAM,
            subjects.CONVERSATIONS_STREAM,
        ]
        await ensure_streams(nc.jetstream(), streams, replicas=1)
        await gateway(nc, args.port, args.redis_port)
    elif args.part == "worker":
        await worker(nc, args.redis_port)
    else:
        await catalog(nc, args.database)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A stand-in of bench.turn_floor.")
    parser.add_argument("part", choices=["gateway", "worker", "catalog"])
    parser.add_argument("--nats", required=True)
    parser.add_argument("--port", type=int, default=0, help="gateway: its WebSocket port")
    parser.add_argument("--redis-port", type=int, default=0, help="gateway and worker: Redis (Valkey)")
    parser.add_argument("--database", default="", help="catalog: PostgreSQL URL")
    args = parser.parse_args(argv)
    os.environ.setdefault("PYTHONHASHSEED", "0")
    uvloop.run(main_async(args))


if __name__ == "__main__":
    main()

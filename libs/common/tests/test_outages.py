"""The bus and Redis helpers against servers this test kills and restarts (nats-server, valkey).

- `publish_durably` stores a message once however many attempts a broker restart cost, and
  reports failure only for a message that was not stored; so does `publish_durably_together`;
- an `OrderedReader` gets messages again right after a restarted broker is back (nats-py alone
  notices the lost consumer only after two missed idle heartbeats, 10-20 s);
- `bus.request` sends a request again while nobody is subscribed to answer it;
- the Redis client of `redis_client` queues a burst on its bounded pool instead of failing, fails
  fast while Redis is down, and works at once when it is back;
- an HTTP route failing because Redis is down answers 503 `service.unavailable`.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from fastapi import APIRouter
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import StreamConfig
from nats.js.errors import APIError, NoStreamResponseError
from pydantic import BaseModel
from redis.exceptions import ConnectionError as RedisConnectionError
from structlog.testing import capture_logs

from parley_common.acked_together import Publication, publish_durably_together
from parley_common.bus import BusEvents, make_broker, request
from parley_common.held_subscription import HeldSubscription
from parley_common.http import create_app
from parley_common.jetstream import publish_durably
from parley_common.ordered_reader import OrderedReader
from parley_common.outages import OUTAGE_ERRORS
from parley_common.redis_client import make_redis
from parley_common.settings import CommonSettings
from parley_devstack.servers import NatsServer, ValkeyServer

RESTART_BOUND_S = 5.0  # an ordered reader is back well before nats-py's own 10-20 s


class Nats:
    """A nats-server that can be killed and started again on the same port and data directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.server = NatsServer(root, log_path=root / "nats.log")
        self.server.start()
        self.server.wait_ready(30)

    def kill(self) -> None:
        self.server.signal(signal.SIGKILL)
        assert self.server.proc is not None
        self.server.proc.wait(10)
        self.server.close_log()

    async def restart(self) -> None:
        old = self.server
        self.server = NatsServer(
            self.root, port=old.port, http_port=old.http_port, log_path=self.root / "n2.log"
        )
        self.server.start()
        await asyncio.to_thread(self.server.wait_ready, 30)


@pytest.fixture
async def broker_and_client(tmp_path: Path) -> AsyncIterator[tuple[Nats, Client, BusEvents, str]]:
    server = Nats(tmp_path / "nats")
    events = BusEvents()
    nc = await nats.connect(
        server.server.url,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.2,
        reconnected_cb=events.reconnected,
    )
    subject = f"test.{uuid.uuid4().hex[:8]}"
    await nc.jetstream().add_stream(StreamConfig(name="TEST", subjects=[subject], duplicate_window=60))
    try:
        yield server, nc, events, subject
    finally:
        await nc.close()
        server.server.stop()


async def _count(nc: Client) -> int:
    return int((await nc.jetstream().stream_info("TEST")).state.messages)


async def test_a_publication_through_a_broker_restart_is_stored_once(
    broker_and_client: tuple[Nats, Client, BusEvents, str],
) -> None:
    server, nc, _, subject = broker_and_client
    server.kill()
    # A plain JetStream publish times out while the broker is away, although nats-py keeps the
    # message and sends it once the broker is back: the false error of issue 10.
    with pytest.raises(nats.errors.TimeoutError):
        await nc.jetstream().publish(subject, b"once", timeout=0.3, headers={"Nats-Msg-Id": "m-1"})
    publishing = asyncio.create_task(publish_durably(nc, subject, b"once", msg_id="m-1", timeout_s=30))
    await asyncio.sleep(1.0)  # the broker stays away for a while
    assert not publishing.done()
    await server.restart()
    await publishing
    again = await publish_durably(nc, subject, b"once", msg_id="m-1", timeout_s=5)
    assert again.duplicate
    assert await _count(nc) == 1


async def test_a_publication_is_acked_or_fails_as_jetstream_says(
    broker_and_client: tuple[Nats, Client, BusEvents, str],
) -> None:
    """`publish_durably`'s own request (no `JetStreamContext`) reports what `js.publish` did: the
    ack (a copy within the window marked duplicate), no stream as `NoStreamResponseError` (an
    outage: retried until the deadline), an API error raised at once."""
    _server, nc, _, subject = broker_and_client
    first = await publish_durably(nc, subject, b"a", msg_id="a-1", timeout_s=5)
    assert (first.stream, first.seq, first.duplicate) == ("TEST", 1, None)
    again = await publish_durably(nc, subject, b"a", msg_id="a-1", timeout_s=5)
    assert (again.stream, again.seq, again.duplicate) == ("TEST", 1, True)
    started = time.monotonic()
    with pytest.raises(NoStreamResponseError):
        await publish_durably(nc, f"nostream.{uuid.uuid4().hex}", b"x", msg_id="x-1", timeout_s=0.5)
    assert time.monotonic() - started >= 0.4  # retried while it lasted
    started = time.monotonic()
    with pytest.raises(APIError) as refused:
        await publish_durably(
            nc, subject, b"b", msg_id="b-1", timeout_s=5, headers={"Nats-Expected-Stream": "OTHER"}
        )
    assert not isinstance(refused.value, OUTAGE_ERRORS) and time.monotonic() - started < 1
    assert await _count(nc) == 1


async def test_publications_together_are_each_stored_once_and_acked_in_order(
    broker_and_client: tuple[Nats, Client, BusEvents, str],
) -> None:
    """`publish_durably_together` (a turn's tail and transcript): sent together, acked in the order
    given, each stored once under its id (sent again, every one a duplicate); one without a stream,
    or one JetStream refuses, fails as `publish_durably` fails it, and the others are stored."""
    _server, nc, _, subject = broker_and_client
    batch = [Publication(subject, f"m{i}".encode(), f"t-{i}", {"traceparent": "x"}) for i in range(3)]
    acks = await publish_durably_together(nc, batch, timeout_s=5)
    assert [(a.stream, a.seq, a.duplicate) for a in acks] == [
        ("TEST", 1, None),
        ("TEST", 2, None),
        ("TEST", 3, None),
    ]
    again = await publish_durably_together(nc, batch, timeout_s=5)
    assert [(a.seq, a.duplicate) for a in again] == [(1, True), (2, True), (3, True)]
    stored = await nc.jetstream().get_msg("TEST", 2)
    assert stored.data == b"m1" and (stored.headers or {}).get("Nats-Msg-Id") == "t-1"
    with pytest.raises(NoStreamResponseError):
        await publish_durably_together(
            nc,
            [Publication(subject, b"kept", "t-3"), Publication(f"nostream.{uuid.uuid4().hex}", b"x", "x-1")],
            timeout_s=0.5,
        )
    with pytest.raises(APIError) as refused:
        await publish_durably_together(
            nc,
            [
                Publication(subject, b"b", "b-1", {"Nats-Expected-Stream": "OTHER"}),
                Publication(subject, b"c", "c-1"),
            ],
            timeout_s=5,
        )
    assert not isinstance(refused.value, OUTAGE_ERRORS)
    assert await _count(nc) == 5  # m0-m2, "kept", "c"; nothing twice, "b" refused


async def test_publications_together_through_a_broker_restart_are_stored_once(
    broker_and_client: tuple[Nats, Client, BusEvents, str],
) -> None:
    server, nc, _, subject = broker_and_client
    first = [Publication(subject, b"a", "r-a"), Publication(subject, b"b", "r-b")]
    await publish_durably_together(nc, first, timeout_s=5)
    server.kill()
    later = [*first, Publication(subject, b"c", "r-c"), Publication(subject, b"d", "r-d")]
    publishing = asyncio.create_task(publish_durably_together(nc, later, timeout_s=30))
    await asyncio.sleep(1.0)  # the broker stays away for a while
    assert not publishing.done()
    await server.restart()
    acks = await publishing
    assert [(a.seq, bool(a.duplicate)) for a in acks] == [(1, True), (2, True), (3, False), (4, False)]
    assert await _count(nc) == 4


async def test_a_publication_reported_failed_was_not_stored(
    broker_and_client: tuple[Nats, Client, BusEvents, str],
) -> None:
    server, nc, _, subject = broker_and_client
    server.kill()
    await asyncio.wait_for(_until(lambda: not nc.is_connected), 10)  # the client knows it is down
    with pytest.raises(TimeoutError):
        await publish_durably(nc, subject, b"lost", msg_id="m-2", timeout_s=0.5)
    await server.restart()
    deadline = time.monotonic() + 10
    while not nc.is_connected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await nc.flush()
    assert await _count(nc) == 0  # nothing was left in the client's buffer to be sent later


async def test_an_ordered_reader_is_back_right_after_a_broker_restart(
    broker_and_client: tuple[Nats, Client, BusEvents, str],
) -> None:
    server, nc, events, subject = broker_and_client
    got: list[tuple[int, bytes]] = []
    arrived = asyncio.Event()

    async def on_msg(msg: Msg) -> None:
        got.append((msg.metadata.sequence.stream, msg.data))
        arrived.set()

    for n in (1, 2):
        await nc.jetstream().publish(subject, f"m{n}".encode())
    reader = OrderedReader(nc, events, stream="TEST", subject=subject, on_msg=on_msg)
    await reader.open()
    try:
        await asyncio.wait_for(_until(lambda: len(got) == 2), 5)
        server.kill()
        await server.restart()
        arrived.clear()
        back = time.monotonic()
        await publish_durably(nc, subject, b"m3", msg_id="m3", timeout_s=10)
        await asyncio.wait_for(arrived.wait(), RESTART_BOUND_S)
        print(f"\nordered reader back {time.monotonic() - back:.2f} s after the broker")
        assert got == [(1, b"m1"), (2, b"m2"), (3, b"m3")]
    finally:
        await reader.close()


async def test_an_ordered_reader_answers_flow_control_as_it_comes(
    broker_and_client: tuple[Nats, Client, BusEvents, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backlog far larger than the server sends an ordered consumer before it wants a
    flow-control reply arrives whole, in order, over a held subscription (no nats-py poller or
    queue), the replies published as the requests came."""
    _server, nc, events, subject = broker_and_client
    count, payload = 3000, b"x" * 4096  # 12 MB
    for _ in range(count):
        await nc.publish(subject, payload)
    await nc.flush()
    await asyncio.wait_for(_until_stored(nc, count), 30)
    replies: list[str] = []
    publish = nc.publish

    async def counting(subject: str, payload: bytes = b"", reply: str = "", headers: Any = None) -> None:
        if subject.startswith("$JS.FC."):
            replies.append(subject)
        await publish(subject, payload, reply, headers)

    monkeypatch.setattr(nc, "publish", counting)
    got: list[int] = []

    async def on_msg(msg: Msg) -> None:
        got.append(msg.metadata.sequence.stream)
        await asyncio.sleep(0)

    reader = OrderedReader(nc, events, stream="TEST", subject=subject, on_msg=on_msg)
    await reader.open()
    try:
        assert isinstance(reader._sub, HeldSubscription)
        await asyncio.wait_for(_until(lambda: len(got) == count), 60)
        assert got == list(range(1, count + 1))
        assert replies  # the server asked for flow control, and was answered
    finally:
        await reader.close()


async def _until_stored(nc: Client, count: int) -> None:
    while await _count(nc) < count:
        await asyncio.sleep(0.05)


async def _until(probe: Callable[[], bool]) -> None:
    while not probe():
        await asyncio.sleep(0.02)


class _Ping(BaseModel):
    n: int


async def test_a_request_nobody_received_is_sent_again_until_someone_answers(tmp_path: Path) -> None:
    server = Nats(tmp_path / "nats")
    broker = make_broker(CommonSettings(nats_url=server.server.url, service_name="test"))
    responder = await nats.connect(server.server.url)
    try:
        await broker.start()

        async def answer_late() -> None:
            await asyncio.sleep(0.5)  # e.g. the serving side subscribing again after a restart

            async def reply(msg: Msg) -> None:
                await msg.respond(msg.data)

            await responder.subscribe("test.ping", cb=reply)

        late = asyncio.create_task(answer_late())
        reply = await request(broker, "test.ping", _Ping(n=7), _Ping, timeout=5)
        assert reply.n == 7
        await late
    finally:
        await broker.stop()
        await responder.close()
        server.server.stop()


async def test_a_lost_server_is_a_warning_and_the_brokers_own_stop_is_not(tmp_path: Path) -> None:
    """A disconnect warns (an incident); nats-py calls the same callback when the broker itself
    stops, which is logged as a close, not as a disconnect, so a clean stop has no warning."""
    server = Nats(tmp_path / "nats")
    broker = make_broker(
        CommonSettings(nats_url=server.server.url, service_name="test", nats_reconnect_wait_s=0.1)
    )
    try:
        await broker.start()
        with capture_logs() as lost:
            server.kill()
            await asyncio.wait_for(_until(lambda: any(e["event"] == "bus.disconnected" for e in lost)), 10)
        await server.restart()
        await asyncio.wait_for(_until(lambda: broker.connection.is_connected), 10)
        with capture_logs() as stopped:
            await broker.stop()
        assert [(e["event"], e["log_level"]) for e in stopped if e["event"].startswith("bus.")] == [
            ("bus.closed", "info")
        ]
    finally:
        server.server.stop()


# ------------------------------------------------------------------------------------ Redis


async def test_a_burst_queues_on_the_bounded_pool(valkey: ValkeyServer) -> None:
    settings = CommonSettings(redis_url=valkey.url, redis_max_connections=2)
    redis = make_redis(settings)
    try:
        # 50 at once on 2 connections: they wait their turn (a plain pool raises "Too many connections").
        results = await asyncio.gather(*(redis.incr("burst") for _ in range(50)))
        assert sorted(results) == list(range(1, 51))
    finally:
        await redis.aclose()


async def test_redis_down_fails_fast_and_a_restart_is_absorbed(valkey: ValkeyServer, tmp_path: Path) -> None:
    redis = make_redis(CommonSettings(redis_url=valkey.url))
    try:
        await asyncio.gather(*(redis.set(f"k{n}", n) for n in range(10)))  # a pool of connections
        valkey.signal(signal.SIGKILL)
        assert valkey.proc is not None
        valkey.proc.wait(10)
        started = time.monotonic()
        with pytest.raises(RedisConnectionError):
            await redis.get("k1")
        assert time.monotonic() - started < 5
        again = ValkeyServer(tmp_path / "valkey", port=valkey.port, persistent=False)
        again.start()
        try:
            again.wait_ready(30)
            # Every pooled connection is dead: each is dropped and replaced, no command fails.
            assert await asyncio.gather(*(redis.set(f"k{n}", n) for n in range(10))) == [True] * 10
        finally:
            again.stop()
    finally:
        await redis.aclose()


async def test_an_http_route_hit_by_an_outage_answers_503() -> None:
    router = APIRouter()

    @router.get("/needs-redis")
    async def needs_redis() -> None:
        raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6390. Connection refused.")

    app = create_app(CommonSettings(), title="t", routers=[router])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        resp = await http.get("/needs-redis")
    assert resp.status_code == 503
    assert resp.json()["code"] == "service.unavailable"

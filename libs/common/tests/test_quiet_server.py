"""The served processes' uvicorn (`kit.runner.QuietServer`): it wakes once a second, not ten times,
still answers with a Date header, and a signal to stop stops it at once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from email.utils import parsedate_to_datetime

import httpx
import uvicorn
from fastapi import FastAPI

from parley_common.kit.runner import QuietServer
from parley_devstack.servers import free_port


async def test_it_wakes_once_a_second_and_answers_with_a_date() -> None:
    app = FastAPI()

    @app.get("/")
    async def root() -> dict[str, bool]:
        return {"ok": True}

    port = free_port()
    server = QuietServer(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off"))
    ticks: list[int] = []
    on_tick = server.on_tick

    async def counted(counter: int) -> bool:
        ticks.append(counter)
        return await on_tick(counter)

    server.on_tick = counted  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.01)
        ticks.clear()
        await asyncio.sleep(2.5)
        assert 2 <= len(ticks) <= 4  # uvicorn's own loop: 25
        assert all(counter % 10 == 0 for counter in ticks)  # each refreshes the Date header
        async with httpx.AsyncClient() as client:
            reply = await client.get(f"http://127.0.0.1:{port}/")
        assert reply.json() == {"ok": True}
        assert abs(time.time() - parsedate_to_datetime(reply.headers["date"]).timestamp()) < 3
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def test_a_cancel_as_a_stop_wakes_it_is_not_lost() -> None:
    """On Python 3.11 `asyncio.wait_for` swallowed a cancel that landed as its wait ended: a cancel
    arriving as `handle_exit`'s wake-up did left the loop running (here it then saw the exit flag
    and returned as if stopped, the cancel lost)."""
    config = uvicorn.Config(FastAPI(), log_config=None, lifespan="off")
    config.load()
    server = QuietServer(config)
    server.TICK_S = 60.0
    task = asyncio.create_task(server.main_loop())
    for _ in range(5):  # into its wait
        await asyncio.sleep(0)
    assert server._woken is not None and not task.done()
    server.should_exit = True  # handle_exit, and its wake-up (through the loop) ...
    server._woken.set()
    task.cancel()  # ... as the task is cancelled
    done, _ = await asyncio.wait({task}, timeout=2)
    assert done, "the loop ran on after it was cancelled"
    assert task.cancelled(), "the loop's cancel was lost"


SERVED = """
import sys
from fastapi import FastAPI
from parley_common.kit import runner
from parley_common.settings import CommonSettings

runner.QuietServer.TICK_S = 60  # without the wake-up, a stop would wait for the next tick
settings = CommonSettings(service_name="quiet", http_host="127.0.0.1", http_port=int(sys.argv[1]))
runner.serve(FastAPI(), settings)
"""


def test_a_signal_to_stop_stops_it_at_once() -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVED, str(port)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/docs", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        started = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
        assert time.monotonic() - started < 5  # not the 60 s tick
    finally:
        proc.kill()
        proc.wait()


async def _connected(port: int, count: int) -> int:
    """How many of `count` connections to a server that accepts none complete their handshake (the
    kernel's accept queue holds backlog + 1; a SYN beyond it is dropped, so its connect times out)."""

    async def connect() -> asyncio.StreamWriter | None:
        try:
            return (await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.5))[1]
        except (TimeoutError, OSError):
            return None

    writers = [await connect() for _ in range(count)]  # one by one: the queue fills in order
    for writer in writers:
        if writer is not None:
            writer.close()
    return sum(writer is not None for writer in writers)


async def test_it_listens_with_the_configured_backlog() -> None:
    # A stopped process accepts nothing: what connects is what the kernel queues for it.
    port = free_port()
    env = {**os.environ, "PARLEY_LISTEN_BACKLOG": "16"}
    proc = subprocess.Popen([sys.executable, "-c", SERVED, str(port)], stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient() as client:
            while True:
                try:
                    await client.get(f"http://127.0.0.1:{port}/docs", timeout=1)
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "the server did not start"
                    await asyncio.sleep(0.1)
        os.kill(proc.pid, signal.SIGSTOP)
        assert await _connected(port, 20) == 17  # uvicorn's default backlog (2048) would take all 20
    finally:
        proc.kill()
        proc.wait()


def test_the_default_backlog_is_the_kernels_usual_cap() -> None:
    from parley_common.settings import CommonSettings

    assert CommonSettings().listen_backlog == 4096

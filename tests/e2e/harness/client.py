"""A raw Kivox realtime protocol client, as a browser SDK talks to the gateway."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from tests.e2e.harness.stack import Stack
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed


class Session:
    """A raw protocol client: what it sends and every event it gets, ticks kept apart."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []  # after the handshake, ticks excluded
        self.ticks: list[dict[str, Any]] = []
        self.conversation_id = ""
        self.binary: list[bytes] = []

    async def send(self, frame: dict[str, Any] | str | bytes) -> None:
        await self.ws.send(json.dumps(frame) if isinstance(frame, dict) else frame)

    async def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        while True:
            raw = await asyncio.wait_for(self.ws.recv(), timeout)
            if isinstance(raw, bytes):
                self.binary.append(raw)
                continue
            event: dict[str, Any] = json.loads(raw)
            if event["type"] == "tick":
                self.ticks.append(event)
                continue
            self.events.append(event)
            return event

    async def until(self, kind: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Events up to and including the next one of `kind`."""
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            event = await self.recv(max(0.01, deadline - time.monotonic()))
            got.append(event)
            if event["type"] == kind:
                return got

    async def say(self, text: str) -> list[dict[str, Any]]:
        await self.send({"type": "input_text", "text": text})
        return await self.until("turn_complete")

    async def closed(self, timeout: float = 10.0) -> str:
        """The reason of the session_closed event, then the server closes the socket."""
        events = await self.until("session_closed", timeout)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(self.ws.recv(), timeout)
        return str(events[-1]["reason"])


@asynccontextmanager
async def session(
    stack: Stack,
    agent_id: str,
    *,
    cookie: str | None = None,
    token: str | None = None,
    resume: tuple[str, int] | None = None,
    expect_error: bool = False,
) -> AsyncIterator[Session]:
    url = stack.gateway_url
    params = []
    if token:
        params.append(f"token={token}")
    if resume:
        params += [f"resume={resume[0]}", f"last_event={resume[1]}"]
    if params:
        url += "?" + "&".join(params)
    headers = {"Cookie": f"kivox_session={cookie}"} if cookie else {}
    async with connect(url, additional_headers=headers, max_size=None) as ws:
        s = Session(ws)
        await s.send({"type": "handshake", "agent_id": agent_id, "channel": "web-text"})
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if expect_error:
            assert reply["type"] == "handshake_error", reply
            s.events.append(reply)
        else:
            assert reply["type"] == "handshake_ok", reply
            s.conversation_id = reply["conversation_id"]
        yield s


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(e["chunk"] for e in events if e["type"] == "text_delta")


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]

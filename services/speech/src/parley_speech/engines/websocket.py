"""What the WebSocket streaming engines (Deepgram STT, ElevenLabs TTS) share: opening the
provider's socket and reading its JSON messages, with every failure mapped to its
`speech.engine_*` code (errors.py). What each sends, and what its messages mean, stays in its
own module.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Callable
from typing import Any, Required, TypedDict

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from parley_speech.engines import errors


class SocketOptions(TypedDict, total=False):
    """Where a WebSocket engine connects and how long it waits: the keywords its constructor
    shares with every other WebSocket engine (`WebSocketEngine.__init__`)."""

    url: Required[str]
    api_key: Required[str]
    connect_timeout_s: float
    read_timeout_s: float


class WebSocketEngine:
    """A provider reached over one WebSocket per utterance or sentence."""

    name: str
    # The largest message the provider may send (audio messages of a TTS are large).
    max_message_bytes: int

    def __init__(
        self, *, url: str, api_key: str, connect_timeout_s: float = 5.0, read_timeout_s: float = 15.0
    ) -> None:
        self.url, self.api_key = url, api_key
        self.connect_timeout_s, self.read_timeout_s = connect_timeout_s, read_timeout_s

    async def open_socket(self, url: str, headers: dict[str, str]) -> ClientConnection:
        """Connected, or the handshake's failure as a ParleyError (a refused key: its status)."""
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                return await connect(
                    url, additional_headers=headers, open_timeout=None, max_size=self.max_message_bytes
                )
        except TimeoutError as exc:
            raise errors.timeout(self.name) from exc
        except InvalidStatus as exc:
            body = exc.response.body.decode("utf-8", "replace") if exc.response.body else ""
            raise errors.from_status(self.name, exc.response.status_code, body) from exc
        except (InvalidHandshake, OSError) as exc:
            raise errors.unreachable(self.name, exc) from exc

    async def messages(
        self,
        ws: ClientConnection,
        *,
        timeout_s: Callable[[], float | None],
        ends_normally: Callable[[int | None], bool],
        skip_binary: bool = True,
    ) -> AsyncGenerator[dict[str, Any]]:
        """The provider's JSON objects until it closes. `timeout_s()` bounds each wait (None:
        none); a close whose code `ends_normally` ends the iteration, any other is an error."""
        while True:
            try:
                async with asyncio.timeout(timeout_s()):
                    message = await ws.recv()
            except TimeoutError as exc:
                raise errors.timeout(self.name) from exc
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else None
                if ends_normally(code):
                    return
                reason = exc.rcvd.reason if exc.rcvd is not None else ""
                raise errors.from_close(self.name, code, reason) from exc
            if skip_binary and isinstance(message, bytes):
                continue
            try:
                data = json.loads(message)
            except ValueError as exc:
                raise errors.protocol(self.name, "a message is not JSON") from exc
            if not isinstance(data, dict):
                raise errors.protocol(self.name, "a message is not a JSON object")
            yield data

"""One WebRTC call: an aiortc peer connection bridged to a voice session on `/realtime`.

The media worker is a Kivox client of the gateway like any other (gateway.py opens the socket);
the page's data-channel messages are checked in datachannel.py.

| peer | `/realtime` |
| --- | --- |
| microphone track (Opus) | `{"type": "input_audio_stream"}` + one PCM16 chunk, every `chunk_ms` |
| outgoing track (Opus) | `audio_delta {size}` + PCM16 (paced by wall time; dropped on barge-in, cancel) |
| data channel, server → client | every other event, the JSON object as `/realtime` sent it (after `ready`) |
| data channel, client → server | `cancel`, `input_text`, `end` (anything else gets an `error` back) |
| peer closed / failed / never connected | `end`, then the socket is closed |
| `session_closed`, or the socket lost | the peer is closed (a lost socket: `error` `webrtc.media_lost`) |
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from parley_common.errors import Codes
from parley_common.media_contract import (
    DcCancel,
    DcEnd,
    DcInputText,
    DcReady,
    MediaOfferRequest,
)
from parley_common.token_bucket import TokenBucket
from parley_media.audio import DEFAULT_INPUT, DEFAULT_OUTPUT, MicEncoder, PlayoutTrack, parse_format
from parley_media.datachannel import error_event, parse_client_message
from parley_media.gateway import open_realtime
from parley_media.settings import MediaSettings

log = structlog.get_logger(__name__)

# Items waiting to be written to `/realtime` (audio chunks and forwarded messages). Beyond this the
# socket cannot keep up; microphone audio is then dropped (counted), never a message.
_WRITE_QUEUE = 500
_MAX_EVENT_CHARS = 1 << 20
_CLOSE_WAIT_S = 2.0


def ice_servers(settings: MediaSettings) -> list[RTCIceServer]:
    servers = []
    stun = [u.strip() for u in settings.media_stun_urls.split(",") if u.strip()]
    if stun:
        servers.append(RTCIceServer(urls=stun))
    turn = [u.strip() for u in settings.media_turn_urls.split(",") if u.strip()]
    if turn:
        servers.append(
            RTCIceServer(
                urls=turn,
                username=settings.media_turn_username or None,
                credential=settings.media_turn_password.get_secret_value() or None,
            )
        )
    return servers


class Call:
    def __init__(
        self,
        settings: MediaSettings,
        request: MediaOfferRequest,
        *,
        worker_id: str,
        on_done: Callable[[Call], None] | None = None,
    ) -> None:
        self.settings = settings
        self.request = request
        self.worker_id = worker_id
        self.id = secrets.token_hex(8)
        self._on_done = on_done
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=ice_servers(settings)))
        self.playout = PlayoutTrack(DEFAULT_OUTPUT, max_ms=settings.media_max_playout_ms)
        self.mic = MicEncoder(DEFAULT_INPUT, settings.media_chunk_ms)
        self.ws: ClientConnection | None = None
        self.conversation_id: str | None = None
        self.channel: RTCDataChannel | None = None
        self.backlog: collections.deque[str] = collections.deque(maxlen=settings.media_dc_backlog)
        self.dc_bucket = TokenBucket(settings.media_dc_rate_per_s, 2 * settings.media_dc_rate_per_s)
        self.writes: asyncio.Queue[tuple[str, bytes | str]] = asyncio.Queue(_WRITE_QUEUE)
        self.connected = asyncio.Event()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.session_closed = False
        self.finished = asyncio.Event()
        self.end_reason: str | None = None
        self.audio_in_chunks = 0
        self.audio_in_dropped = 0
        self.audio_out_ms = 0.0
        self._finishing = False
        self._reader: asyncio.Task[Any] | None = None
        self._audio_expected: int | None = None

    # ------------------------------------------------------------------------------ lifecycle

    def log_fields(self) -> dict[str, Any]:
        return {
            "call_id": self.id,
            "agent_id": self.request.agent_id,
            "conversation_id": self.conversation_id,
            "worker_id": self.worker_id,
        }

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=f"call-{self.id}-{name}")
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "media.call_task_failed", task=task.get_name(), exc_info=task.exception(), **self.log_fields()
            )
            self._spawn(self.finish("internal"), "finish")

    async def start(self) -> str:
        """Open the voice session and answer the offer; returns the SDP answer. On any failure
        nothing stays open and the `ParleyError` says why."""
        pc = self.pc

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio":
                self._spawn(self._pump_mic(track), "mic")

        @pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            self._attach(channel)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            state = pc.connectionState
            if state == "connected":
                self.connected.set()
            elif state in ("failed", "closed"):
                self._spawn(self.finish(f"peer_{state}"), "finish")

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=self.request.sdp, type="offer"))
            pc.addTrack(self.playout)
            await self._open_session()
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        except BaseException:
            await self._abort()
            raise
        self._reader = self._spawn(self._read_socket(), "socket-reader")
        self._spawn(self._write_socket(), "socket-writer")
        self._spawn(self._watch_connect(), "connect-watch")
        log.info("media.call_started", **self.log_fields())
        return pc.localDescription.sdp

    async def _open_session(self) -> None:
        self.ws, self.conversation_id = await open_realtime(self.settings, self.request, self.log_fields())

    async def _abort(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()
        with contextlib.suppress(Exception):
            await self.pc.close()
        self.playout.stop()

    async def _watch_connect(self) -> None:
        try:
            async with asyncio.timeout(self.settings.media_connect_timeout_s):
                await self.connected.wait()
        except TimeoutError:
            log.info("media.connect_timeout", **self.log_fields())
            await self.finish("connect_timeout")

    async def finish(self, reason: str) -> None:
        """End the call once: the peer gone ends the session (`end`); the session gone closes the
        peer. Safe to call from any task, any number of times."""
        if self._finishing:
            return
        self._finishing = True
        self.end_reason = reason
        current = asyncio.current_task()
        ws = self.ws
        try:
            if reason == "shutdown":
                self._to_channel(
                    error_event(Codes.WEBRTC_MEDIA_LOST, detail="the media worker is shutting down"),
                    "error",
                )
            if ws is not None and not self.session_closed and reason != "socket_lost":
                # The caller hung up (or never connected): the conversation ends with the call.
                with contextlib.suppress(Exception):
                    await ws.send(json.dumps({"type": "end"}))
                # The reader relays what the session still says (its `session_closed`), then stops.
                reader = self._reader
                if reader is not None and reader is not current and not reader.done():
                    await asyncio.wait({reader}, timeout=_CLOSE_WAIT_S)
            if reason == "socket_lost" and not self.session_closed:
                self._to_channel(
                    error_event(Codes.WEBRTC_MEDIA_LOST, detail="the voice session's socket closed"),
                    "error",
                )
            await self._flush_channel()
        finally:
            for task in list(self.tasks):
                if task is not current:
                    task.cancel()
            if ws is not None:
                with contextlib.suppress(Exception):
                    await ws.close()
            with contextlib.suppress(Exception):
                await self.pc.close()
            self.playout.stop()
            log.info(
                "media.call_ended",
                reason=reason,
                audio_in_chunks=self.audio_in_chunks,
                audio_in_dropped=self.audio_in_dropped,
                audio_out_ms=round(self.playout.played_ms),
                **self.log_fields(),
            )
            self.finished.set()
            if self._on_done is not None:
                self._on_done(self)

    # ----------------------------------------------------------------------------- data channel

    def _attach(self, channel: RTCDataChannel) -> None:
        if self.channel is not None:
            # One events channel per call; another one opened by the page is told so and closed.
            channel.send(error_event(Codes.REALTIME_INVALID_FRAME, "Only one data channel per call."))
            channel.close()
            return
        self.channel = channel

        @channel.on("open")
        def on_open() -> None:
            self._flush_backlog()

        @channel.on("message")
        def on_message(message: str | bytes) -> None:
            self._from_channel(message)

        @channel.on("close")
        def on_close() -> None:
            if not self._finishing:
                self._spawn(self.finish("channel_closed"), "finish")

        self._to_channel(
            DcReady(
                conversation_id=self.conversation_id or "",
                input=self.mic.format.label,
                output=self.playout.format.label,
            ).model_dump_json(),
            "ready",
            first=True,
        )
        if channel.readyState == "open":
            self._flush_backlog()

    def _flush_backlog(self) -> None:
        channel = self.channel
        while channel is not None and channel.readyState == "open" and self.backlog:
            channel.send(self.backlog.popleft())

    def _to_channel(self, text: str, kind: str, *, first: bool = False) -> None:
        channel = self.channel
        if channel is not None and channel.readyState == "open" and not self.backlog:
            channel.send(text)
        elif kind != "tick":
            if first:
                self.backlog.appendleft(text)
            else:
                self.backlog.append(text)

    async def _flush_channel(self) -> None:
        """Let what was sent on the data channel leave before the peer closes (bounded)."""
        self._flush_backlog()
        channel = self.channel
        deadline = time.monotonic() + 1.0
        while channel is not None and channel.readyState == "open" and time.monotonic() < deadline:
            if channel.bufferedAmount == 0:
                # SCTP may still hold it unacknowledged: one more beat.
                await asyncio.sleep(0.05)
                return
            await asyncio.sleep(0.02)

    def _from_channel(self, message: str | bytes) -> None:
        if self._finishing:
            return
        if not self.dc_bucket.take():
            rate = f"{self.settings.media_dc_rate_per_s:g}"
            self._to_channel(error_event(Codes.REALTIME_RATE_LIMITED, rate=rate), "error")
            return
        parsed = parse_client_message(message)
        if isinstance(parsed, str):
            self._to_channel(parsed, "error")
            return
        if isinstance(parsed, DcCancel):
            self.playout.flush()
            self._write("json", '{"type": "cancel"}')
        elif isinstance(parsed, DcInputText):
            self.playout.flush()
            self._write("json", json.dumps({"type": "input_text", "text": parsed.text}))
        elif isinstance(parsed, DcEnd):
            self._write("json", '{"type": "end"}')

    # ---------------------------------------------------------------------------------- socket

    def _write(self, kind: str, item: bytes | str) -> None:
        try:
            self.writes.put_nowait((kind, item))
        except asyncio.QueueFull:
            if kind == "audio":
                self.audio_in_dropped += 1
            else:
                log.warning("media.socket_backlog_full", **self.log_fields())
                self._spawn(self.finish("socket_backlog"), "finish")

    async def _write_socket(self) -> None:
        ws = self.ws
        assert ws is not None
        try:
            while True:
                kind, item = await self.writes.get()
                if kind == "audio":
                    await ws.send('{"type": "input_audio_stream"}')
                    await ws.send(item)
                else:
                    await ws.send(item)
        except ConnectionClosed:
            return  # the reader sees it too, and ends the call

    async def _pump_mic(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            for chunk in self.mic.push(frame):  # type: ignore[arg-type]
                self.audio_in_chunks += 1
                self._write("audio", chunk)

    async def _read_socket(self) -> None:
        ws = self.ws
        assert ws is not None
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    self._relay_audio(message)
                else:
                    self._relay(message)
                if self.session_closed:
                    break
        except ConnectionClosed:
            pass
        reason = "session_closed" if self.session_closed else "socket_lost"
        self._spawn(self.finish(reason), "finish")

    def _relay_audio(self, data: bytes) -> None:
        if self._audio_expected is None:
            log.warning("media.unexpected_binary", size=len(data), **self.log_fields())
            return
        self._audio_expected = None
        self.playout.push(data)

    def _relay(self, text: str) -> None:
        if len(text) > _MAX_EVENT_CHARS:
            log.warning("media.event_too_large", size=len(text), **self.log_fields())
            return
        try:
            event = json.loads(text)
        except ValueError:
            log.warning("media.bad_event", **self.log_fields())
            return
        if not isinstance(event, dict):
            return
        kind = event.get("type")
        if kind == "audio_delta":
            size = event.get("size")
            self._audio_expected = size if isinstance(size, int) else 0
            return
        if kind == "signal":
            name = event.get("name")
            data = event.get("data")
            if name == "barge_in":
                self.playout.flush()
            elif name == "audio_format" and isinstance(data, dict):
                self._audio_format(data)
        elif kind == "session_closed":
            self.session_closed = True
        self._to_channel(text, str(kind))

    def _audio_format(self, data: dict[str, Any]) -> None:
        fin, fout = parse_format(data.get("input")), parse_format(data.get("output"))
        if fin is not None and fin != self.mic.format:
            self.mic = MicEncoder(fin, self.settings.media_chunk_ms)
        if fout is not None and fout != self.playout.format:
            self.playout.set_format(fout)
        if (data.get("input") is not None and fin is None) or (
            data.get("output") is not None and fout is None
        ):
            log.warning("media.unsupported_audio_format", **self.log_fields())

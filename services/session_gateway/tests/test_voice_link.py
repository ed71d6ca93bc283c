"""The gateway's voice relay logic (realtime/voice.py) without a bus: the agent's audio chunks are
relayed once each, in order per stream, not after an interruption until the turn has ended; uploads
are bounded."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from parley_common.flag import Flag
from parley_common.session_contract import ServerTextDelta, ServerTurnComplete, SessionInput
from parley_common.voice_formats import VoiceFormats
from parley_session_gateway.access import Admission
from parley_session_gateway.realtime.voice import VoiceLink, VoiceOutlets
from parley_session_gateway.settings import GatewaySettings

from .session_fakes import principal


@dataclass
class Msg:
    data: bytes
    headers: dict[str, str]


@dataclass
class Socket:
    frames: list[Any] = field(default_factory=list)
    audio: list[bytes] = field(default_factory=list)
    inputs: list[tuple[SessionInput, str | None]] = field(default_factory=list)
    muted: VoiceLink | None = None

    async def send_frame(self, frame: BaseModel) -> None:
        self.frames.append(frame.model_dump())

    async def send_audio(self, audio: bytes) -> bool:
        assert self.muted is not None
        if self.muted.is_muted():
            return False
        self.audio.append(audio)
        return True

    async def forward(self, item: SessionInput, client_id: str | None) -> None:
        self.inputs.append((item, client_id))


def link(socket: Socket, **settings: Any) -> VoiceLink:
    greeted = Flag()
    greeted.set()
    voice = VoiceLink(
        None,  # type: ignore[arg-type]  # no bus needed for what is tested here
        GatewaySettings(**settings),
        VoiceOutlets(greeted, socket.send_frame, socket.send_audio, socket.forward),
        conversation_id=uuid.uuid4(),
        admission=Admission(principal=principal(), agent_id="agent"),
        connection_id=uuid.uuid4().hex,
        formats=VoiceFormats(),
    )
    socket.muted = voice
    return voice


def chunk(stream: str, seq: int) -> Msg:
    return Msg(f"{stream}:{seq}".encode(), {"Parley-Stream": stream, "Parley-Seq": str(seq)})


async def test_chunks_are_relayed_once_in_order_and_not_after_an_interruption() -> None:
    socket = Socket()
    voice = link(socket)
    for msg in (chunk("a", 0), chunk("a", 1), chunk("a", 1), chunk("a", 0), chunk("a", 2)):
        await voice._on_audio(msg)  # type: ignore[arg-type]
    assert socket.audio == [b"a:0", b"a:1", b"a:2"]  # duplicates and late ones dropped
    await voice.observe(ServerTextDelta(chunk="hi"))
    await voice.interrupt()  # barge-in or cancel
    await voice._on_audio(chunk("a", 3))  # type: ignore[arg-type]
    await voice._on_audio(chunk("b", 0))  # type: ignore[arg-type]
    assert socket.audio == [b"a:0", b"a:1", b"a:2"]
    await voice.observe(ServerTurnComplete())  # the interrupted turn is over
    await voice._on_audio(chunk("a", 4))  # type: ignore[arg-type]  # the interrupted stream: never
    await voice._on_audio(chunk("c", 0))  # type: ignore[arg-type]  # the next turn's
    assert socket.audio[-1] == b"c:0" and b"a:4" not in socket.audio
    assert voice.relayed == 4


async def test_an_interruption_while_idle_mutes_nothing() -> None:
    socket = Socket()
    voice = link(socket)
    await voice.observe(ServerTurnComplete())  # the greeting's turn ended
    await voice.interrupt()  # a cancel with nothing playing
    await voice._on_audio(chunk("a", 0))  # type: ignore[arg-type]
    assert socket.audio == [b"a:0"]


async def test_an_upload_over_the_limit_is_dropped_with_an_error() -> None:
    socket = Socket()
    voice = link(socket, gateway_max_upload_bytes=2048, gateway_upload_idle_s=30)
    voice.begin_upload()
    assert await voice.add_upload(b"\x00" * 2000)
    assert await voice.add_upload(b"\x00" * 100)  # over: dropped whole
    assert voice.upload is None
    assert socket.frames == [
        {"type": "error", "code": "realtime.upload_too_large", "message": socket.frames[0]["message"]}
    ]
    assert "2048" in socket.frames[0]["message"]
    assert not await voice.add_upload(b"\x00")  # no upload open any more
    await voice.close()

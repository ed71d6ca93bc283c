"""Bus contract of the WebRTC media workers, and the data channel's messages (docs/webrtc.md).

1. The session gateway checks a browser's offer (`POST /api/realtime/webrtc`), mints a short-lived
   client token for the bound agent and the caller, and requests `media.webrtc.offer`
   (`MediaOfferRequest`, queue group `media`): any one media worker takes it.
2. That worker creates a peer connection, opens the gateway's own `/realtime` WebSocket with the
   token (channel `web-voice`), and once the handshake is accepted answers `MediaOfferReply` with
   the SDP answer. A refused handshake is answered with its error (the same code `/realtime`
   gives), and nothing stays open.
3. From then on the peer and the socket are bridged by that worker: the microphone's Opus becomes
   `input_audio_stream` + PCM16 16 kHz chunks, `audio_delta` + PCM16 24 kHz becomes the peer's
   outgoing Opus track, every other event goes out on the data channel as the JSON object
   `/realtime` sent (`DataChannelServerEvent`), and the data channel's `DataChannelClientMessage`s
   go in.

The token is a credential: it travels only inside this request, and is never logged.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, field_serializer

from parley_common.errors import BusReply

# The channel a WebRTC call's conversation is recorded with (the runtime's `channel` variable).
WEB_VOICE_CHANNEL = "web-voice"
# The largest SDP either side exchanges (the gateway refuses bigger offers).
MAX_SDP_CHARS = 64 * 1024


class MediaOfferRequest(BaseModel):
    """Gateway → any media worker: answer this (already checked) offer for this agent."""

    model_config = ConfigDict(extra="forbid")

    sdp: str = Field(min_length=1, max_length=MAX_SDP_CHARS)
    agent_id: str = Field(min_length=1, max_length=200)
    # A client token of `agent_id`, minted for the caller: the media worker's only authority. It
    # opens `/realtime` exactly as the caller could with it, no more.
    token: SecretStr = Field(min_length=1, max_length=4096)
    render_directive: str | None = Field(default=None, max_length=2000)
    # For logs and traces only (never an authority): who called.
    caller: str | None = Field(default=None, max_length=200)

    @field_serializer("token", when_used="json")
    def _reveal(self, token: SecretStr) -> str:
        # On the bus the token must travel whole; `repr`, `str` and `model_dump()` keep it hidden.
        return token.get_secret_value()


class MediaOfferReply(BusReply):
    sdp: str | None = None
    worker_id: str | None = None
    peer_id: str | None = None
    conversation_id: str | None = None


# ------------------------------------------------------------------------------- data channel
# Client → server, one JSON object per data-channel message.


class DcCancel(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["cancel"]


class DcInputText(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["input_text"]
    text: str = Field(min_length=1, max_length=16_000)


class DcEnd(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["end"]


DataChannelClientMessage = Annotated[DcCancel | DcInputText | DcEnd, Field(discriminator="type")]
DC_CLIENT_MESSAGE: TypeAdapter[DcCancel | DcInputText | DcEnd] = TypeAdapter(DataChannelClientMessage)
DC_CLIENT_TYPES = ("cancel", "input_text", "end")

# Server → client: the `/realtime` ServerMessage JSON as it arrived (every type but `audio_delta`,
# whose audio is the outgoing track), plus the media edge's own first event:


class DcReady(BaseModel):
    """The first message on the data channel: the conversation this call is."""

    type: Literal["ready"] = "ready"
    conversation_id: str
    # `audio_format` of the session as the media edge hears and speaks it on `/realtime`.
    input: str = "pcm16/16000"
    output: str = "pcm16/24000"

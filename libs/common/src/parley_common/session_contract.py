# One piece (471 lines): the session bus's contract, the frames and events both sides share and
# their ids; split, the unions and the models in them would be spread over modules.
"""Realtime sessions: the Kivox WebSocket frames and the bus contract between gateway and runtimes.

Frames (what a client and the gateway exchange on `/realtime`) follow `ClientMessage` and
`ServerMessage` of the Kivox client SDK's type declarations (`kivox-client.d.ts`, the published
contract, kept outside this repository in `shared/specs/`) field for field; docs/realtime.md
describes every frame. The bus carries them between the session gateway and the runtime workers:

- `sessions.start` (JetStream stream `SESSIONS`, work-queue retention): one `SessionStart` per
  conversation. The worker that pulls it owns the session and keeps the message in progress while
  it runs; if the worker dies, JetStream redelivers it to another worker, which resumes the session
  from Redis. The owner acks it when the session is closed.
- `session.<id>.in` (stream `SESSION_IN`): `SessionInput`s from the gateway. Durable, so input
  survives a worker crash; the owner reads them in stream order and records the last one it has
  fully processed in Redis. Each carries a `Nats-Msg-Id` (`input_msg_id`): a publication retried
  through a broker outage, or a chat message resent with its `id`, is stored once.
- `session.<id>.out` (stream `SESSION_OUT`): `SessionOutput`s, the server events, numbered per
  conversation (`index` 1, 2, …). A reconnecting client resumes after the last index it has seen.
- `session.<id>.ctl` (core NATS, not stored): `SessionControl`, which connection is the live one,
  and the timing from which the gateway makes `tick` events when no output carries it (a turn's
  outputs carry the timing it changes, `SessionOutput.timing`).
- `mail.send` (stream `MAIL`, work queue): `MailRequest`s from EMAIL_NOTIFY nodes, delivered by the
  auth service's outbox, idempotent on `mail_id`.

See docs/realtime.md for the whole protocol.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import time
import uuid
from collections.abc import Iterable, Mapping, MutableMapping
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RePublish, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError
from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from parley_common import subjects
from parley_common.auth_contract import Principal
from parley_common.conversation_contract import ConversationEndReason
from parley_common.jetstream import by_name, file_stream
from parley_common.settings import common_settings
from parley_common.voice_formats import VoiceFormats

# ------------------------------------------------------------------------------ client frames


class _Frame(BaseModel):
    # Unknown extra fields are ignored: newer clients may send more than this server knows.
    model_config = ConfigDict(extra="ignore")


class ClientHandshake(_Frame):
    type: Literal["handshake"]
    agent_id: Annotated[str, Field(min_length=1, max_length=200)]
    channel: Annotated[str, Field(max_length=64)] | None = None
    render_directive: Annotated[str, Field(max_length=2000)] | None = None


class ClientInputText(_Frame):
    type: Literal["input_text"]
    text: str


class ClientInputAudio(_Frame):
    """A recorded utterance follows in the next binary frame(s), until the next JSON frame."""

    type: Literal["input_audio"]


class ClientInputAudioStream(_Frame):
    """Exactly one streamed audio chunk follows in the next binary frame."""

    type: Literal["input_audio_stream"]


class ClientCancel(_Frame):
    type: Literal["cancel"]


class ClientEndSession(_Frame):
    type: Literal["end"]


ClientMessage = Annotated[
    ClientHandshake
    | ClientInputText
    | ClientInputAudio
    | ClientInputAudioStream
    | ClientCancel
    | ClientEndSession,
    Field(discriminator="type"),
]
CLIENT_MESSAGE_TYPES = frozenset(
    {"handshake", "input_text", "input_audio", "input_audio_stream", "cancel", "end"}
)

# ------------------------------------------------------------------------------ server events


class ServerHandshakeOK(_Frame):
    type: Literal["handshake_ok"] = "handshake_ok"
    conversation_id: str


class ServerHandshakeError(_Frame):
    type: Literal["handshake_error"] = "handshake_error"
    # An error code of docs/errors.md (e.g. `auth.unauthenticated`), stable for programs.
    reason: str


class ServerTextFull(_Frame):
    type: Literal["text_full"] = "text_full"
    content: str


class ServerTextDelta(_Frame):
    type: Literal["text_delta"] = "text_delta"
    chunk: str


# Raw bytes in Python, base64 in JSON (bus messages are JSON).
_BYTES_AS_BASE64 = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")


class ServerAudioDelta(_Frame):
    """On the bus the audio travels inside the event (base64); on the socket the gateway sends
    `{"type": "audio_delta", "size": n}` followed by one binary frame of n bytes."""

    model_config = _BYTES_AS_BASE64
    type: Literal["audio_delta"] = "audio_delta"
    size: int = Field(ge=0)
    audio: bytes


class ServerTurnComplete(_Frame):
    type: Literal["turn_complete"] = "turn_complete"


class ServerFlowComplete(_Frame):
    type: Literal["flow_complete"] = "flow_complete"


class ServerSignal(_Frame):
    type: Literal["signal"] = "signal"
    name: str
    data: dict[str, Any] = Field(default_factory=dict)


class ServerTransfer(_Frame):
    type: Literal["transfer"] = "transfer"
    agent_id: str
    reason: str


class ServerError(_Frame):
    """Non-fatal: the session lives on unless a `session_closed` follows."""

    type: Literal["error"] = "error"
    code: str
    message: str


class ServerTick(_Frame):
    type: Literal["tick"] = "tick"
    remaining_ms: int
    elapsed_ms: int


class ServerSessionClosed(_Frame):
    type: Literal["session_closed"] = "session_closed"
    reason: ConversationEndReason


# What a runtime emits on `session.<id>.out` (handshake replies and ticks are the gateway's own).
ServerEvent = Annotated[
    ServerTextFull
    | ServerTextDelta
    | ServerAudioDelta
    | ServerTurnComplete
    | ServerFlowComplete
    | ServerSignal
    | ServerTransfer
    | ServerError
    | ServerSessionClosed,
    Field(discriminator="type"),
]

# ------------------------------------------------------------------------------ bus messages


class SessionStart(BaseModel):
    """`sessions.start`: a conversation waiting for (or owned by) a runtime worker."""

    conversation_id: UUID
    agent_id: Annotated[str, Field(max_length=200)]
    principal: Principal
    channel: Annotated[str, Field(max_length=64)] | None = None
    render_directive: Annotated[str, Field(max_length=2000)] | None = None
    # Session variables given by whoever opened the session (a client token's `data`).
    variables: dict[str, Any] = Field(default_factory=dict)
    started_at: datetime
    # The WebSocket connection that opened it (see `ClientConnected`).
    connection_id: str
    # A voice session (docs/voice.md): the runtime speaks the agent's text in `voice.output`
    # on `session.<id>.audio.out`. None: text only.
    voice: VoiceFormats | None = None


class _Input(BaseModel):
    at: datetime
    connection_id: str


def _storable(text: str) -> str:
    # What a transcript can hold (PostgreSQL text has no NUL). The gateway refuses such frames
    # already; this keeps any other publisher's from reaching a turn (the runtime skips them).
    if "\x00" in text:
        raise ValueError("NUL characters are not allowed")
    return text


class InputText(_Input):
    type: Literal["input_text"] = "input_text"
    text: Annotated[str, AfterValidator(_storable)]


class InputAudio(_Input):
    """One binary frame: part of a recorded utterance (`input_audio`) or a streamed chunk."""

    model_config = _BYTES_AS_BASE64
    type: Literal["input_audio"] = "input_audio"
    mode: Literal["utterance", "stream"]
    audio: bytes


class InputCancel(_Input):
    type: Literal["cancel"] = "cancel"


class InputEnd(_Input):
    type: Literal["end"] = "end"
    # `client_end`: the client sent `end`. `user_exit`: the credential the connection was opened
    # with was revoked (logout, key revoked, password reset, account deleted): the gateway ended it.
    reason: Literal[ConversationEndReason.CLIENT_END, ConversationEndReason.USER_EXIT] = (
        ConversationEndReason.CLIENT_END
    )


class ClientConnected(_Input):
    """A socket attached to the session (the first one, or a reconnect that resumes it)."""

    type: Literal["connected"] = "connected"


class ClientDisconnected(_Input):
    """The socket dropped without `end`; the runtime waits a grace period for a reconnect."""

    type: Literal["disconnected"] = "disconnected"


SessionInput = Annotated[
    InputText | InputAudio | InputCancel | InputEnd | ClientConnected | ClientDisconnected,
    Field(discriminator="type"),
]


class SessionInputEnvelope(BaseModel):
    input: SessionInput


class SessionTiming(BaseModel):
    """What the gateway's `tick` frames count from: when the session started, and when it times
    out if nothing changes (its duration or silence limit; None: never)."""

    started_at: datetime
    deadline_at: datetime | None = None


def input_envelope_json(item: BaseModel) -> bytes:
    """`SessionInputEnvelope(input=item).model_dump_json()`, encoded, without building the envelope
    (which validates `item` against the union again): the same bytes."""
    return b'{"input":' + item.model_dump_json().encode() + b"}"


class SessionOutput(BaseModel):
    """`session.<id>.out`: one server event and its per-conversation index (1-based, gapless).

    `timing`: the session's timing as of this output, when it changed (a turn's first output: the
    runtime is busy, no silence limit; the event that ends the turn: waiting again). Outputs are
    stored and replayed (a resume, a catch-up), so a timing is as old as its `index`: a gateway
    keeps the one of the highest index, a control message's (`SessionControl.index`) winning a tie.
    Left out of the JSON when None (older gateways ignore the field)."""

    index: int = Field(ge=1)
    event: ServerEvent
    timing: SessionTiming | None = Field(default=None, exclude_if=lambda value: value is None)


class SessionControl(SessionTiming):
    """`session.<id>.ctl` (core NATS): session timing, and the connection the runtime serves.

    Published when the runtime claims a session, when a client (re)connects, and when a turn runs
    for a while without output (its first output would have carried the busy timing); a turn
    otherwise carries its timing in its outputs (`SessionOutput.timing`). `index`: the last output
    index the runtime had numbered when it published this, so an output's timing at or below it
    is older than this (None from older runtimes: see `timing_rank`)."""

    type: Literal["timing"] = "timing"
    connection_id: str | None = None
    index: int | None = None


def timing_rank(message: SessionOutput | SessionControl, handed_on: int) -> tuple[int, int]:
    """How recent the timing a message carries is: a reader keeps the timing of the highest rank
    (an equal rank replaces it: a control message published after another at the same index).
    `handed_on`: the last output index the reader has handed on, the rank of a control message of
    an older runtime, which says nothing (it was the newest when it came)."""
    if isinstance(message, SessionControl):
        return (handed_on if message.index is None else message.index, 1)
    return (message.index, 0)


class MailRequest(BaseModel):
    """`mail.send`: a message for the auth service's outbox; `mail_id` makes delivery idempotent."""

    mail_id: UUID
    to: Annotated[str, Field(min_length=3, max_length=320)]
    subject: Annotated[str, Field(max_length=500)]
    body: Annotated[str, Field(max_length=100_000)]
    conversation_id: UUID | None = None
    agent_id: str | None = None


# ------------------------------------------------------------------------------ streams

# Work queues are removed by the ack; input and output are kept long enough to resume a session
# whose worker died or whose client reconnects, and are bounded per conversation.
_DAY = 24 * 3600.0
INPUT_DEDUPE_WINDOW_S = 120.0
# Every open session read its input with an ordered consumer of `SESSION_IN` until change 76 (now
# its looks and catch-ups make short-lived ones), and a client's resume or a reconnect reads
# `SESSION_OUT` with a short-lived one. nats-server 2.15 caps a stream
# without a limit of its own at 1,000 consumers (`default_max_consumers`; 0 or -1 now mean "the
# default"), which capped a deployment at 1,000 concurrent sessions: the 1,001st failed to claim
# and, retried, was closed with `runtime.session_failed`. So the two set a limit far above what a
# deployment holds.
SESSION_STREAM_MAX_CONSUMERS = 1_000_000
STREAMS: dict[str, StreamConfig] = by_name(
    # Kept longer than the longest session (24 h).
    file_stream(subjects.SESSIONS_STREAM, subjects.SESSION_START, _DAY + 3600, 120.0, work_queue=True),
    # An input published again under the same id within the window is stored once (a retry
    # through a broker outage, a chat message resent with its `id`); see docs/realtime.md.
    # Each stored input is republished over core NATS with its sequences (`session_in_stored`):
    # a session reads its input from there, with no consumer of its own.
    file_stream(
        subjects.SESSION_IN_STREAM,
        subjects.session_in("*"),
        6 * 3600.0,
        INPUT_DEDUPE_WINDOW_S,
        max_msgs_per_subject=20_000,
        discard=DiscardPolicy.OLD,
        max_consumers=SESSION_STREAM_MAX_CONSUMERS,
        republish=RePublish(src=subjects.session_in("*"), dest=subjects.session_in_stored("{{wildcard(1)}}")),
    ),
    # Ids are `<conversation>:<index>`: a republication after a crash is stored once.
    file_stream(
        subjects.SESSION_OUT_STREAM,
        subjects.session_out("*"),
        6 * 3600.0,
        120.0,
        max_msgs_per_subject=50_000,
        discard=DiscardPolicy.OLD,
        max_consumers=SESSION_STREAM_MAX_CONSUMERS,
    ),
    # Owned by the catalog (it consumes it); the same definition, so whoever starts first creates it.
    file_stream(subjects.CONVERSATIONS_STREAM, f"{subjects.CONVERSATION_EVENTS}.>", 7 * _DAY, 120.0),
    file_stream(subjects.MAIL_STREAM, subjects.MAIL_SEND, 7 * _DAY, 600.0, work_queue=True),
)


_ENSURE_PATIENCE_S = 60.0

# Streams another service owns: created when missing, never altered.
_BORROWED = frozenset({subjects.CONVERSATIONS_STREAM})


async def ensure_streams(js: JetStreamContext, names: Iterable[str], replicas: int | None = None) -> None:
    """Create (or bring up to date) the named streams of `STREAMS`, with `replicas` copies
    (default: the `PARLEY_JETSTREAM_REPLICAS` setting)."""
    copies = replicas if replicas is not None else common_settings().jetstream_replicas
    for name in names:
        config = dataclasses.replace(STREAMS[name], num_replicas=copies)
        # A clustered JetStream (replicas > 1) answers slowly while many processes start at once
        # and its stream groups elect their leaders: its API timeouts are retried for a while.
        deadline = time.monotonic() + _ENSURE_PATIENCE_S
        while True:
            try:
                await _ensure_stream(js, name, config)
                break
            except NatsTimeoutError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)


async def _ensure_stream(js: JetStreamContext, name: str, config: StreamConfig) -> None:
    try:
        current = (await js.stream_info(name)).config
    except NotFoundError:
        try:
            await js.add_stream(config)
        except BadRequestError:
            await js.stream_info(name)  # created concurrently by another process
        return
    # Only a change goes through the cluster's consensus (every process starting does this).
    if name not in _BORROWED and _differs(current, config):
        await js.update_stream(config)


def _differs(current: StreamConfig, wanted: StreamConfig) -> bool:
    """Whether a field `wanted` sets has another value on the server (a field left at its client
    default, such as `duplicate_window=0`, is the server's to fill in; the replicas always count)."""
    for field in dataclasses.fields(wanted):
        value = getattr(wanted, field.name)
        if value is None or (value == field.default and field.name != "num_replicas"):
            continue
        if value != getattr(current, field.name):
            return True
    return False


# ------------------------------------------------------------------------------ helpers

_PROPAGATOR = TraceContextTextMapPropagator()


def trace_headers(headers: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Headers carrying the current W3C trace context (same format as FastStream's middleware)."""
    carrier: dict[str, str] = dict(headers or {})
    _PROPAGATOR.inject(carrier)
    return carrier


def trace_context(headers: Mapping[str, str] | None) -> Context:
    """The trace context a message was sent in (empty when it carries none)."""
    return _PROPAGATOR.extract(dict(headers or {}))


def input_msg_id(conversation_id: UUID, client_id: str | None = None) -> str:
    """`Nats-Msg-Id` of one session input: from the client's own message id when the protocol has
    one (the chat `message.id`: a resend is the same message), else a fresh one made here. Hashed,
    so any client string is a safe header value; scoped to the conversation."""
    if client_id is None:
        return f"{conversation_id}:in:{os.urandom(16).hex()}"  # 32 hex digits, as `uuid4().hex` gave
    digest = hashlib.sha256(client_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{conversation_id}:in:c{digest}"


def stable_id(conversation_id: UUID, name: str) -> UUID:
    """A deterministic id for something that happens once in a conversation (an event, a mail), so
    that a replay after a worker crash produces the same id and consumers drop the duplicate."""
    return uuid.uuid5(conversation_id, name)

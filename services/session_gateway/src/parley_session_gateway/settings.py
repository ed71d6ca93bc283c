"""Session gateway settings (env `PARLEY_GATEWAY_*` plus the common ones)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from parley_common.auth_contract import SESSION_COOKIE
from parley_common.settings import CommonSettings


class GatewaySettings(CommonSettings):
    service_name: str = "session_gateway"

    # Browser session cookie (part of the client contract).
    gateway_cookie_name: str = SESSION_COOKIE
    # Origins whose pages may open a socket authenticated by that cookie (comma-separated, e.g.
    # "https://app.example.com,https://studio.example.com"). Empty: the origin of `public_url`.
    gateway_allowed_origins: str = ""
    # Frames larger than these get `error` realtime.frame_too_large (the session lives on).
    gateway_max_text_frame_bytes: int = Field(default=64 * 1024, ge=256)
    # Audio travels base64-encoded in NATS messages (1 MiB by default): keep this well below.
    gateway_max_binary_frame_bytes: int = Field(default=256 * 1024, ge=1024)
    # Per connection: a token bucket of `burst` frames refilled at `rate_per_s`.
    gateway_input_rate_per_s: float = Field(default=20.0, gt=0)
    gateway_input_burst: int = Field(default=40, ge=1)
    gateway_handshake_timeout_s: float = Field(default=10.0, gt=0)
    # Voice sessions (docs/voice.md). Audio frames (`input_audio_stream` / `input_audio` headers
    # and binary frames) have a bucket of their own: 20 ms chunks are 100 frames a second.
    gateway_audio_frames_per_s: float = Field(default=250.0, gt=0)
    gateway_audio_frames_burst: int = Field(default=500, ge=1)
    # An `input_audio` upload ends at the next JSON frame, or after this long without a frame.
    gateway_upload_idle_s: float = Field(default=1.0, gt=0)
    gateway_max_upload_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    # Opening recognition on a speech worker: per attempt, attempts, and the pause after a failure.
    gateway_speech_open_timeout_s: float = Field(default=2.0, gt=0)
    gateway_speech_open_attempts: int = Field(default=2, ge=1)
    gateway_speech_retry_s: float = Field(default=2.0, ge=0)
    # The agent's audio waiting to be written to a slow socket: beyond this, chunks are dropped
    # (the subscription is bounded; the audio is paced about real time anyway).
    gateway_audio_out_buffer_msgs: int = Field(default=2000, ge=10)
    gateway_audio_out_buffer_bytes: int = Field(default=16 * 1024 * 1024, ge=65536)
    # Handshakes (and chat connects) admitted at once: verifying, checking the agent, starting the
    # session. More wait for a slot, up to `gateway_handshake_queue_s`, then are refused with
    # `realtime.server_busy`: a burst queues instead of exhausting auth, the catalog or Redis.
    gateway_handshake_concurrency: int = Field(default=64, ge=1)
    gateway_handshake_queue_s: float = Field(default=10.0, ge=0)
    gateway_tick_interval_s: float = Field(default=1.0, gt=0)
    # How long after its start, or after its last socket closed, a conversation can be resumed
    # (the runtime's grace period decides whether it still runs). Keep it within the retention of
    # SESSION_OUT (6 h), which a resume replays from.
    gateway_resume_ttl_s: int = Field(default=6 * 3600, ge=60)
    # Verified credentials are reused this long (never past their expiry); revocations pushed by
    # auth clear them at once (parley_common.auth_client).
    gateway_auth_cache_ttl_s: float = Field(default=30.0, ge=0)
    # The catalog's answers about live agents (`catalog.agent.access`) are reused this long; the
    # catalog's agent events drop them at once (agent_access.py). 0: ask for every socket.
    gateway_agent_access_cache_ttl_s: float = Field(default=30.0, ge=0)
    # Open connections end at once when auth revokes their credential (`auth.events.revoked`);
    # should that event be lost, each connection's credential is verified again this often.
    gateway_reverify_interval_s: float = Field(default=30.0, gt=0)

    # Chat WebSocket (`/chat/ws`, docs/chat-ws.md).
    gateway_chat_heartbeat_s: float = Field(default=15.0, gt=0)
    # `token-refresh-required` goes out this long before the connection's token expires.
    gateway_chat_refresh_lead_s: float = Field(default=30.0, ge=0)
    # A connection ends this long before its token's `exp` (clock-skew margin; tests shorten
    # lifetimes with it, since tokens live at least 60 s).
    gateway_chat_expiry_margin_s: float = Field(default=0.0, ge=0)
    # A `message`'s `artifacts`: at most this many JSON objects, this many bytes as JSON.
    gateway_chat_max_artifacts: int = Field(default=16, ge=1)
    gateway_chat_max_artifacts_bytes: int = Field(default=16 * 1024, ge=256)
    # Agent-sessions SSE: the stream ends with `octavus.stream_lost` when the runtime worker sends
    # nothing (not even its keepalive, PARLEY_RUNTIME_OCTAVUS_KEEPALIVE_S) for this long.
    gateway_octavus_stream_idle_s: float = Field(default=30.0, gt=0)

    # ServiceAi voice routes (docs/webrtc.md): `POST /api/realtime-token` per user (an end user's
    # client token on its own), `POST /api/realtime/webrtc` per client address (the contract's 3/min),
    # and the lifetime of the minted client secrets.
    gateway_rate_realtime_token: str = "10/minute"
    gateway_rate_webrtc_ip: str = "3/minute"
    gateway_realtime_token_ttl_s: int = Field(default=600, ge=60, le=3600)
    # WebRTC media (docs/webrtc.md): offers go to the media workers (`python -m parley_media`) over
    # the bus. Off: `POST /api/realtime/webrtc` answers 501 `webrtc.unavailable`.
    gateway_webrtc_media: bool = True
    # The client token a media worker opens `/realtime` with: it needs to live only until the
    # handshake (an open socket outlives its credential's expiry).
    gateway_webrtc_token_ttl_s: int = Field(default=120, ge=60, le=3600)
    # How long an offer waits for a media worker's answer (it includes the `/realtime` handshake).
    gateway_webrtc_answer_timeout_s: float = Field(default=15.0, gt=0, le=60)


@lru_cache
def get_settings() -> GatewaySettings:
    return GatewaySettings()

"""Media worker settings (env `PARLEY_MEDIA_*` plus the common ones). docs/webrtc.md lists them."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr

from parley_common.settings import CommonSettings


class MediaSettings(CommonSettings):
    service_name: str = "media"

    # The session gateway's own `/realtime` WebSocket, reached directly (not through the edge):
    # `parley run` points it at its gateway; compose and Kubernetes at the gateway's service.
    media_gateway_url: str = "ws://127.0.0.1:8000/realtime"
    # Calls one worker holds; beyond that it refuses (`webrtc.media_unavailable`) and the gateway
    # asks again, reaching another worker. A full-duplex call costs ~60-80 ms of CPU per second
    # (`python -m bench.media`), and a worker is one event loop: about one core.
    media_max_peers: int = Field(default=16, ge=1)
    # ICE servers for real networks (comma-separated URLs): `stun:stun.example.org:3478`,
    # `turn:turn.example.org:3478?transport=udp`. Empty: host candidates only (one machine, a LAN).
    media_stun_urls: str = ""
    media_turn_urls: str = ""
    media_turn_username: str = ""
    media_turn_password: SecretStr = SecretStr("")
    # Microphone audio is sent to `/realtime` in chunks of this length (PCM16 16 kHz mono).
    media_chunk_ms: int = Field(default=20, ge=10, le=200)
    # The agent's audio waiting to be played on the outgoing track is bounded: beyond this much,
    # the oldest is dropped (it is already late).
    media_max_playout_ms: int = Field(default=60_000, ge=1000)
    # The `/realtime` handshake must be answered within this (the offer waits for it).
    media_handshake_timeout_s: float = Field(default=10.0, gt=0)
    # A peer that has not connected (ICE + DTLS) this long after the answer is given up.
    media_connect_timeout_s: float = Field(default=20.0, gt=0)
    # Data-channel messages kept until the browser's data channel opens (the greeting's events
    # arrive before it does); `tick`s are not kept.
    media_dc_backlog: int = Field(default=256, ge=1)
    # Data-channel messages a call may send per second (burst: twice this).
    media_dc_rate_per_s: float = Field(default=20.0, gt=0)


@lru_cache
def get_settings() -> MediaSettings:
    return MediaSettings()

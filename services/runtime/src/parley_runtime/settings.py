"""Runtime worker settings (env `PARLEY_RUNTIME_*` plus the common ones)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from parley_common.settings import CommonSettings


class RuntimeSettings(CommonSettings):
    service_name: str = "runtime"

    # Sessions one worker runs at once; beyond that it leaves session starts to other workers.
    runtime_max_sessions: int = Field(default=5000, ge=1)
    # A claimed session start is kept "in progress" every heartbeat; JetStream hands it to another
    # worker when no heartbeat came for ack_wait (a dead worker's sessions move on after this).
    runtime_claim_ack_wait_s: float = Field(default=6.0, gt=0)
    runtime_claim_heartbeat_s: float = Field(default=1.5, gt=0)
    # At SIGTERM: running turns may finish for this long before the sessions are handed over.
    runtime_drain_timeout_s: float = Field(default=25.0, ge=0)
    # A session taken over this many times (each owner died running it) is closed with `error`.
    runtime_max_claims: int = Field(default=6, ge=1)
    # After the socket drops (without `end`), how long the client has to reconnect and resume.
    runtime_reconnect_grace_s: float = Field(default=30.0, ge=0)
    # Limits for agents that set none (AgentConfig max_session_duration_minutes / max_silence_...).
    runtime_default_max_session_minutes: float = Field(default=60.0, gt=0)
    runtime_default_silence_timeout_s: float = Field(default=600.0, gt=0)
    # Live session state in Redis: bounded per session (oldest history dropped first), with a TTL.
    runtime_max_state_bytes: int = Field(default=256 * 1024, ge=4096)
    runtime_history_max_messages: int = Field(default=100, ge=2)
    runtime_state_ttl_s: int = Field(default=25 * 3600, ge=60)
    runtime_closed_state_ttl_s: int = Field(default=3600, ge=1)
    # A state read or write that fails because Redis is away is retried this long (the turn waits
    # and commits once Redis is back) before the session is handed over to JetStream.
    runtime_state_outage_s: float = Field(default=30.0, gt=0)
    # Nodes run without waiting for the user before the flow is declared broken (loop guard).
    runtime_max_steps_per_turn: int = Field(default=200, ge=1)
    # Agent snapshots are cached (dropped on catalog agent events, and after this TTL anyway).
    runtime_agent_cache_ttl_s: float = Field(default=300.0, ge=0)
    # Text deltas arriving within this window of the last one sent are merged into the next. A
    # model's tokens come 5-50 ms apart, each a bus message, a stored entry and a frame through
    # every process: 50 ms (20 updates a second, the first delta at once) is 2-10 tokens a message.
    runtime_delta_window_ms: float = Field(default=50.0, ge=0)
    # Voice sessions: a sentence sent to speech synthesis is cut at this length (at a comma or space).
    runtime_voice_sentence_max_chars: int = Field(default=250, ge=20, le=2000)
    # WEBHOOK nodes: private/loopback destinations are refused unless allowed (SSRF guard).
    runtime_webhook_allow_private: bool = False
    runtime_webhook_max_response_bytes: int = Field(default=64 * 1024, ge=1024)
    # Octavus agent sessions: state expires this long after the last activity (24 h, as the
    # Octavus docs say); the expired marker (what GET shows, what restore needs) lives on longer.
    runtime_octavus_session_ttl_s: int = Field(default=24 * 3600, ge=60)
    runtime_octavus_expired_ttl_s: int = Field(default=30 * 24 * 3600, ge=0)
    # A GET returns the whole session in one bus reply: keep this under NATS `max_payload` (1 MiB
    # by default) minus room for the envelope.
    runtime_octavus_max_state_bytes: int = Field(default=768 * 1024, ge=64 * 1024)
    # While an execution runs, a keepalive frame this often tells the gateway the worker lives.
    runtime_octavus_keepalive_s: float = Field(default=5.0, gt=0)

    # Agent tests (docs/agent-tests.md): runs one worker holds at once, on their own queue.
    runtime_agent_tests_max_concurrent: int = Field(default=4, ge=1, le=1000)
    # A dead worker's runs move on after this many seconds without a heartbeat.
    runtime_agent_tests_ack_wait_s: float = Field(default=10.0, gt=0)
    runtime_agent_tests_heartbeat_s: float = Field(default=2.5, gt=0)
    # Engine and model of the simulated user and the auditor (`engine/model`; docs/llm-providers.md).
    runtime_agent_tests_model: str = Field(default="builtin", min_length=1, max_length=200)
    # How long the agent may take for one turn before the run ends in error.
    runtime_agent_tests_turn_timeout_s: float = Field(default=60.0, gt=0)
    # Deliveries of one run (each owner died running it) before it ends in error.
    runtime_agent_tests_max_attempts: int = Field(default=5, ge=1)
    runtime_agent_tests_checkpoint_ttl_s: int = Field(default=24 * 3600, ge=60)

    @property
    def runtime_claim_lease_ms(self) -> int:
        """A session's lease outlives its owner's last heartbeat by less than JetStream's redelivery
        wait, so a dead owner's session is taken at the first redelivery."""
        lease = max(
            self.runtime_claim_ack_wait_s - self.runtime_claim_heartbeat_s, self.runtime_claim_heartbeat_s
        )
        return int(lease * 1000)


@lru_cache
def get_settings() -> RuntimeSettings:
    return RuntimeSettings()

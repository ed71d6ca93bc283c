"""Every NATS subject, queue group and JetStream stream name, defined once.

Request/reply subjects are served with a queue group so every replica of a service shares the
load. Event subjects are fan-out (no queue group): every subscriber sees every event.
"""

from __future__ import annotations

from typing import Final

# auth: request/reply
AUTH_VERIFY: Final = "auth.verify"
AUTH_AUTHORIZE: Final = "auth.authorize"
# Short-lived client tokens for the ServiceAi `POST /api/realtime-token` (auth_contract.MintTokenRequest).
AUTH_TOKEN_MINT: Final = "auth.token.mint"
# auth: fan-out events. Any service caching verify results drops them when it sees one.
AUTH_REVOKED: Final = "auth.events.revoked"

# catalog: request/reply
CATALOG_AGENT_ACCESS: Final = "catalog.agent.access"  # may this principal open a session?
CATALOG_AGENT_RESOLVE: Final = "catalog.agent.resolve"  # runtime snapshot (with secrets)
# catalog: fan-out events, `catalog.events.agent.<AgentEventKind>`
CATALOG_AGENT_EVENTS: Final = "catalog.events.agent"

# Conversation history: runtimes publish, the catalog persists (durable JetStream consumer).
CONVERSATIONS_STREAM: Final = "CONVERSATIONS"
CONVERSATION_EVENTS: Final = "conv.events"  # conv.events.<conversation_id>

# Realtime sessions (see session_contract.py). JetStream streams and their subjects:
SESSIONS_STREAM: Final = "SESSIONS"  # work queue of session starts, consumed by runtime workers
SESSION_START: Final = "sessions.start"
SESSION_IN_STREAM: Final = "SESSION_IN"  # session.<id>.in: client input (gateway → runtime)
SESSION_OUT_STREAM: Final = "SESSION_OUT"  # session.<id>.out: server events (runtime → gateway)
SESSION_PREFIX: Final = "session"
# JetStream's advisory of a new leader of `SESSION_IN` (core NATS, in Parley's account): an input the
# old leader stored may not have been republished (`session_in_stored`), so every reader looks.
SESSION_IN_LEADER_ELECTED: Final = f"$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.{SESSION_IN_STREAM}"
# Durable pull consumer shared by every runtime worker on SESSIONS.
RUNTIME_SESSIONS_CONSUMER: Final = "runtime"
# Outgoing mail requests (EMAIL_NOTIFY), delivered by the auth service's outbox.
MAIL_STREAM: Final = "MAIL"
MAIL_SEND: Final = "mail.send"
AUTH_MAIL_CONSUMER: Final = "auth-mail"

# Octavus agent sessions (octavus/sessions.py): gateway → runtime, request/reply in QUEUE_RUNTIME.
# A trigger's events then flow on a core NATS subject the gateway chose (`OctavusTriggerRequest`).
OCTAVUS_SESSION_CREATE: Final = "octavus.session.create"
OCTAVUS_SESSION_GET: Final = "octavus.session.get"
OCTAVUS_SESSION_RESTORE: Final = "octavus.session.restore"
OCTAVUS_SESSION_TRIGGER: Final = "octavus.session.trigger"

# Agent tests (agent_test_contract.py): run jobs (work queue, catalog → runtime workers) and their
# results (runtime → catalog, durable consumer), `agent_tests.results.<run_id>`.
AGENT_TESTS_STREAM: Final = "AGENT_TESTS"
AGENT_TEST_RUN: Final = "agent_tests.run"
AGENT_TEST_RESULTS_STREAM: Final = "AGENT_TEST_RESULTS"
AGENT_TEST_RESULTS: Final = "agent_tests.results"
RUNTIME_AGENT_TESTS_CONSUMER: Final = "runtime-agent-tests"
CATALOG_AGENT_TEST_RESULTS_CONSUMER: Final = "catalog-agent-test-results"
# Speech workers (speech_contract.py), queue group QUEUE_SPEECH. Recognition: an edge opens a voice
# session (request/reply); the worker that takes it answers with its own audio subject
# (`speech.audio.<worker>.<session>`, core NATS) and publishes events on `session.<id>.speech`.
# Synthesis: one request per sentence; chunks go to the requester's core subject, reports to its
# report subject; `speech.tts.cancel.<stream_id>` (fan-out) stops every job of a stream.
SPEECH_SESSION_OPEN: Final = "speech.session.open"
SPEECH_TTS_SYNTHESIZE: Final = "speech.tts.synthesize"
SPEECH_TTS_CANCEL: Final = "speech.tts.cancel"
SPEECH_AUDIO_PREFIX: Final = "speech.audio"
# WebRTC media workers (media_contract.py, docs/webrtc.md): the session gateway hands a checked
# SDP offer to any media worker (request/reply, queue group QUEUE_MEDIA), which answers it and
# bridges the peer to the gateway's own `/realtime` socket.
MEDIA_WEBRTC_OFFER: Final = "media.webrtc.offer"

# health: every service answers a ping on its own subject (used by readiness checks of peers)
HEALTH_PING_PREFIX: Final = "health.ping"

# Queue groups (one per service: replicas of a service share the work)
QUEUE_AUTH: Final = "auth"
QUEUE_CATALOG: Final = "catalog"
QUEUE_RUNTIME: Final = "runtime"
QUEUE_SPEECH: Final = "speech"
QUEUE_MEDIA: Final = "media"


def health_ping(service: str) -> str:
    return f"{HEALTH_PING_PREFIX}.{service}"


def agent_event(kind: str) -> str:
    return f"{CATALOG_AGENT_EVENTS}.{kind}"


def conversation_event(conversation_id: str) -> str:
    return f"{CONVERSATION_EVENTS}.{conversation_id}"


def _session(conversation_id: str, leaf: str) -> str:
    """`session.<conversation_id>.<leaf>`: every subject of one conversation's session."""
    return f"{SESSION_PREFIX}.{conversation_id}.{leaf}"


def session_in(conversation_id: str) -> str:
    return _session(conversation_id, "in")


def session_in_stored(conversation_id: str) -> str:
    """Core NATS: each input `SESSION_IN` has stored, republished by the stream itself with its
    stream sequence (`Nats-Sequence`) and the one before it on the same subject
    (`Nats-Last-Sequence`), so its reader can tell that nothing was missed (runtime
    sessions/inputs.py). One token, not `in.stored`: a level more in nats-server's subscription
    tree costs ~0.45 KiB per session held."""
    return _session(conversation_id, "in_stored")


def session_out(conversation_id: str) -> str:
    return _session(conversation_id, "out")


def session_ctl(conversation_id: str) -> str:
    """Core NATS (not stored): session timing and the live connection."""
    return _session(conversation_id, "ctl")


def agent_test_results(run_id: object) -> str:
    return f"{AGENT_TEST_RESULTS}.{run_id}"


def session_speech(conversation_id: str) -> str:
    """Core NATS (not stored): recognition events of the conversation's voice session."""
    return _session(conversation_id, "speech")


def session_audio_out(conversation_id: str) -> str:
    """Core NATS (never JetStream): the agent's synthesized audio for the conversation's socket.
    Speech workers publish the chunks (headers `Parley-Stream`, `Parley-Seq`, …; paced at most the
    TTS lead ahead of real time); the gateway holding the socket relays them as `audio_delta`."""
    return _session(conversation_id, "audio.out")


def speech_audio(worker_id: str, session_key: str) -> str:
    """Core NATS: the audio (and control messages) of one voice session, to the worker holding it."""
    return f"{SPEECH_AUDIO_PREFIX}.{worker_id}.{session_key}"


def speech_tts_cancel(stream_id: str) -> str:
    return f"{SPEECH_TTS_CANCEL}.{stream_id}"

# One piece (~470 lines): the one registry of error codes (a table, one entry a code) and the
# envelope they are sent in; a test keeps docs/errors.md in step with it.
"""The `Error` envelope of the spec and the one registry of error codes.

Every error any service returns (HTTP body, WebSocket `error` event, bus error reply) uses a code
registered here. Each code has a section in docs/errors.md whose anchor is `anchor(code)`; a test
keeps the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from parley_common.settings import common_settings


class Error(BaseModel):
    """`components.schemas.Error` of the Kivox spec (the class name is the OpenAPI schema name)."""

    code: str = Field(description="Stable dot-notation error identifier, e.g. `resource.not_found`.")
    message: str = Field(description="Human-readable description of the error.")
    doc_url: str = Field(description="Link to the documentation page for this error code.")
    params: dict[str, Any] | None = Field(
        default=None, description="Named values used to render `message`, when the error has any."
    )


# The name the code base uses for it.
ErrorEnvelope = Error


class BusReply(BaseModel):
    """The reply of every bus request: `ok`, or the refusal's envelope in `error` (the shape
    `parley_common.bus.bus_handler` answers a malformed request with). Replies add what they carry."""

    ok: bool
    error: ErrorEnvelope | None = None


@dataclass(frozen=True)
class ErrorCode:
    code: str
    status: int
    message: str  # default human-readable message; may use {param} placeholders

    @property
    def anchor(self) -> str:
        return anchor(self.code)


def anchor(code: str) -> str:
    return code.replace(".", "-").replace("_", "-")


REGISTRY: dict[str, ErrorCode] = {}


def _register(code: str, status: int, message: str) -> ErrorCode:
    if code in REGISTRY:  # pragma: no cover - guards against copy-paste at import time
        raise ValueError(f"duplicate error code {code}")
    entry = ErrorCode(code, status, message)
    REGISTRY[code] = entry
    return entry


class Codes:
    """Namespace of every registered error code."""

    # Request shape
    MALFORMED_JSON = _register("request.malformed_json", 400, "The request body is not valid JSON.")
    VALIDATION_FAILED = _register("request.validation_failed", 422, "The request failed validation.")
    BODY_TOO_LARGE = _register("request.body_too_large", 413, "The request body exceeds {limit} bytes.")
    UNSUPPORTED_MEDIA_TYPE = _register(
        "request.unsupported_media_type", 415, "The request body must be application/json."
    )
    HEADERS_TOO_LARGE = _register(
        "request.headers_too_large", 431, "The request headers exceed {limit} bytes."
    )
    MALFORMED_REQUEST = _register("request.malformed", 400, "The request is not a valid HTTP request.")
    METHOD_NOT_ALLOWED = _register("request.method_not_allowed", 405, "Method not allowed on this path.")
    ROUTE_NOT_FOUND = _register("request.route_not_found", 404, "No such endpoint.")
    CLIENT_UPGRADE_REQUIRED = _register(
        "client.upgrade_required", 426, "Client version {client_version} is below the minimum {min_version}."
    )
    # Authentication and authorization
    UNAUTHENTICATED = _register("auth.unauthenticated", 401, "Authentication is required.")
    INVALID_CREDENTIALS = _register("auth.invalid_credentials", 401, "Email or password is incorrect.")
    CREDENTIAL_EXPIRED = _register("auth.credential_expired", 401, "The credential has expired.")
    CREDENTIAL_REVOKED = _register("auth.credential_revoked", 401, "The credential has been revoked.")
    FORBIDDEN = _register("auth.forbidden", 403, "You do not have permission to do this.")
    INSUFFICIENT_ROLE = _register(
        "auth.insufficient_role", 403, "This requires the {required} role or higher."
    )
    INSUFFICIENT_SCOPE = _register("auth.insufficient_scope", 403, "The API key lacks the {scope} scope.")
    TURNSTILE_FAILED = _register(
        "auth.turnstile_failed", 403, "The Turnstile challenge could not be verified."
    )
    CURRENT_PASSWORD_REQUIRED = _register(
        "auth.current_password_required",
        403,
        "Changing the login email with an API key needs the account's current password in current_password.",
    )
    CURRENT_PASSWORD_INCORRECT = _register(
        "auth.current_password_incorrect", 403, "The current password is incorrect."
    )
    EMAIL_TAKEN = _register("auth.email_taken", 409, "An account with this email already exists.")
    RESET_TOKEN_INVALID = _register(
        "auth.reset_token_invalid", 400, "The password reset token is invalid, used or expired."
    )
    # Organizations
    ORG_SLUG_TAKEN = _register("org.slug_taken", 409, "An organization with this slug already exists.")
    ORG_LAST_OWNER = _register("org.last_owner", 409, "An organization must keep at least one owner.")
    MEMBER_EXISTS = _register("org.member_exists", 409, "This user is already a member.")
    # Realtime sessions: WebSocket protocol (gateway) and session execution (runtime). These are
    # `error` events and `handshake_error` reasons; the status is the HTTP equivalent.
    REALTIME_UPGRADE_REQUIRED = _register(
        "realtime.upgrade_required", 426, "This endpoint speaks WebSocket only: connect with an upgrade."
    )
    REALTIME_INVALID_JSON = _register("realtime.invalid_json", 400, "The frame is not a JSON object.")
    REALTIME_UNKNOWN_TYPE = _register("realtime.unknown_type", 400, "Unknown message type {type}.")
    REALTIME_INVALID_FRAME = _register("realtime.invalid_frame", 422, "Invalid {type} message: {detail}")
    REALTIME_UNEXPECTED_BINARY = _register(
        "realtime.unexpected_binary",
        400,
        "A binary frame must follow an input_audio or input_audio_stream message.",
    )
    REALTIME_FRAME_TOO_LARGE = _register(
        "realtime.frame_too_large", 413, "The frame is {size} bytes; the limit is {limit}."
    )
    REALTIME_RATE_LIMITED = _register(
        "realtime.rate_limited", 429, "Too many frames; at most {rate} per second are accepted."
    )
    REALTIME_HANDSHAKE_REQUIRED = _register(
        "realtime.handshake_required", 400, "The first message must be a handshake."
    )
    REALTIME_HANDSHAKE_TIMEOUT = _register(
        "realtime.handshake_timeout", 408, "No handshake within {seconds} seconds."
    )
    REALTIME_ALREADY_STARTED = _register(
        "realtime.already_started", 409, "This connection already has a session."
    )
    REALTIME_TOKEN_SCOPE_MISMATCH = _register(
        "realtime.token_scope_mismatch", 403, "This token may not open a session with agent {agent_id}."
    )
    REALTIME_ORIGIN_NOT_ALLOWED = _register(
        "realtime.origin_not_allowed",
        403,
        "This page's origin may not open a WebSocket with the session cookie.",
    )
    REALTIME_SESSION_NOT_FOUND = _register(
        "realtime.session_not_found", 404, "No resumable session {conversation_id} for this caller."
    )
    REALTIME_TURN_RESTARTED = _register(
        "realtime.turn_restarted",
        503,
        "The answer was interrupted by a server failure and is being regenerated from the start.",
    )
    REALTIME_SERVER_BUSY = _register(
        "realtime.server_busy",
        503,
        "Too many sessions are being opened at once; retry in a moment.",
    )
    REALTIME_AUDIO_UNSUPPORTED = _register(
        "realtime.audio_unsupported",
        409,
        "This is a text session: open it with channel web-voice or mobile-voice (or audio formats in "
        "render_directive) to send audio.",
    )
    REALTIME_BAD_RENDER_DIRECTIVE = _register(
        "realtime.bad_render_directive", 400, "Invalid render_directive: {detail}"
    )
    REALTIME_UNSUPPORTED_AUDIO_FORMAT = _register(
        "realtime.unsupported_audio_format",
        422,
        "Unsupported {direction} audio format {format}; supported: {supported}.",
    )
    REALTIME_UPLOAD_TOO_LARGE = _register(
        "realtime.upload_too_large", 413, "The audio upload is over {limit} bytes; it was dropped."
    )
    REALTIME_SPEECH_UNAVAILABLE = _register(
        "realtime.speech_unavailable",
        503,
        "No speech worker answered; the audio was dropped. Retrying with the next audio ({detail}).",
    )
    # Chat WebSocket (`/chat/ws`): close reasons and `message-error` / `token-refresh-error` texts.
    CHAT_TOKEN_REQUIRED = _register(
        "chat.token_required", 401, "The chat WebSocket needs a chat client token in ?token=."
    )
    CHAT_REFRESH_SCOPE_MISMATCH = _register(
        "chat.refresh_scope_mismatch",
        403,
        "The refresh token's scope (agent, organization, environment) differs from the connection's.",
    )
    CHAT_TOKEN_EXPIRED = _register(
        "chat.token_expired", 401, "The token expired without a valid refresh; reconnect with a new one."
    )
    # Octavus agent sessions (`/api/agent-sessions*`); 400s read as `validation_error` in the SDKs.
    OCTAVUS_INVALID_INPUT = _register("octavus.invalid_input", 400, "Invalid input: {detail}")
    OCTAVUS_UNKNOWN_TRIGGER = _register(
        "octavus.unknown_trigger", 400, "The agent has no trigger named {name}."
    )
    OCTAVUS_NO_PENDING_TOOLS = _register(
        "octavus.no_pending_tools", 400, "Tool results do not match a paused execution: {detail}"
    )
    OCTAVUS_SESSION_BUSY = _register(
        "octavus.session_busy", 409, "The session is running another execution; retry when it ends."
    )
    OCTAVUS_SESSION_TOO_LARGE = _register(
        "octavus.session_too_large", 413, "The session would exceed {limit} bytes; start a new one."
    )
    OCTAVUS_NOT_PROTOCOL_AGENT = _register(
        "octavus.not_protocol_agent", 400, "Agent {agent_id} is not an Octavus protocol agent."
    )
    OCTAVUS_EXECUTION_FAILED = _register("octavus.execution_failed", 500, "Block {block}: {detail}")
    OCTAVUS_STREAM_LOST = _register(
        "octavus.stream_lost", 503, "The worker running the execution stopped answering; retry."
    )
    # Speech workers (speech_contract.py): `error` events of a voice session, TTS reports and bus
    # replies. `params.engine` names the engine for the engine failures.
    SPEECH_UNSUPPORTED_FORMAT = _register(
        "speech.unsupported_format", 415, "Audio format {format} is not supported: {detail}"
    )
    SPEECH_UNDECODABLE_AUDIO = _register(
        "speech.undecodable_audio", 400, "The audio could not be decoded as {format}: {detail}"
    )
    SPEECH_UPLOAD_TOO_LARGE = _register(
        "speech.upload_too_large", 413, "The utterance exceeds {limit} ({what})."
    )
    SPEECH_TEXT_TOO_LONG = _register(
        "speech.text_too_long", 413, "The text to speak has {length} characters; the limit is {limit}."
    )
    SPEECH_UNKNOWN_ENGINE = _register("speech.unknown_engine", 422, "Unknown {kind} engine {engine}.")
    SPEECH_KEY_MISSING = _register(
        "speech.key_missing",
        422,
        "The {engine} engine needs an API key: set the agent secret {secret} or {setting}.",
    )
    SPEECH_ENGINE_AUTH_FAILED = _register(
        "speech.engine_auth_failed", 502, "The {engine} speech provider rejected the API key."
    )
    SPEECH_ENGINE_RATE_LIMITED = _register(
        "speech.engine_rate_limited", 503, "The {engine} speech provider is rate limiting requests."
    )
    SPEECH_ENGINE_REJECTED = _register(
        "speech.engine_rejected", 502, "The {engine} speech provider rejected the request: {detail}"
    )
    SPEECH_ENGINE_UNAVAILABLE = _register(
        "speech.engine_unavailable", 503, "The {engine} speech provider is unavailable: {detail}"
    )
    SPEECH_ENGINE_TIMEOUT = _register(
        "speech.engine_timeout", 504, "The {engine} speech provider did not answer in time."
    )
    SPEECH_ENGINE_DISCONNECTED = _register(
        "speech.engine_disconnected", 502, "The {engine} speech provider dropped the stream: {detail}"
    )
    SPEECH_ENGINE_PROTOCOL_ERROR = _register(
        "speech.engine_protocol_error", 502, "The {engine} speech provider sent something unusable: {detail}"
    )
    SPEECH_ENGINE_FAILED = _register(
        "speech.engine_failed", 500, "The {engine} speech engine failed: {detail}"
    )
    SPEECH_WORKER_BUSY = _register(
        "speech.worker_busy", 503, "The speech worker is at its limit of {limit} sessions."
    )
    SPEECH_BACKLOG_EXCEEDED = _register(
        "speech.backlog_exceeded",
        503,
        "The speech worker fell {backlog_ms} ms behind the audio; the voice session was closed.",
    )
    SPEECH_WORKER_LOST = _register(
        "speech.worker_lost", 503, "The speech worker stopped answering and no other worker took over."
    )
    RUNTIME_AGENT_UNAVAILABLE = _register(
        "runtime.agent_unavailable", 503, "The agent's definition could not be loaded: {detail}"
    )
    RUNTIME_FLOW_BROKEN = _register("runtime.flow_broken", 500, "The flow cannot continue: {detail}")
    RUNTIME_EXPRESSION_FAILED = _register("runtime.expression_failed", 422, "Node {node_id}: {detail}")
    RUNTIME_WEBHOOK_FAILED = _register(
        "runtime.webhook_failed", 502, "Node {node_id}: webhook failed: {detail}"
    )
    RUNTIME_LLM_FAILED = _register("runtime.llm_failed", 502, "The language model failed: {detail}")
    RUNTIME_SESSION_FAILED = _register(
        "runtime.session_failed", 500, "The session failed repeatedly on the server and was closed."
    )
    # Generic resources
    NOT_FOUND = _register("resource.not_found", 404, "The {resource} was not found.")
    CONFLICT = _register("resource.conflict", 409, "The request conflicts with the current state.")
    # Limits and availability
    RATE_LIMITED = _register("rate_limit.exceeded", 429, "Too many requests; retry in {retry_after} seconds.")
    BUS_TIMEOUT = _register("bus.timeout", 504, "A dependent service did not answer in time.")
    BUS_BAD_MESSAGE = _register("bus.bad_message", 400, "The bus message is not valid: {detail}")
    SERVICE_UNAVAILABLE = _register("service.unavailable", 503, "The service is not ready.")
    INTERNAL = _register("internal.error", 500, "An unexpected error occurred.")
    # Catalog: agents, definitions, history
    INVALID_CURSOR = _register("request.invalid_cursor", 400, "The pagination cursor is not valid.")
    AGENT_INVALID_STATUS_TRANSITION = _register(
        "agent.invalid_status_transition", 409, "An agent cannot go from {from_status} to {to_status}."
    )
    AGENT_LINT_FAILED = _register(
        "agent.lint_failed", 422, "The blueprint has {count} lint error(s); a live agent must lint clean."
    )
    SECRET_UNREADABLE = _register(
        "secret.unreadable", 500, "A stored secret cannot be decrypted with the configured keys."
    )
    # Agent tests (docs/agent-tests.md): the publish gate, starting runs, and why a run ended in error.
    AGENT_TESTS_FAILED = _register(
        "agent.tests_failed",
        409,
        "The agent's last test run failed ({failed} of {total} tests); fix the agent and run them again.",
    )
    AGENT_TESTS_NOT_RUN = _register(
        "agent.tests_not_run",
        409,
        "Publishing needs a finished, passing test run of this version (v{version}) of the agent: {detail}",
    )
    AGENT_TEST_NO_TESTS = _register(
        "agent_test.no_tests", 422, "No enabled test of this agent applies to its current version."
    )
    AGENT_TEST_UNSUPPORTED_AGENT = _register(
        "agent_test.unsupported_agent",
        422,
        "Agent {agent_id} is an Octavus protocol agent; test runs need a blueprint agent.",
    )
    AGENT_TEST_RUN_FAILED = _register(
        "agent_test.run_failed", 500, "The test run could not be completed: {detail}"
    )
    AGENT_TEST_AUDIT_FAILED = _register(
        "agent_test.audit_failed", 502, "The auditor's answer could not be used: {detail}"
    )
    # Catalog: tools. Except for `tool.name_taken`, these appear as `code` in the `{success: false}`
    # envelope of POST …/tools/execute, which is itself answered with HTTP 200.
    TOOL_NAME_TAKEN = _register("tool.name_taken", 409, "A tool named {name} already exists here.")
    TOOL_FUNCTION_REQUIRED = _register(
        "tool.function_required", 422, "Name the tool in `function` or `name`."
    )
    TOOL_UNKNOWN_FUNCTION = _register("tool.unknown_function", 404, "There is no tool named {name}.")
    TOOL_INVALID_ARGUMENTS = _register(
        "tool.invalid_arguments", 422, "The arguments do not match the tool's parameters: {detail}"
    )
    TOOL_DESTINATION_BLOCKED = _register(
        "tool.destination_blocked", 403, "The webhook address {host} is not allowed: {reason}"
    )
    TOOL_WEBHOOK_FAILED = _register("tool.webhook_failed", 502, "The webhook call failed: {detail}")
    TOOL_WEBHOOK_TIMEOUT = _register("tool.webhook_timeout", 504, "The webhook did not answer in time.")
    TOOL_RESPONSE_TOO_LARGE = _register(
        "tool.response_too_large", 502, "The webhook response exceeds {limit} bytes."
    )
    # ServiceAi "Chatty Voice" routes and the browser voice edge (docs/webrtc.md).
    CHATTY_AGENT_REQUIRED = _register(
        "chatty.agent_required",
        403,
        "No agent is bound to this request: send X-Parley-Agent with the agent's id, or use a client "
        "token of the agent.",
    )
    CHATTY_NOT_ENTITLED = _register(
        "chatty.not_entitled", 403, "This credential does not hold the chatty-voice entitlement: {detail}"
    )
    CSRF_INVALID = _register(
        "csrf.invalid",
        403,
        "The X-CSRF-Token header is missing, expired or was not issued to this credential.",
    )
    WEBRTC_INVALID_SDP = _register("webrtc.invalid_sdp", 400, "The SDP offer is not valid: {detail}")
    WEBRTC_UNAVAILABLE = _register(
        "webrtc.unavailable",
        501,
        "WebRTC media is not available on this server yet; talk over the /realtime WebSocket instead.",
    )
    WEBRTC_MEDIA_UNAVAILABLE = _register(
        "webrtc.media_unavailable",
        503,
        "No WebRTC media worker could take the call; try again shortly.",
    )
    WEBRTC_ANSWER_FAILED = _register(
        "webrtc.answer_failed", 500, "The SDP offer could not be answered: {detail}"
    )
    WEBRTC_MEDIA_LOST = _register("webrtc.media_lost", 503, "The media edge of this call stopped: {detail}")
    # Runtime: LLM providers. Upstream failures of the model provider an agent is configured with;
    # `params.provider` names the engine. They reach clients as realtime `error` events.
    LLM_RATE_LIMITED = _register(
        "llm.rate_limited", 503, "The language model provider {provider} is rate limiting requests."
    )
    LLM_AUTH_FAILED = _register(
        "llm.auth_failed", 502, "The language model provider {provider} rejected the configured API key."
    )
    LLM_BAD_REQUEST = _register(
        "llm.bad_request", 502, "The language model provider {provider} rejected the request."
    )
    LLM_UNAVAILABLE = _register(
        "llm.unavailable", 503, "The language model provider {provider} is unavailable."
    )
    LLM_TIMEOUT = _register(
        "llm.timeout", 504, "The language model provider {provider} did not answer in time."
    )
    LLM_PROTOCOL_ERROR = _register(
        "llm.protocol_error", 502, "The language model provider {provider} sent a response Parley cannot use."
    )


class CloseCodes:
    """WebSocket close codes of `/realtime` and `/chat/ws` (docs/errors.md#websocket-close-codes).

    4000-4999 are the application's own (RFC 6455); the close reason is an error code of `Codes`
    wherever one applies, so a client reads the same vocabulary in both places.
    """

    NORMAL = 1000  # the session ended (after `session_closed` / `session-closed`)
    UNAVAILABLE = 1011  # a server failure while opening the connection (`service.unavailable`)
    # Busy, or Redis / the bus is away: nothing started, connect again shortly.
    TRY_AGAIN = 1013
    HANDSHAKE_FAILED = 4400  # `/realtime`: after `handshake_error`, the reason is its code
    # The credential is not (or no longer) valid: chat refusals and expiry, and on both sockets a
    # credential revoked while the connection was open (`auth.credential_revoked`).
    UNAUTHORIZED = 4401
    NOT_FOUND = 4404  # `/chat/ws`: a resume of a session this token may not resume
    SUPERSEDED = 4409  # another connection resumed the session


class ParleyError(Exception):
    """Raise anywhere in a service; the HTTP layer renders it as the envelope with its status."""

    def __init__(
        self,
        code: ErrorCode,
        message: str | None = None,
        *,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        status: int | None = None,
    ) -> None:
        self.code = code
        self.params = params
        self.headers = headers or {}
        self.status = status or code.status
        self.message = message or _render(code.message, params)
        super().__init__(f"{code.code}: {self.message}")

    def envelope(self) -> ErrorEnvelope:
        return envelope(self.code, self.message, self.params)


def reply_error(error: Error | None, default: ErrorCode, *, with_params: bool = True) -> ParleyError:
    """The refusal in a bus reply's `error`, as the `ParleyError` the replying service raised: its
    registered code (else `default`), message and params; `default` with its own message when the
    reply names no error."""
    if error is None:
        return ParleyError(default)
    params = error.params if with_params else None
    return ParleyError(REGISTRY.get(error.code, default), error.message, params=params)


def _render(template: str, params: dict[str, Any] | None) -> str:
    try:
        return template.format(**(params or {}))
    except (KeyError, IndexError, ValueError):
        return template


def doc_url(code: ErrorCode) -> str:
    return f"{common_settings().docs_url}#{code.anchor}"


def envelope(
    code: ErrorCode, message: str | None = None, params: dict[str, Any] | None = None
) -> ErrorEnvelope:
    return ErrorEnvelope(
        code=code.code, message=message or _render(code.message, params), doc_url=doc_url(code), params=params
    )

"""Who may open (or resume) a session with which agent, decided at the handshake.

The credential is the `kivox_session` cookie, or `?token=` (an API key or a scoped client token:
browsers cannot set headers on a WebSocket). auth verifies it over the bus (`AuthClient`, cached
briefly, revocations honoured); a client token must name the handshake's agent; then the catalog
answers `catalog.agent.access` (the agent exists, and is live or the caller may use a draft).
Every refusal is a `ParleyError` whose code becomes the `handshake_error` reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from uuid import UUID

from faststream.nats import NatsBroker
from redis.asyncio import Redis

from parley_common import subjects
from parley_common.auth_client import AuthClient
from parley_common.auth_contract import CredentialKind, Principal
from parley_common.bus import request
from parley_common.catalog_contract import AgentAccessReply, AgentAccessRequest
from parley_common.errors import REGISTRY, Codes, ErrorCode, ParleyError
from parley_common.speech_contract import AgentVoiceConfig

SESSION_SCOPE = "sessions:write"  # what an API key needs to open a session with an agent


class Refused(ParleyError):
    """A refusal whose code may be one the catalog defines (passed on as the reason verbatim)."""

    def __init__(self, code: ErrorCode, reason: str | None = None, message: str | None = None) -> None:
        super().__init__(code, message)
        self.reason = reason or code.code


@dataclass(frozen=True)
class Admission:
    principal: Principal
    agent_id: str  # as the catalog names it (what the runtime resolves)
    voice: AgentVoiceConfig | None = None  # the agent's `config.voice` (voice sessions)


def same_agent(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return False
    try:
        return UUID(a) == UUID(b)
    except ValueError:
        return a == b


async def admit(
    auth: AuthClient, broker: NatsBroker, *, credential: str | None, agent_id: str, timeout_s: float
) -> Admission:
    if not credential:
        raise Refused(Codes.UNAUTHENTICATED)
    try:
        principal = await auth.verify(credential)
    except ParleyError as exc:
        raise Refused(exc.code, message=exc.message) from exc
    if principal.kind is CredentialKind.CLIENT_TOKEN and not same_agent(principal.agent_id, agent_id):
        raise Refused(Codes.REALTIME_TOKEN_SCOPE_MISMATCH, message=None) from None
    if principal.kind is CredentialKind.API_KEY and not principal.has_scope(SESSION_SCOPE):
        # A key made for, say, managing keys must not talk to agents (docs/auth.md).
        raise Refused(Codes.INSUFFICIENT_SCOPE)
    try:
        reply = await request(
            broker,
            subjects.CATALOG_AGENT_ACCESS,
            AgentAccessRequest(agent_id=agent_id, principal=principal),
            AgentAccessReply,
            timeout=timeout_s,
        )
    except ParleyError as exc:
        raise Refused(exc.code, message=exc.message) from exc
    if not reply.ok:
        code = reply.error.code if reply.error else Codes.FORBIDDEN.code
        raise Refused(REGISTRY.get(code, Codes.FORBIDDEN), reason=code)
    canonical = reply.agent_id or agent_id
    if principal.kind is CredentialKind.CLIENT_TOKEN and not (
        same_agent(principal.agent_id, agent_id) or same_agent(principal.agent_id, canonical)
    ):
        raise Refused(Codes.REALTIME_TOKEN_SCOPE_MISMATCH)
    return Admission(principal=principal, agent_id=canonical, voice=reply.voice_config)


# ---------------------------------------------------------------------------------- resumption


def _key(conversation_id: UUID) -> str:
    return f"parley:gw:session:{conversation_id}"


def _owner(principal: Principal) -> str:
    # A user reconnects with a fresh credential (a new client token, another cookie): the user is
    # the owner. Principals without a user (none today) fall back to the credential itself.
    return f"user:{principal.user_id}" if principal.user_id else f"credential:{principal.credential_id}"


async def remember(redis: Redis, conversation_id: UUID, admission: Admission, ttl_s: int) -> None:
    body = json.dumps({"owner": _owner(admission.principal), "agent_id": admission.agent_id})
    await redis.set(_key(conversation_id), body, ex=ttl_s)


async def touch(redis: Redis, conversation_id: UUID, ttl_s: int) -> None:
    """A socket of this conversation just closed: it stays resumable for another `ttl_s`."""
    await redis.expire(_key(conversation_id), ttl_s)


async def check_resume(redis: Redis, conversation_id: str, admission: Admission) -> UUID:
    """The conversation this caller may resume, or `realtime.session_not_found`."""
    refused = Refused(Codes.REALTIME_SESSION_NOT_FOUND, message=None)
    try:
        conv = UUID(conversation_id)
    except ValueError:
        raise refused from None
    raw = await redis.get(_key(conv))
    if raw is None:
        raise refused
    meta = json.loads(raw)
    if meta.get("owner") != _owner(admission.principal) or not same_agent(
        meta.get("agent_id"), admission.agent_id
    ):
        raise refused
    return conv

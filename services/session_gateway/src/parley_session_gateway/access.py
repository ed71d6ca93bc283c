"""Who may open (or resume) a session with which agent, decided at the handshake.

The credential is the `kivox_session` cookie, or `?token=` (an API key or a scoped client token:
browsers cannot set headers on a WebSocket). auth verifies it over the bus (`AuthClient`, cached
briefly, revocations honoured); a client token must name the handshake's agent; then the catalog
answers `catalog.agent.access` (the agent exists, and is live or the caller may use a draft;
asked through `agent_access.AgentAccess`, which reuses what the catalog says about live agents).
Every refusal is a `ParleyError` whose code becomes the `handshake_error` reason.
The WebRTC routes (docs/webrtc.md#which-agent-a-caller-is-bound-to) ask the catalog the same
question for the agent a request is bound to (`bound_agent`): a client token is bound to the agent
it was minted for (an `X-Parley-Agent` naming another is refused); a session cookie or an API key
names the agent in `X-Parley-Agent`. Anything refused there is 403 `chatty.not_entitled`, whether
the agent exists or not.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from parley_common.auth_client import AuthClient
from parley_common.auth_contract import CredentialKind, Principal
from parley_common.catalog_contract import AgentAccessReply
from parley_common.errors import REGISTRY, Codes, ErrorCode, ParleyError
from parley_common.speech_contract import AgentVoiceConfig
from parley_session_gateway.agent_access import AgentAccess

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
    auth: AuthClient, access: AgentAccess, *, credential: str | None, agent_id: str, timeout_s: float
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
        reply = await access.ask(agent_id, principal, timeout_s=timeout_s)
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


# ---------------------------------------------------------------------------------- WebRTC binding


def not_entitled(detail: str) -> ParleyError:
    return ParleyError(Codes.CHATTY_NOT_ENTITLED, params={"detail": detail})


async def bound_agent(
    access: AgentAccess, principal: Principal, named: str | None, *, timeout_s: float
) -> AgentAccessReply:
    """The catalog's answer for the agent the request is bound to (`agent_id`, owner, model,
    voice), or the 403 that says why there is none."""
    if principal.kind is CredentialKind.CLIENT_TOKEN:
        if named and not same_agent(named, principal.agent_id):
            raise not_entitled("X-Parley-Agent names another agent than the client token's")
        agent_id = principal.agent_id
    else:
        agent_id = named
    if not agent_id:
        raise ParleyError(Codes.CHATTY_AGENT_REQUIRED)
    reply = await access.ask(agent_id, principal, timeout_s=timeout_s)
    if reply.ok and reply.agent_id:
        return reply
    code = reply.error.code if reply.error else Codes.NOT_FOUND.code
    if code == Codes.NOT_FOUND.code:
        raise not_entitled("no agent of that id that this credential may talk to")
    raise ParleyError(REGISTRY.get(code, Codes.FORBIDDEN), reply.error.message if reply.error else None)

"""Which agent a voice request is bound to (docs/webrtc.md#which-agent-a-caller-is-bound-to).

A client token is bound to the agent it was minted for (an `X-Parley-Agent` naming another is
refused); a session cookie or an API key names the agent in `X-Parley-Agent`. Either way the
catalog then decides, as for a `/realtime` handshake (`catalog.agent.access`), whether the caller
may talk to it: a live agent, or one the caller may view; an org's key and its tokens only their
org's. Anything refused is 403 `chatty.not_entitled`, whether the agent exists or not.
"""

from __future__ import annotations

from faststream.nats import NatsBroker

from parley_common import subjects
from parley_common.auth_contract import CredentialKind, Principal
from parley_common.bus import request
from parley_common.catalog_contract import AgentAccessReply, AgentAccessRequest
from parley_common.errors import REGISTRY, Codes, ParleyError
from parley_session_gateway.realtime.access import same_agent


def not_entitled(detail: str) -> ParleyError:
    return ParleyError(Codes.CHATTY_NOT_ENTITLED, params={"detail": detail})


async def bound_agent(
    broker: NatsBroker, principal: Principal, named: str | None, *, timeout_s: float
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
    reply = await request(
        broker,
        subjects.CATALOG_AGENT_ACCESS,
        AgentAccessRequest(agent_id=agent_id, principal=principal),
        AgentAccessReply,
        timeout=timeout_s,
    )
    if reply.ok and reply.agent_id:
        return reply
    code = reply.error.code if reply.error else Codes.NOT_FOUND.code
    if code == Codes.NOT_FOUND.code:
        raise not_entitled("no agent of that id that this credential may talk to")
    raise ParleyError(REGISTRY.get(code, Codes.FORBIDDEN), reply.error.message if reply.error else None)

"""Which chat sessions a reconnecting client may resume (`/chat/ws?session_id=…&last_event=…`).

Each chat session is recorded in Redis when it starts, with the scope of the token that opened it
(agent, organization, environment) and its start time. A resume needs a valid chat token of the
same scope, as a `token-refresh` does; the record lives `gateway_resume_ttl_s` after the start or
after the last socket of the session closed. Whether the session still runs is the runtime's
business (its reconnect grace): a resume after the end replays what the client missed, ending with
`session-closed`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from redis.asyncio import Redis

from parley_common.auth_contract import Principal
from parley_common.errors import Codes
from parley_session_gateway.realtime.access import Refused, same_agent


@dataclass(frozen=True)
class ChatResume:
    session_id: str
    last_event: int  # the `seq` of the last session event the client received (0: none)


@dataclass(frozen=True)
class ChatRecord:
    conversation_id: UUID
    agent_id: str  # as the catalog names it
    token_agent_id: str  # the token's `workflow_id`
    org_id: str | None
    env: str | None
    started_at: datetime

    def admits(self, principal: Principal) -> bool:
        return (
            same_agent(self.token_agent_id, principal.agent_id)
            and self.org_id == (str(principal.org_id) if principal.org_id else None)
            and self.env == (principal.env.value if principal.env else None)
        )


def _key(conversation_id: UUID) -> str:
    return f"parley:gw:chat:{conversation_id}"


async def remember_chat(
    redis: Redis, conversation_id: UUID, principal: Principal, agent_id: str, started_at: datetime, ttl_s: int
) -> None:
    body = {
        "agent_id": agent_id,
        "token_agent_id": principal.agent_id,
        "org_id": str(principal.org_id) if principal.org_id else None,
        "env": principal.env.value if principal.env else None,
        "started_at": started_at.isoformat(),
    }
    await redis.set(_key(conversation_id), json.dumps(body), ex=ttl_s)


async def touch_chat(redis: Redis, conversation_id: UUID, ttl_s: int) -> None:
    """A socket of this session just closed: it stays resumable for another `ttl_s`."""
    await redis.expire(_key(conversation_id), ttl_s)


async def find_chat(redis: Redis, session_id: str, principal: Principal) -> ChatRecord:
    """The chat session this token may resume, or `realtime.session_not_found` (never saying why)."""
    refused = Refused(Codes.REALTIME_SESSION_NOT_FOUND)
    try:
        conversation_id = UUID(session_id)
    except ValueError:
        raise refused from None
    raw = await redis.get(_key(conversation_id))
    if raw is None:
        raise refused
    meta = json.loads(raw)
    record = ChatRecord(
        conversation_id=conversation_id,
        agent_id=meta["agent_id"],
        token_agent_id=meta["token_agent_id"],
        org_id=meta["org_id"],
        env=meta["env"],
        started_at=datetime.fromisoformat(meta["started_at"]),
    )
    if not record.admits(principal):
        raise refused
    return record

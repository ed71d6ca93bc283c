"""Which sessions a reconnecting client may resume, recorded in Redis when they start.

Both protocols resume with the conversation's id and the last event the client received
(`/realtime?resume=…&last_event=…`, `/chat/ws?session_id=…&last_event=…`): `Resume`.

- Every session (`open_session`) is recorded with its owner (the user; a fresh credential of the
  same user may resume it) and its agent: `remember` / `check_resume` (the `/realtime` rule).
- A chat session is also recorded with the scope of the token that opened it (agent, organization,
  environment) and its start time: a resume needs a valid chat token of the same scope, as a
  `token-refresh` does (`remember_chat` / `find_chat`).

Records live `gateway_resume_ttl_s` after the start or after the last socket of the session closed
(`touch`). Whether the session still runs is the runtime's business (its reconnect grace): a resume
after the end replays what the client missed, ending with the session's end. A refusal is always
`realtime.session_not_found`, never saying why.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from redis.asyncio import Redis

from parley_common.auth_contract import Principal
from parley_common.errors import Codes
from parley_common.redis_client import RedisLine
from parley_session_gateway.access import Admission, Refused, same_agent


@dataclass(frozen=True)
class Resume:
    conversation_id: str  # as the client sent it (checked by `check_resume` / `find_chat`)
    last_event: int  # the last event the client received (0: none)


def _key(conversation_id: UUID) -> str:
    return f"parley:gw:session:{conversation_id}"


def _chat_key(conversation_id: UUID) -> str:
    return f"parley:gw:chat:{conversation_id}"


Key = Callable[[UUID], str]


async def _load(redis: Redis, key: Key, conversation_id: str) -> tuple[UUID, dict[str, Any]]:
    """The record of the conversation under `key(id)`, or the refusal."""
    try:
        conv = UUID(conversation_id)
    except ValueError:
        raise _not_found() from None
    raw = await redis.get(key(conv))
    if raw is None:
        raise _not_found()
    meta: dict[str, Any] = json.loads(raw)
    return conv, meta


def _not_found() -> Refused:
    return Refused(Codes.REALTIME_SESSION_NOT_FOUND)


async def touch(redis: Redis, conversation_id: UUID, ttl_s: int) -> None:
    """A socket of this conversation just closed: it stays resumable for another `ttl_s`."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.expire(_key(conversation_id), ttl_s)
        pipe.expire(_chat_key(conversation_id), ttl_s)  # a no-op unless it is a chat session
        await pipe.execute()


# ----------------------------------------------------------------------------- every session


def _owner(principal: Principal) -> str:
    # A user reconnects with a fresh credential (a new client token, another cookie): the user is
    # the owner. Principals without a user (none today) fall back to the credential itself.
    return f"user:{principal.user_id}" if principal.user_id else f"credential:{principal.credential_id}"


# Records are written over the gateway's own connection (`RedisLine`: no pool checkout, retry
# wrapper or reader per command; ~90 µs of CPU less per opening, docs/performance.md change 48),
# and through the pool, with its retries, when the line loses the write.


async def remember(line: RedisLine, conversation_id: UUID, admission: Admission, ttl_s: int) -> None:
    body = json.dumps({"owner": _owner(admission.principal), "agent_id": admission.agent_id})
    await line.write("SET", _key(conversation_id), body, "EX", ttl_s)


async def check_resume(redis: Redis, conversation_id: str, admission: Admission) -> UUID:
    """The conversation this caller may resume, or `realtime.session_not_found`."""
    conv, meta = await _load(redis, _key, conversation_id)
    if meta.get("owner") != _owner(admission.principal) or not same_agent(
        meta.get("agent_id"), admission.agent_id
    ):
        raise _not_found()
    return conv


# ----------------------------------------------------------------------------- chat sessions


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


async def remember_chat(
    line: RedisLine,
    conversation_id: UUID,
    principal: Principal,
    agent_id: str,
    started_at: datetime,
    ttl_s: int,
) -> None:
    body = {
        "agent_id": agent_id,
        "token_agent_id": principal.agent_id,
        "org_id": str(principal.org_id) if principal.org_id else None,
        "env": principal.env.value if principal.env else None,
        "started_at": started_at.isoformat(),
    }
    await line.write("SET", _chat_key(conversation_id), json.dumps(body), "EX", ttl_s)


async def find_chat(redis: Redis, session_id: str, principal: Principal) -> ChatRecord:
    """The chat session this token may resume, or `realtime.session_not_found`."""
    conversation_id, meta = await _load(redis, _chat_key, session_id)
    record = ChatRecord(
        conversation_id=conversation_id,
        agent_id=meta["agent_id"],
        token_agent_id=meta["token_agent_id"],
        org_id=meta["org_id"],
        env=meta["env"],
        started_at=datetime.fromisoformat(meta["started_at"]),
    )
    if not record.admits(principal):
        raise _not_found()
    return record

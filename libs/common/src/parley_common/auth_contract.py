"""Bus contract of the auth service: `auth.verify`, `auth.authorize` and revocation events."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field

from parley_common.errors import BusReply


class MemberRole(StrEnum):
    """Role hierarchy (highest → lowest): owner > admin > member > viewer."""

    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"
    VIEWER = "viewer"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def at_least(self, other: MemberRole) -> bool:
        return self.rank >= other.rank


_RANK = {MemberRole.VIEWER: 1, MemberRole.MEMBER: 2, MemberRole.ADMIN: 3, MemberRole.OWNER: 4}


# The HttpOnly browser session cookie auth sets and the catalog and the gateway read (part of the
# client contract); each service's `*_cookie_name` setting defaults to it.
SESSION_COOKIE = "kivox_session"


class CredentialKind(StrEnum):
    SESSION = "session"  # browser cookie session
    API_KEY = "api_key"  # `sk_live_…` bearer key
    CLIENT_TOKEN = "client_token"  # scoped end-user token minted by POST /chat/tokens or /voice/tokens


class TokenEnv(StrEnum):
    PRODUCTION = "production"
    STAGING = "staging"
    DEVELOPMENT = "development"


class Principal(BaseModel):
    """Who is calling, as established by `auth.verify`."""

    kind: CredentialKind
    credential_id: UUID
    user_id: UUID | None = None
    # API keys owned by an org, and client tokens, are bound to that org.
    org_id: UUID | None = None
    scopes: list[str] = Field(default_factory=list)
    # Client tokens only: what the token may talk to.
    agent_id: str | None = None
    env: TokenEnv | None = None
    token_type: Literal["chat", "voice"] | None = None
    # Client tokens only: the `data` given when the token was minted, passed to the agent.
    data: dict[str, Any] | None = None
    # Client tokens only: the API key that minted the token (revoking it revokes the token).
    api_key_id: UUID | None = None
    # Client tokens minted with a browser session (`POST /api/realtime-token` from a signed-in
    # page): that session, whose end (logout, logout everywhere, password reset) ends the token.
    session_id: UUID | None = None
    expires_at: datetime | None = None

    def has_scope(self, scope: str) -> bool:
        return "*" in self.scopes or scope in self.scopes


# No credential Parley issues is longer; anything longer is refused before it reaches auth.
MAX_CREDENTIAL_LENGTH = 4096


class VerifyRequest(BaseModel):
    credential: str = Field(min_length=1, max_length=MAX_CREDENTIAL_LENGTH)
    # Optional hint; without it the kind is inferred from the credential's shape.
    kind: CredentialKind | None = None


class VerifyReply(BusReply):
    principal: Principal | None = None


class MintTokenRequest(BaseModel):
    """`auth.token.mint`: a short-lived client token for one agent, minted on behalf of the caller
    whose raw `credential` this is (auth verifies it itself: a service cannot mint for a principal
    it merely claims). The requesting service has already checked that the caller may use
    `agent_id` (auth does not know agents); a client token may only mint for its own agent, never
    beyond its own expiry. Used by `POST /api/realtime-token` (docs/webrtc.md)."""

    credential: str = Field(min_length=1, max_length=MAX_CREDENTIAL_LENGTH)
    agent_id: str = Field(min_length=1, max_length=200)
    token_type: Literal["chat", "voice"] = "voice"
    ttl_seconds: int = Field(ge=60, le=86400)


class MintTokenReply(BusReply):
    token: str | None = None
    token_id: UUID | None = None
    expires_at: datetime | None = None


class AuthorizeRequest(BaseModel):
    principal: Principal
    # Exactly one of org_id / org_slug identifies the org.
    org_id: UUID | None = None
    org_slug: str | None = Field(default=None, max_length=64)
    min_role: MemberRole = MemberRole.VIEWER


class AuthorizeReply(BusReply):
    org_id: UUID | None = None
    role: MemberRole | None = None


class RevokedEvent(BaseModel):
    """`auth.events.revoked` (fan-out): credentials that stopped being valid.

    Services caching verify results forget them; the session gateway closes every connection
    opened with one of them (`revokes`). Published after the revocation is committed.
    """

    # The kind of `credential_ids`, when they are all of one kind.
    kind: CredentialKind | None = None
    # Revoked credentials: sessions, API keys, client tokens. A revoked API key also revokes every
    # client token it minted (`Principal.api_key_id`).
    credential_ids: list[UUID] = Field(default_factory=list)
    # With `user_kinds`: every credential of these kinds of this user is revoked (logout
    # everywhere and password reset: sessions; account deletion: every kind).
    user_id: UUID | None = None
    user_kinds: list[CredentialKind] = Field(default_factory=list)
    at: datetime

    def revokes(self, principal: Principal) -> bool:
        """Whether a connection authenticated as `principal` must end."""
        if principal.credential_id in self.credential_ids:
            return True
        if principal.api_key_id is not None and principal.api_key_id in self.credential_ids:
            return True
        if principal.session_id is not None and principal.session_id in self.credential_ids:
            return True
        if self.user_id is None or principal.user_id != self.user_id:
            return False
        # A token minted with a session ends with the user's sessions.
        minted_by_session = principal.session_id is not None and CredentialKind.SESSION in self.user_kinds
        return principal.kind in self.user_kinds or minted_by_session


# API key scopes. `*` grants everything; the others name what a key may do, service by service.
SCOPES: frozenset[str] = frozenset(
    {
        "*",
        "account:read",  # read own profile, orgs, members, keys
        "account:write",  # change profile, orgs, members
        "keys:write",  # create and revoke API keys
        "tokens:mint",  # mint scoped client tokens (POST /chat/tokens, /voice/tokens)
        "agents:read",
        "agents:write",
        "conversations:read",
        "sessions:write",  # talk to agents: /realtime sessions; Octavus agent sessions
    }
)

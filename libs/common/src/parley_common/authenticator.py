"""One way to authenticate an HTTP request, for every service (the shape of Polar's `Authenticator`).

A route says who may call it with one typed dependency, and nothing else reads credentials:

    AgentsReader = Annotated[Principal, Depends(Authenticator(required_scopes={"agents:read"}))]
    AccountWriter = Annotated[
        Principal, Depends(Authenticator(required_scopes={"account:write"}, org_keys=False))
    ]

The `Authenticator` reads the credential (`Authorization: Bearer …`, else the session cookie),
caps its length, has it verified, then checks its kind, the organization fence and the scopes, in
that order. How a credential is verified is the app's business, set once at startup with
`install_authenticator`: the auth service verifies in-process against its tables, every other
service asks auth over the bus (`AuthClient`). Resource-level fences (an org key never sees
another owner's agent: 404) stay where the resource is loaded; this module decides who may call a
route at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from fastapi import FastAPI
from starlette.requests import HTTPConnection, Request

from parley_common.auth_contract import CredentialKind, Principal
from parley_common.errors import Codes, ErrorCode, ParleyError

# Longer credentials are refused before any lookup (every real one is far shorter).
MAX_CREDENTIAL = 4096
# Who calls account-level routes: people, through a browser session or an API key. Client tokens
# are for end users talking to one agent and reach no HTTP route but the sockets.
ACCOUNT_KINDS = frozenset({CredentialKind.SESSION, CredentialKind.API_KEY})
_STATE_KEY = "authenticator"
_NAMES = {
    CredentialKind.SESSION: "a session cookie",
    CredentialKind.API_KEY: "an API key",
    CredentialKind.CLIENT_TOKEN: "a client token",
}


class CredentialVerifier(Protocol):
    """Turns a raw credential into a `Principal`, or raises the `ParleyError` auth gives for it."""

    async def verify(self, credential: str, kind: CredentialKind | None = None) -> Principal: ...


@dataclass(frozen=True)
class Verification:
    """How an app verifies credentials, and the name of the browser session cookie."""

    verifier: CredentialVerifier
    cookie_name: str


def install_authenticator(app: FastAPI, verifier: CredentialVerifier, *, cookie_name: str) -> None:
    """Set how this app's `Authenticator`s verify credentials (once, when building the app)."""
    setattr(app.state, _STATE_KEY, Verification(verifier=verifier, cookie_name=cookie_name))


def credential_of(conn: HTTPConnection, cookie_name: str | None) -> tuple[str, CredentialKind | None] | None:
    """The request's credential: a bearer token (its kind told by its shape), else the session
    cookie when `cookie_name` is given. An `Authorization` header of another scheme is ignored."""
    scheme, _, value = conn.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), None
    cookie = conn.cookies.get(cookie_name) if cookie_name else None
    if cookie:
        return cookie, CredentialKind.SESSION
    return None


class Authenticator:
    """A FastAPI dependency: the verified `Principal` of a caller allowed on this route.

    - `required_scopes`: every one must be held (`*` holds them all); else 403
      `auth.insufficient_scope` naming the first one missing.
    - `allowed_kinds`: the credential kinds taken; another kind gets `wrong_kind` (403
      `auth.forbidden` by default).
    - `org_keys`: whether an API key owned by an organization may call. Routes on the account or
      on personal resources say False: such a key gets 403 `auth.forbidden`. Routes that name an
      org or a resource let the resource's owner decide (an org key only ever sees its org).
    - `api_key_header`: the routes of a CLI or server SDK (Octavus): only `Authorization: Bearer`
      is read and verified as an API key; no cookie, and anything else is 401.
    """

    def __init__(
        self,
        *,
        required_scopes: Iterable[str] = (),
        allowed_kinds: Iterable[CredentialKind] = ACCOUNT_KINDS,
        org_keys: bool = True,
        api_key_header: bool = False,
        wrong_kind: ErrorCode = Codes.FORBIDDEN,
    ) -> None:
        self.required_scopes = tuple(sorted(set(required_scopes)))
        self.allowed_kinds = frozenset({CredentialKind.API_KEY} if api_key_header else allowed_kinds)
        self.org_keys = org_keys
        self.api_key_header = api_key_header
        self.wrong_kind = Codes.UNAUTHENTICATED if api_key_header else wrong_kind
        names = " or ".join(_NAMES[k] for k in CredentialKind if k in self.allowed_kinds)
        self._wrong_kind_message = f"This endpoint takes {names}."

    async def __call__(self, request: Request) -> Principal:
        verification: Verification = getattr(request.app.state, _STATE_KEY)
        found = credential_of(request, None if self.api_key_header else verification.cookie_name)
        if found is None or len(found[0]) > MAX_CREDENTIAL:
            raise self._missing()
        credential, kind = found
        if self.api_key_header:
            kind = CredentialKind.API_KEY
        principal = await verification.verifier.verify(credential, kind)
        self.check(principal)
        return principal

    def check(self, principal: Principal) -> None:
        """The route's rules, for a principal already verified."""
        if principal.kind not in self.allowed_kinds or principal.user_id is None:
            raise ParleyError(self.wrong_kind, self._wrong_kind_message)
        if principal.kind is CredentialKind.API_KEY and principal.org_id is not None and not self.org_keys:
            raise ParleyError(
                Codes.FORBIDDEN, "An organization's API key cannot reach account or personal resources."
            )
        for scope in self.required_scopes:
            if not principal.has_scope(scope):
                raise ParleyError(Codes.INSUFFICIENT_SCOPE, params={"scope": scope})

    def _missing(self) -> ParleyError:
        if self.api_key_header:
            return ParleyError(
                Codes.UNAUTHENTICATED, "An API key is required: send Authorization: Bearer <key>."
            )
        return ParleyError(Codes.UNAUTHENTICATED)

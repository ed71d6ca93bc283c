"""HTTP: /auth/signup, /auth/sessions, /auth/password/*, /users/me."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, Response, status
from fastapi.types import DecoratedCallable

from parley_auth.accounts import schemas, service
from parley_auth.accounts.models import User
from parley_auth.context import AuthContext
from parley_auth.deps import AccountReader, AccountWriter, Ctx, CurrentSession, Db, client_ip, load_user
from parley_auth.orgs.service import assert_not_last_owner_anywhere
from parley_auth.routing import contract_router, no_content
from parley_common.auth_contract import CredentialKind, Principal
from parley_common.errors import Codes, ParleyError

router = APIRouter()  # both below, in this order
auth = contract_router("auth")  # /auth/*
users = contract_router("users")  # /users/me*
TurnstileHeader = Annotated[
    str | None,
    Header(alias="X-Turnstile-Token", max_length=4096, include_in_schema=False),
]
# The contract requires the header, so the document says so and generated clients always send it;
# the server checks it only when a Turnstile secret is configured (self-hosted installs have none).
TURNSTILE_DOC = {
    "parameters": [
        {
            "name": "X-Turnstile-Token",
            "in": "header",
            "required": True,
            "description": "Cloudflare Turnstile challenge token.",
            "schema": {"type": "string", "maxLength": 4096},
        }
    ]
}


@dataclass
class Challenge:
    """The gate of a public form: the caller's rate limits first, then the Turnstile challenge."""

    ctx: AuthContext
    ip: str
    token: str | None

    async def admit(self, *limits: tuple[str, str, str]) -> None:
        """Count the attempt against each `(action, limit, identifier)`, then check the challenge."""
        for action, limit, identifier in limits:
            await self.ctx.limiter.hit(action, limit, identifier)
        await self.ctx.turnstile.verify(self.token, self.ip)


async def _challenge(request: Request, ctx: Ctx, turnstile: TurnstileHeader = None) -> Challenge:
    return Challenge(ctx, client_ip(request), turnstile)


Challenged = Annotated[Challenge, Depends(_challenge)]


def _challenged(
    path: str, status_code: int, summary: str, description: str | None = None
) -> Callable[[DecoratedCallable], DecoratedCallable]:
    """POST `path`, a public form behind the challenge (`Challenged`), documented with its header."""
    return auth.post(
        path, status_code=status_code, openapi_extra=TURNSTILE_DOC, summary=summary, description=description
    )


def _signed_out(ctx: Ctx) -> Response:
    """204, clearing the session cookie of this browser."""
    out = no_content()
    out.delete_cookie(ctx.settings.auth_cookie_name, path="/")
    return out


def _user_out(user: User) -> schemas.User:
    return schemas.User.model_validate(user, from_attributes=True)


async def _open_session(
    request: Request, response: Response, ctx: Ctx, db: Db, user: User
) -> schemas.AuthSessionResponse:
    """Start a cookie session for `user` (after sign-up or login) and set the cookie."""
    token, session = await service.start_session(
        db, ctx.settings, user, user_agent=request.headers.get("user-agent"), ip=client_ip(request)
    )
    await db.commit()
    response.set_cookie(
        ctx.settings.auth_cookie_name,
        token,
        max_age=ctx.settings.auth_session_ttl_hours * 3600,
        httponly=True,
        secure=request.url.scheme == "https" or ctx.settings.public_url.startswith("https://"),
        samesite="lax",
        path="/",
    )
    return schemas.AuthSessionResponse(expires_at=session.expires_at)


@_challenged("/auth/signup", status.HTTP_201_CREATED, "Register a new user account")
async def signup(
    body: schemas.SignupRequest, request: Request, response: Response, ctx: Ctx, db: Db, gate: Challenged
) -> schemas.AuthSessionResponse:
    await gate.admit(("signup", ctx.settings.auth_rate_signup_ip, gate.ip))
    user = await service.create_user(db, str(body.email), body.password, body.name)
    return await _open_session(request, response, ctx, db, user)


@_challenged("/auth/sessions", status.HTTP_201_CREATED, "Log in and start a session")
async def create_session(
    body: schemas.LoginRequest, request: Request, response: Response, ctx: Ctx, db: Db, gate: Challenged
) -> schemas.AuthSessionResponse:
    await gate.admit(
        ("login:ip", ctx.settings.auth_rate_login_ip, gate.ip),
        ("login:account", ctx.settings.auth_rate_login_account, str(body.email)),
    )
    user = await service.authenticate(db, str(body.email), body.password)
    return await _open_session(request, response, ctx, db, user)


@auth.delete(
    "/auth/sessions",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Log out of all sessions",
    description="Needs the `account:write` scope (a browser session holds it); an organization's API "
    "key cannot.",
)
async def revoke_all_sessions(ctx: Ctx, db: Db, principal: AccountWriter) -> Response:
    assert principal.user_id is not None
    revoked = await service.revoke_all_sessions(db, principal.user_id)
    await db.commit()
    await ctx.publish_revoked(
        kind=CredentialKind.SESSION,
        credential_ids=revoked,
        user_id=principal.user_id,
        user_kinds=[CredentialKind.SESSION],
    )
    return _signed_out(ctx)


@auth.delete(
    "/auth/sessions/me", status_code=status.HTTP_204_NO_CONTENT, summary="Log out of the current session"
)
async def revoke_session(ctx: Ctx, db: Db, principal: CurrentSession) -> Response:
    await service.revoke_session(db, principal.credential_id)
    await db.commit()
    await ctx.publish_revoked(kind=CredentialKind.SESSION, credential_ids=[principal.credential_id])
    return _signed_out(ctx)


@_challenged(
    "/auth/password/recover",
    status.HTTP_204_NO_CONTENT,
    "Request a password reset email",
    "Always returns 204 regardless of whether the email exists, to prevent email enumeration.",
)
async def recover_password(
    body: schemas.RecoverPasswordRequest, ctx: Ctx, db: Db, gate: Challenged
) -> Response:
    await gate.admit(("recover:ip", ctx.settings.auth_rate_recover_ip, gate.ip))
    try:
        await ctx.limiter.hit("recover:account", ctx.settings.auth_rate_recover_account, str(body.email))
    except ParleyError:
        # Per-account throttling stays silent: a 429 here would reveal that the address is known.
        return no_content()
    await service.request_password_reset(db, ctx.settings, str(body.email))
    await db.commit()
    return no_content()


@auth.post(
    "/auth/password/reset",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Reset password using a recovery token",
    description="Consumes the token and updates the password. All existing sessions are revoked on success.",
)
async def reset_password(body: schemas.ResetPasswordRequest, ctx: Ctx, db: Db) -> Response:
    user_id = await service.reset_password(db, ctx.settings, body.token, body.password)
    await db.commit()
    sessions = [CredentialKind.SESSION]
    await ctx.publish_revoked(kind=CredentialKind.SESSION, user_id=user_id, user_kinds=sessions)
    return no_content()


@users.get("/users/me", summary="Get the authenticated user's profile")
async def get_me(db: Db, principal: AccountReader) -> schemas.User:
    return _user_out(await load_user(db, principal))


@users.patch("/users/me", summary="Update the authenticated user's profile")
async def update_me(body: schemas.UpdateUserRequest, db: Db, principal: AccountWriter) -> schemas.User:
    user = await load_user(db, principal)
    await service.update_profile(db, user, fields=body.model_dump(exclude_unset=True))
    await db.commit()
    return _user_out(user)


@users.patch(
    "/users/me/email",
    summary="Update the authenticated user's email address",
    description="The login email is where password resets go, so changing it needs a browser session "
    "or, with an API key, the account's current password in `current_password` (a Parley extension; "
    "checked whenever it is given). The old address is told of the change.",
)
async def update_my_email(
    body: schemas.UpdateEmailRequest, ctx: Ctx, db: Db, principal: AccountWriter
) -> schemas.User:
    user = await load_user(db, principal)
    await _confirm_identity(ctx, user, principal, body.current_password)
    await service.change_email(db, user, str(body.email))
    await db.commit()
    return _user_out(user)


async def _confirm_identity(ctx: Ctx, user: User, principal: Principal, password: str | None) -> None:
    """A browser session, or the current password: an API key alone never moves the login email."""
    if password is None:
        if principal.kind is not CredentialKind.SESSION:
            raise ParleyError(Codes.CURRENT_PASSWORD_REQUIRED)
        return
    # Guesses here count against the same per-account budget as logins.
    await ctx.limiter.hit("login:account", ctx.settings.auth_rate_login_account, user.email)
    if not await service.password_matches(user, password):
        raise ParleyError(Codes.CURRENT_PASSWORD_INCORRECT)


@users.delete(
    "/users/me",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Soft-delete the authenticated user's account",
)
async def delete_me(ctx: Ctx, db: Db, principal: AccountWriter) -> Response:
    user = await load_user(db, principal)
    await assert_not_last_owner_anywhere(db, user.id)
    keys = await service.soft_delete_user(db, user)
    await db.commit()
    # Every kind: the keys, the client tokens they minted and the sessions all die with the account.
    await ctx.publish_revoked(user_id=user.id, credential_ids=keys, user_kinds=list(CredentialKind))
    return _signed_out(ctx)


router.include_router(auth)
router.include_router(users)

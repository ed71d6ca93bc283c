"""HTTP: /auth/signup, /auth/sessions, /auth/password/*, /users/me."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response, status

from parley_auth.accounts import schemas, service
from parley_auth.accounts.models import User
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


def _signed_out(ctx: Ctx) -> Response:
    """204, clearing the session cookie of this browser."""
    out = Response(status_code=status.HTTP_204_NO_CONTENT)
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


@auth.post(
    "/auth/signup",
    status_code=status.HTTP_201_CREATED,
    openapi_extra=TURNSTILE_DOC,
    summary="Register a new user account",
)
async def signup(
    body: schemas.SignupRequest,
    request: Request,
    response: Response,
    ctx: Ctx,
    db: Db,
    turnstile: TurnstileHeader = None,
) -> schemas.AuthSessionResponse:
    ip = client_ip(request)
    await ctx.limiter.hit("signup", ctx.settings.auth_rate_signup_ip, ip)
    await ctx.turnstile.verify(turnstile, ip)
    user = await service.create_user(db, str(body.email), body.password, body.name)
    return await _open_session(request, response, ctx, db, user)


@auth.post(
    "/auth/sessions",
    status_code=status.HTTP_201_CREATED,
    openapi_extra=TURNSTILE_DOC,
    summary="Log in and start a session",
)
async def create_session(
    body: schemas.LoginRequest,
    request: Request,
    response: Response,
    ctx: Ctx,
    db: Db,
    turnstile: TurnstileHeader = None,
) -> schemas.AuthSessionResponse:
    ip = client_ip(request)
    await ctx.limiter.hit("login:ip", ctx.settings.auth_rate_login_ip, ip)
    await ctx.limiter.hit("login:account", ctx.settings.auth_rate_login_account, str(body.email))
    await ctx.turnstile.verify(turnstile, ip)
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


@auth.post(
    "/auth/password/recover",
    status_code=status.HTTP_204_NO_CONTENT,
    openapi_extra=TURNSTILE_DOC,
    summary="Request a password reset email",
    description="Always returns 204 regardless of whether the email exists, to prevent email enumeration.",
)
async def recover_password(
    body: schemas.RecoverPasswordRequest,
    request: Request,
    ctx: Ctx,
    db: Db,
    turnstile: TurnstileHeader = None,
) -> Response:
    ip = client_ip(request)
    await ctx.limiter.hit("recover:ip", ctx.settings.auth_rate_recover_ip, ip)
    await ctx.turnstile.verify(turnstile, ip)
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
    if not service.password_matches(user, password):
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

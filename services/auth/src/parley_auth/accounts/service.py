"""Account logic: sign-up, login, sessions, password recovery, profile and email changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode
from uuid import UUID

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from parley_auth.accounts.models import PasswordResetToken, User, UserSession
from parley_auth.apikeys.models import ApiKey
from parley_auth.mail import outbox
from parley_auth.security import credentials
from parley_auth.settings import AuthSettings
from parley_common.errors import Codes, ParleyError
from parley_common.kit.db import flush_unique


def now() -> datetime:
    return datetime.now(UTC)


async def find_live_user_by_email(db: AsyncSession, email: str) -> User | None:
    return await db.scalar(
        select(User).where(func.lower(User.email) == email.lower(), User.deleted_at.is_(None))
    )


async def create_user(db: AsyncSession, email: str, password: str, name: str) -> User:
    if await find_live_user_by_email(db, email) is not None:
        raise ParleyError(Codes.EMAIL_TAKEN)
    user = User(email=email, name=name, password_hash=await credentials.hash_password(password))
    db.add(user)
    await flush_unique(db, Codes.EMAIL_TAKEN)  # a concurrent sign-up may win the race for this email
    return user


async def authenticate(db: AsyncSession, email: str, password: str) -> User:
    user = await find_live_user_by_email(db, email)
    # verify_password runs argon2 even without a user, so timing does not reveal accounts.
    if not await credentials.verify_password(user.password_hash if user else None, password) or user is None:
        raise ParleyError(Codes.INVALID_CREDENTIALS)
    if credentials.needs_rehash(user.password_hash):
        user.password_hash = await credentials.hash_password(password)
    return user


async def start_session(
    db: AsyncSession, settings: AuthSettings, user: User, *, user_agent: str | None, ip: str | None
) -> tuple[str, UserSession]:
    token = credentials.new_session_token()
    row = UserSession(
        user_id=user.id,
        token_hash=credentials.token_hash(settings.auth_token_secret, token),
        expires_at=now() + timedelta(hours=settings.auth_session_ttl_hours),
        user_agent=(user_agent or "")[:512] or None,
        ip=ip,
    )
    db.add(row)
    await db.flush()
    return token, row


async def revoke_session(db: AsyncSession, session_id: UUID) -> None:
    await db.execute(
        update(UserSession)
        .where(UserSession.id == session_id, UserSession.revoked_at.is_(None))
        .values(revoked_at=now())
    )


async def revoke_all_sessions(db: AsyncSession, user_id: UUID) -> list[UUID]:
    result = await db.scalars(
        update(UserSession)
        .where(UserSession.user_id == user_id, UserSession.revoked_at.is_(None))
        .values(revoked_at=now())
        .returning(UserSession.id)
    )
    return list(result.all())


async def request_password_reset(db: AsyncSession, settings: AuthSettings, email: str) -> None:
    """Queue a reset mail when the account exists; say nothing either way (no enumeration)."""
    user = await find_live_user_by_email(db, email)
    if user is None:
        return
    token = credentials.new_reset_token()
    db.add(
        PasswordResetToken(
            user_id=user.id,
            token_hash=credentials.token_hash(settings.auth_token_secret, token),
            expires_at=now() + timedelta(minutes=settings.auth_reset_token_ttl_minutes),
        )
    )
    link = f"{settings.public_url.rstrip('/')}/reset-password?{urlencode({'token': token})}"
    outbox.enqueue(
        db,
        user.email,
        "Reset your Parley password",
        f"Hello {user.name},\n\n"
        f"Someone asked to reset the password of your Parley account. To choose a new one, open:\n\n"
        f"{link}\n\n"
        f"or send this token to POST /auth/password/reset:\n\n{token}\n\n"
        f"The link expires in {settings.auth_reset_token_ttl_minutes} minutes and works once. "
        f"If you did not ask for this, ignore this mail.\n",
    )


async def reset_password(db: AsyncSession, settings: AuthSettings, token: str, password: str) -> UUID:
    """Consume a reset token (single use), set the password and revoke every session."""
    row = await db.scalar(
        select(PasswordResetToken)
        .where(PasswordResetToken.token_hash == credentials.token_hash(settings.auth_token_secret, token))
        .with_for_update()
    )
    if row is None or row.used_at is not None or row.expires_at <= now():
        raise ParleyError(Codes.RESET_TOKEN_INVALID)
    user = await db.get(User, row.user_id)
    if user is None or user.deleted_at is not None:
        raise ParleyError(Codes.RESET_TOKEN_INVALID)
    row.used_at = now()
    user.password_hash = await credentials.hash_password(password)
    # Every other outstanding reset token of this user dies with this one.
    await db.execute(
        update(PasswordResetToken)
        .where(PasswordResetToken.user_id == user.id, PasswordResetToken.used_at.is_(None))
        .values(used_at=now())
    )
    await revoke_all_sessions(db, user.id)
    return user.id


async def update_profile(db: AsyncSession, user: User, *, fields: dict[str, object]) -> User:
    if "name" in fields and fields["name"] is not None:
        user.name = str(fields["name"])
    if "avatar_url" in fields:
        user.avatar_url = str(fields["avatar_url"]) if fields["avatar_url"] is not None else None
    user.updated_at = now()
    await db.flush()
    return user


async def password_matches(user: User, password: str) -> bool:
    return await credentials.verify_password(user.password_hash, password)


async def change_email(db: AsyncSession, user: User, email: str) -> User:
    """Move the login email, and tell the old address in the same transaction (via the outbox)."""
    old = user.email
    if email.lower() == old.lower():
        return user
    if await find_live_user_by_email(db, email) is not None:
        raise ParleyError(Codes.EMAIL_TAKEN)
    user.email = email
    user.updated_at = now()
    await flush_unique(db, Codes.EMAIL_TAKEN)
    outbox.enqueue(
        db,
        old,
        "Your Parley login email was changed",
        f"Hello {user.name},\n\n"
        f"The login email of your Parley account was changed from {old} to {email} at "
        f"{user.updated_at:%Y-%m-%d %H:%M} UTC. Sign-in and password resets now use the new address.\n\n"
        f"If you did not make this change, sign in with your password, change the email back, and "
        f"revoke your API keys and sessions.\n",
    )
    return user


async def soft_delete_user(db: AsyncSession, user: User) -> list[UUID]:
    """Mark the account deleted and revoke its sessions and keys; returns the revoked key ids."""
    user.deleted_at = now()
    await revoke_all_sessions(db, user.id)
    revoked = await db.scalars(
        update(ApiKey)
        .where(ApiKey.created_by_user_id == user.id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=now())
        .returning(ApiKey.id)
    )
    return list(revoked.all())

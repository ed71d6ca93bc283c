"""Import every table so Alembic and `Base.metadata` see the whole schema."""

from parley_auth.accounts.models import PasswordResetToken, User, UserSession
from parley_auth.apikeys.models import ApiKey
from parley_auth.db import Base
from parley_auth.mail.models import OutboxMail
from parley_auth.orgs.models import Membership, Org
from parley_auth.tokens.models import ClientToken

__all__ = [
    "ApiKey",
    "Base",
    "ClientToken",
    "Membership",
    "Org",
    "OutboxMail",
    "PasswordResetToken",
    "User",
    "UserSession",
]

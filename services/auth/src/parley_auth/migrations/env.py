"""Alembic environment: the `auth` schema with its own version table (parley_common.kit.migrations)."""

from parley_auth.db import SCHEMA
from parley_auth.models import Base
from parley_common.kit import migrations

migrations.run(SCHEMA, Base.metadata)

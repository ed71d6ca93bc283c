"""Alembic environment: the `catalog` schema with its own version table (parley_common.kit.migrations)."""

from parley_catalog.db import SCHEMA
from parley_catalog.models import Base
from parley_common.kit import migrations

migrations.run(SCHEMA, Base.metadata)

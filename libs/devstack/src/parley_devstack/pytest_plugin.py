"""pytest plugin: the session-scoped `infra` fixture (NATS, Redis, a fresh PostgreSQL database),
and `pg_tmp`, a directory for a PostgreSQL of a test's own.

Loaded for every pytest run through the `pytest11` entry point of parley-devstack, and also listed
in the root `tests/conftest.py`; see `parley_devstack.testing` for where the servers come from.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from parley_devstack import testing


@pytest.fixture(scope="session")
def infra() -> Iterator[testing.Infra]:
    with testing.infra() as value:
        yield value


@pytest.fixture
def pg_tmp() -> Iterator[Path]:
    """A temporary directory directly under the system temp dir, for PostgreSQL data.

    Not pytest's `tmp_path`: as root, PostgreSQL runs as another user that must traverse every
    parent directory, and each pytest session resets its `pytest-of-<user>` base to mode 0700,
    which would lock out a server started by a concurrent session.
    """
    path = Path(tempfile.mkdtemp(prefix="parley-pg-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


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

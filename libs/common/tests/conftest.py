"""Fixtures shared by parley_common's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from parley_devstack.servers import ValkeyServer


@pytest.fixture
def valkey(tmp_path: Path) -> Iterator[ValkeyServer]:
    """A Redis-compatible server of the test's own, nothing kept on disk."""
    server = ValkeyServer(tmp_path / "valkey", persistent=False, log_path=tmp_path / "valkey.log")
    server.start()
    server.wait_ready(30)
    yield server
    server.stop()

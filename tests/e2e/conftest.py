"""Fixtures every e2e module sees."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def stack_env() -> dict[str, str]:
    """Extra environment for the processes of test_realtime's `stack`; a module overrides this
    fixture to add some (test_octavus_sessions points the runtime at a fake Anthropic)."""
    return {}

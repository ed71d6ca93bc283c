"""Every provider a test opens is closed when the test ends, so no connection outlives it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .support import close_tracked


@pytest.fixture(autouse=True)
async def _close_providers() -> AsyncIterator[None]:
    yield
    await close_tracked()

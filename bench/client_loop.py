"""How the benches run their clients: on uvloop, as the services run theirs.

The load generator shares the stack's two cores, so every millisecond a client spends is one the
stack does not get: opening 6,000 sessions at 250/s the bench's own process took ~0.85 of a core
on asyncio's default loop (docs/performance.md, "The bench's clients"). A real client runs on a
machine of its own; the bench makes its clients cost what a lean client costs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


def run_client(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on a uvloop event loop."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)

"""Our own code never waits for a task it cancelled under `suppress(CancelledError)`.

`task.cancel(); with suppress(asyncio.CancelledError): await task` drops a cancel of the *caller*
that lands while it waits, and the caller runs on: a shutdown step written so could not be bounded
(kit/shutdown.py), a connection's close went on past its own cancel. `tasks.cancel_and_wait` waits
for the task without raising what it raised and lets the caller's cancel through.
"""

from __future__ import annotations

import ast

_SWALLOWED = {"CancelledError", "BaseException"}


def _names(node: ast.expr) -> set[str]:
    if isinstance(node, ast.Name):
        return {node.id}
    if isinstance(node, ast.Attribute):
        return {node.attr}
    if isinstance(node, ast.Starred):
        return _names(node.value)
    return set()


def suppressed_cancels(tree: ast.AST) -> list[int]:
    """Lines of a `suppress(...)` (`contextlib.suppress` under any spelling) given
    `CancelledError` or `BaseException`."""
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and "suppress" in _names(node.func)
        and any(_names(arg) & _SWALLOWED for arg in node.args)
    ]


def test_the_check_finds_each_spelling() -> None:
    source = (
        "import asyncio, contextlib\nfrom contextlib import suppress\n"
        "async def f(t):\n"
        "    with contextlib.suppress(asyncio.CancelledError):\n        await t\n"
        "    with suppress(ValueError, asyncio.CancelledError):\n        await t\n"
        "    with suppress(BaseException):\n        await t\n"
        "    with suppress(ValueError, KeyError):\n        await t\n"  # not a cancel
    )
    assert suppressed_cancels(ast.parse(source)) == [4, 6, 8]


def test_no_app_source_suppresses_a_cancel(app_sources: list[tuple[str, ast.Module]]) -> None:
    found = [f"{path}:{line}" for path, tree in app_sources for line in suppressed_cancels(tree)]
    assert found == []

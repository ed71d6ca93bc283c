"""Our own code waits with `asyncio.timeout`, never `asyncio.wait_for`.

On Python 3.11 `asyncio.wait_for` returns the awaited result, and drops the cancel, when a cancel
of the waiting task lands in the loop iteration in which the awaited thing completes (fixed in
3.12). A loop a service cancels at its stop then runs on, and the stop waits for it forever (the
auth outbox's worker hung a CI run so). `asyncio.timeout` lets that cancel through.
"""

from __future__ import annotations

import ast


def wait_for_calls(tree: ast.AST) -> list[int]:
    """Lines that use `asyncio.wait_for`: as `asyncio.wait_for` (the module under any name it is
    imported as) or imported by name (`from asyncio import wait_for`)."""
    modules = {"asyncio"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(a.asname or a.name for a in node.names if a.name == "asyncio")
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "wait_for":
            if isinstance(node.value, ast.Name) and node.value.id in modules:
                found.append(node.lineno)
        elif (
            isinstance(node, ast.ImportFrom)
            and (node.module or "").split(".")[0] == "asyncio"
            and any(a.name == "wait_for" for a in node.names)
        ):
            found.append(node.lineno)
    return found


def test_the_check_finds_each_spelling() -> None:
    source = (
        "import asyncio\nimport asyncio as aio\nfrom asyncio import wait_for\n"
        "async def f(c):\n    await asyncio.wait_for(c, 1)\n    await aio.wait_for(c, 1)\n"
        "    await c.wait_for(lambda: True)\n"  # an asyncio.Condition's wait_for is another thing
    )
    assert wait_for_calls(ast.parse(source)) == [3, 5, 6]


def test_no_app_source_uses_asyncio_wait_for(app_sources: list[tuple[str, ast.Module]]) -> None:
    found = [f"{path}:{line}" for path, tree in app_sources for line in wait_for_calls(tree)]
    assert found == []

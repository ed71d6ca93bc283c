"""The Octavus drain end to end: a rolling update of the runtime while a round streams through the
gateway (docs/operations.md, "Upgrading without dropping sessions").

test_octavus_sessions' stack and client, in a module of its own: the test replaces the stack's
workers, so no other test shares that stack.
"""

from __future__ import annotations

import asyncio
import signal

from tests.e2e.harness import (
    Stack,
    stack,  # noqa: F401 - the module-scoped fixture: this module gets a stack of its own
)

from .llm_fakes import FakeAnthropic, Pause, anthropic_text
from .test_octavus_sessions import (
    Client,
    client,  # noqa: F401 - the fixture
    fake,  # noqa: F401 - the fixture
    kinds,
    said,
    stack_env,  # noqa: F401 - the fixture
    text_of,
)


async def test_a_round_streaming_through_a_rolling_update_ends_whole(
    client: Client,  # noqa: F811 - the fixture imported above
    fake: FakeAnthropic,  # noqa: F811
    stack: Stack,  # noqa: F811
) -> None:
    """The runtime's workers get SIGTERM (a rolling update) while a round streams through the
    gateway: the worker running it leaves the Octavus subjects, lets the execution finish and only
    then exits, so the client reads the whole round to its `finish` and `[DONE]`; the next round
    is answered by a worker started after them."""
    agent_id = await client.create_agent()
    session_id = await client.create_session(agent_id, {"COMPANY": "Acme"})
    reply = anthropic_text(["Your order ", "ships ", "today."])
    # "Claude" pauses after its first words: the stop lands while the round streams.
    first_delta = next(i for i, s in enumerate(reply.steps) if isinstance(s, bytes) and b"text_delta" in s)
    reply.steps.insert(first_delta + 1, Pause(2.0))
    fake.requests.clear()
    fake.push(reply)
    trigger = {"triggerName": "user-message", "input": {"USER_MESSAGE": "Where is my order?"}}
    streaming = asyncio.create_task(client.trigger(session_id, trigger))
    async with asyncio.timeout(10):
        while not fake.requests:
            await asyncio.sleep(0.02)
    old = stack.alive_workers()
    assert len(old) == 2
    for worker in old:
        worker.signal(signal.SIGTERM)
    events = await streaming
    assert kinds(events)[-1] == "finish" and events[-1]["finishReason"] == "stop"
    assert text_of(events) == "Your order ships today."
    # Each exited by itself, none killed (uvicorn ends by re-raising the SIGTERM it handled).
    codes = await asyncio.gather(*(asyncio.to_thread(w.stop, 30) for w in old))
    assert all(code in (0, -signal.SIGTERM) for code in codes), codes

    fresh = stack.start_worker()
    await asyncio.to_thread(fresh.wait_ready, 60)
    fake.push(anthropic_text("It left the warehouse."))
    again = await client.trigger(
        session_id, {"triggerName": "user-message", "input": {"USER_MESSAGE": "And now?"}}
    )
    assert text_of(again) == "It left the warehouse."
    said_before = said(fake.requests[-1].json["messages"])
    assert said_before[-3:] == [
        {"role": "user", "content": "Where is my order?"},
        {"role": "assistant", "content": "Your order ships today."},  # the drained round was saved
        {"role": "user", "content": "And now?"},
    ]

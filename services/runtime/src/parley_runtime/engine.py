"""The one interface a runtime worker runs a turn through, whichever definition format the agent has.

Two engines implement it:

- the blueprint interpreter (`blueprint/interpreter.py`, Kivox graphs): a turn is the start of the
  flow (no input) or one user message; `sessions/runner.py` drives it for a realtime or chat
  session claimed from the `SESSIONS` work queue;
- the Octavus protocol executor (`octavus/executor.py`, `ProtocolEngine`): a turn is one trigger
  round (a trigger, or tool results continuing the paused one); `octavus/service.py` drives it for
  an agent-sessions trigger.

An engine is built for one turn with that turn's I/O (where its events go, the LLM), runs the turn
on the state it is given, changing it in place (the driver commits it, or drops it when the turn is
abandoned), and says how the turn ended. What differs stays behind this interface (the graph walk,
the block executor); what is the same is shared: the state store base (`state_store.py`), the LLM
(`llm_port.LLMPort`) and the work queue (`workqueue.py`). (The LLM engines of `llm/engines.py`
are another thing: the providers an answer comes from.)
"""

from __future__ import annotations

from typing import Protocol, TypeVar, runtime_checkable

StateT = TypeVar("StateT", contravariant=True)
InputT = TypeVar("InputT", contravariant=True)
EndT = TypeVar("EndT", covariant=True)


@runtime_checkable
class SessionEngine(Protocol[StateT, InputT, EndT]):
    async def turn(self, state: StateT, given: InputT) -> EndT:
        """Run one turn on `state` with what started it (`given`); how it ended."""
        ...

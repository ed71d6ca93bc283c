"""`engine.SessionEngine`, the one interface a turn runs through: the blueprint interpreter (with the
recording `TurnIO` of test_interpreter.py) and the Octavus protocol engine (with the scripted LLM
of test_octavus_executor.py) both implement it, and the same generic driver runs either."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

from parley_common.conversation_contract import ConversationEndReason
from parley_common.octavus import AgentBundle
from parley_common.octavus import events as ev
from parley_runtime.blueprint.graph import Graph
from parley_runtime.blueprint.interpreter import Interpreter, Outcome
from parley_runtime.engine import SessionEngine
from parley_runtime.llm_port import LLMPort
from parley_runtime.octavus.executor import Plan, ProtocolEngine
from parley_runtime.octavus.state import Session
from parley_runtime.sessions.state import SessionState

from .test_interpreter import World, blueprint, state
from .test_octavus_executor import Registry, ScriptedLLM, message, new_session, text

S = TypeVar("S")
In = TypeVar("In")
R = TypeVar("R")


async def drive(engine: SessionEngine[S, In, R], state: S, *inputs: In) -> list[R]:
    """What a driver does with an engine, whichever it is: one turn per input on the state."""
    assert isinstance(engine, SessionEngine)
    return [await engine.turn(state, given) for given in inputs]


async def test_the_blueprint_interpreter_is_an_engine() -> None:
    flow = blueprint(
        [
            ("s", "CONTROL.START", {"greeting": "Hi"}),
            ("d", "CONTROL.DIALOG", {"prompt": "Help.", "max_turns": 1}),
            ("e", "CONTROL.END", {"message": "Bye"}),
        ],
        [{"source": "s", "target": "d"}, {"source": "d", "target": "e"}],
    )
    world, work = World(), state()
    engine: SessionEngine[SessionState, str | None, Outcome] = Interpreter(
        Graph.of(flow), world, system_prompt=None, secrets={}, max_steps=10, history_limit=10
    )

    # The start of the flow (no input), then one user message.
    ends = await drive(engine, work, None, "hello")

    assert ends == [Outcome(), Outcome(closed=ConversationEndReason.FLOW_END)]
    said = [e.get("content") or e.get("chunk") for e in world.events if e["type"] != "flow_complete"]
    assert said == ["Hi", "You said: hello", "Bye"]
    assert [(h.role, h.content) for h in work.history] == [
        ("assistant", "Hi"), ("user", "hello"), ("assistant", "You said: hello"), ("assistant", "Bye"),
    ]  # fmt: skip


async def test_the_octavus_protocol_engine_is_an_engine(bundle: AgentBundle) -> None:
    events: list[dict[str, Any]] = []

    async def emit(event: BaseModel) -> None:
        events.append(event.model_dump(mode="json", by_alias=True, exclude_none=True))

    registry = Registry(ScriptedLLM(text("Hello there"), text("Sure thing")))
    session = new_session()
    engine: SessionEngine[Session, Plan, ev.FinishEvent | None] = ProtocolEngine(
        bundle=bundle, llm=LLMPort(registry), secrets={}, emit=emit
    )
    try:
        # Two trigger rounds on the session it keeps.
        ends = await drive(engine, session, message("hi"), message("and then?"))
    finally:
        await registry.aclose()

    assert [end is not None and end.finish_reason for end in ends] == ["stop", "stop"]
    assert [e["type"] for e in events].count("finish") == 0  # `finish` is the driver's, after saving
    deltas = "".join(e["delta"] for e in events if e["type"] == "text-delta")
    assert deltas == "Hello thereSure thing"
    assert [m.role for m in session.messages if m.visible] == ["user", "assistant", "user", "assistant"]

"""The blueprint interpreter, node by node, with the world replaced by a recording `TurnIO`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from parley_common.auth_contract import CredentialKind, Principal
from parley_common.blueprint import Blueprint
from parley_common.conversation_contract import ConversationEndReason, ConversationMessage
from parley_common.errors import ErrorCode
from parley_common.session_contract import MailRequest, ServerEvent, ServerTextFull, SessionStart
from parley_runtime.blueprint.graph import FlowError, Graph, Graphs
from parley_runtime.blueprint.interpreter import Interpreter, WebhookCall, WebhookResult
from parley_runtime.sessions.state import HistoryItem, SessionState


class World:
    """Records what a turn does; the LLM answers `You said: <last user message>`."""

    def __init__(self, webhook: WebhookResult | None = None) -> None:
        self.events: list[dict[str, Any]] = []
        self.prompts: list[str] = []
        self.calls: list[WebhookCall] = []
        self.mails: list[MailRequest] = []
        self.webhook_result = webhook or WebhookResult(ok=True, value={"ok": True})

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def emit(self, event: ServerEvent) -> None:
        self.events.append(event.model_dump(mode="json"))

    async def say(self, text: str) -> str:
        await self.emit(ServerTextFull(content=text))
        return text

    async def answer(self, system: str, history: list[HistoryItem]) -> str:
        self.prompts.append(system)
        text = f"You said: {history[-1].content}" if history else "Hello!"
        self.events.append({"type": "text_delta", "chunk": text})
        return text

    async def webhook(self, call: WebhookCall) -> WebhookResult:
        self.calls.append(call)
        return self.webhook_result

    async def mail(self, request: MailRequest) -> None:
        self.mails.append(request)

    async def error(self, code: ErrorCode, params: dict[str, Any]) -> None:
        self.events.append({"type": "error", "code": code.code, "params": params})


def blueprint(nodes: list[tuple[str, str, dict[str, Any]]], edges: list[dict[str, Any]]) -> Blueprint:
    return Blueprint.model_validate(
        {
            "entries": [
                {
                    "name": "main",
                    "workflow": {
                        "nodes": [{"id": i, "type": t, "data": d} for i, t, d in nodes],
                        "edges": edges,
                    },
                }
            ]
        }
    )


def state() -> SessionState:
    principal = Principal(kind=CredentialKind.SESSION, credential_id=uuid.uuid4(), user_id=uuid.uuid4())
    start = SessionStart(
        conversation_id=uuid.uuid4(),
        agent_id=str(uuid.uuid4()),
        principal=principal,
        started_at=datetime.now(UTC),
        connection_id="c",
        variables={"plan": "gold"},
    )
    return SessionState.new(start)


def run(bp: Blueprint, world: World, **kwargs: Any) -> Interpreter:
    options: dict[str, Any] = {"system_prompt": "Be kind.", "secrets": {"KEY": "k"}, "max_steps": 50}
    options.update(kwargs)
    return Interpreter(Graph.of(bp), world, history_limit=10, **options)


def transcript(s: SessionState) -> list[tuple[str, str]]:
    return [(e.role.value, e.content) for e in s.outbox if isinstance(e, ConversationMessage)]


async def test_dialog_turns_then_end() -> None:
    bp = blueprint(
        [
            ("s", "CONTROL.START", {"greeting": "Hi {{ plan }}", "variables": {"n": 0}}),
            (
                "d",
                "CONTROL.DIALOG",
                {"prompt": "Help with {{ plan }}.", "max_turns": 2, "save_reply_as": "r"},
            ),
            ("e", "CONTROL.END", {"message": "Bye {{ r }}"}),
        ],
        [{"source": "s", "target": "d"}, {"source": "d", "target": "e"}],
    )
    world, s = World(), state()
    interpreter = run(bp, world)
    assert (await interpreter.start(s)).closed is None
    assert (s.phase, s.node_id) == ("waiting", "d")
    assert world.events == [{"type": "text_full", "content": "Hi gold"}]

    assert (await interpreter.user_input(s, "one")).closed is None  # max_turns 2: still in d
    outcome = await interpreter.user_input(s, "two")
    assert outcome.closed is ConversationEndReason.FLOW_END
    assert world.prompts == ["Be kind.\n\nHelp with gold."] * 2
    assert world.events[-2:] == [{"type": "text_full", "content": "Bye two"}, {"type": "flow_complete"}]
    assert transcript(s) == [
        ("assistant", "Hi gold"),
        ("user", "one"),
        ("assistant", "You said: one"),
        ("user", "two"),
        ("assistant", "You said: two"),
        ("assistant", "Bye two"),
    ]
    assert [m.seq for m in s.outbox if isinstance(m, ConversationMessage)] == list(range(6))


async def test_exit_when_and_verbatim_message() -> None:
    bp = blueprint(
        [
            ("s", "CONTROL.START", {}),
            ("d", "CONTROL.DIALOG", {"message": "Say stop.", "exit_when": "last_user_message == 'stop'"}),
            ("e", "FUNCTION.TERMINATE", {"message": "Stopped.", "reason": "asked"}),
        ],
        [{"source": "s", "target": "d"}, {"source": "d", "target": "e"}],
    )
    world, s = World(), state()
    interpreter = run(bp, world)
    await interpreter.start(s)
    assert (await interpreter.user_input(s, "go on")).closed is None
    outcome = await interpreter.user_input(s, "stop")
    assert (outcome.closed, outcome.summary) == (ConversationEndReason.SCRIPT_TERMINATE, "asked")
    assert world.prompts == []  # a `message` DIALOG never asks the LLM
    assert [e["content"] for e in world.events if e["type"] == "text_full"] == ["Say stop.", "Stopped."]


async def test_eval_set_var_and_edge_conditions() -> None:
    bp = blueprint(
        [
            ("s", "CONTROL.START", {"variables": {"score": 3}}),
            ("set", "FUNCTION.SET_VAR", {"assignments": [{"name": "score", "value": "score * 2"}]}),
            ("big", "LOGICAL.EVAL", {"expression": "score > 5"}),
            ("route", "FUNCTION.SET_VAR", {"assignments": [{"name": "tier", "value": "'vip'"}]}),
            ("t", "FUNCTION.TRANSFER", {"agent_id": "sales", "reason": "tier {{ tier }}, score {{ score }}"}),
            ("e1", "CONTROL.END", {"message": "low"}),
            ("e2", "CONTROL.END", {"message": "conditional"}),
        ],
        [
            {"source": "s", "target": "set"},
            {"source": "set", "target": "big"},
            {"source": "big", "target": "route", "branch": "true"},
            {"source": "big", "target": "e1", "branch": "false"},
            {"source": "route", "target": "e2", "condition": "tier == 'basic'"},
            {"source": "route", "target": "t"},
        ],
    )
    world, s = World(), state()
    outcome = await run(bp, world).start(s)
    assert outcome.closed is ConversationEndReason.AGENT_TRANSFER
    assert world.events == [{"type": "transfer", "agent_id": "sales", "reason": "tier vip, score 6"}]


async def test_failed_expression_is_reported_and_counts_as_false() -> None:
    bp = blueprint(
        [
            ("s", "CONTROL.START", {"variables": {"name": "x"}}),
            ("check", "LOGICAL.EVAL", {"expression": "name > 3"}),
            ("yes", "CONTROL.END", {"message": "yes"}),
            ("no", "CONTROL.END", {"message": "no"}),
        ],
        [
            {"source": "s", "target": "check"},
            {"source": "check", "target": "yes", "branch": True},
            {"source": "check", "target": "no", "branch": False},
        ],
    )
    world = World()
    await run(bp, world).start(state())
    assert world.events[0]["type"] == "error"
    assert world.events[0]["code"] == "runtime.expression_failed"
    assert world.events[0]["params"]["node_id"] == "check"
    assert world.events[1] == {"type": "text_full", "content": "no"}


@pytest.mark.parametrize("with_error_branch", [True, False])
async def test_webhook_success_error_and_secrets(with_error_branch: bool) -> None:
    nodes: list[tuple[str, str, dict[str, Any]]] = [
        ("s", "CONTROL.START", {}),
        (
            "h",
            "FUNCTION.WEBHOOK",
            {
                "url": "https://crm.example/{{ plan }}",
                "headers": {"Authorization": "Bearer {{ secrets.KEY }}"},
                "body": {"plan": "{{ plan }}", "tags": ["{{ conversation_id }}", 1]},
                "save_as": "crm",
            },
        ),
        ("ok", "CONTROL.END", {"message": "ok {{ crm.ok }}"}),
        ("ko", "CONTROL.END", {"message": "ko"}),
    ]
    edges: list[dict[str, Any]] = [{"source": "s", "target": "h"}, {"source": "h", "target": "ok"}]
    if with_error_branch:
        edges = [
            {"source": "s", "target": "h"},
            {"source": "h", "target": "ok", "branch": "success"},
            {"source": "h", "target": "ko", "branch": "error"},
        ]
    world, s = World(), state()
    await run(bp := blueprint(nodes, edges), world).start(s)
    (call,) = world.calls
    assert (call.url, call.method, call.headers) == (
        "https://crm.example/gold",
        "POST",
        {"Authorization": "Bearer k"},
    )
    assert call.body == {"plan": "gold", "tags": [str(s.conversation_id), 1]}
    assert world.events == [{"type": "text_full", "content": "ok True"}, {"type": "flow_complete"}]

    failing, s = World(WebhookResult(ok=False, value="down", error="HTTP 503")), state()
    await run(bp, failing).start(s)
    assert s.variables["crm"] == "down"
    if with_error_branch:
        assert failing.events[0] == {"type": "text_full", "content": "ko"}
    else:
        assert failing.events[0]["code"] == "runtime.webhook_failed"
        assert failing.events[1] == {"type": "text_full", "content": "ok "}


async def test_email_notify_ids_are_stable_across_a_replay() -> None:
    bp = blueprint(
        [
            ("s", "CONTROL.START", {}),
            (
                "m",
                "FUNCTION.EMAIL_NOTIFY",
                {"to": "ops@example.com", "subject": "New {{ plan }}", "body": "b"},
            ),
            ("e", "CONTROL.END", {}),
        ],
        [{"source": "s", "target": "m"}, {"source": "m", "target": "e"}],
    )
    first, second = World(), World()
    s = state()
    replay = s.model_copy(deep=True)
    await run(bp, first).start(s)
    await run(bp, second).start(replay)
    assert first.mails == second.mails
    assert (first.mails[0].to, first.mails[0].subject) == ("ops@example.com", "New gold")


@pytest.mark.parametrize(
    ("nodes", "edges", "message"),
    [
        ([("s", "CONTROL.START", {})], [], "no edge to follow"),
        (
            [("s", "CONTROL.START", {}), ("x", "CUSTOM.THING", {})],
            [{"source": "s", "target": "x"}],
            "unknown type",
        ),
        (
            [("s", "CONTROL.START", {}), ("v", "FUNCTION.SET_VAR", {"assignments": []})],
            [{"source": "s", "target": "v"}],
            "data.assignments",
        ),
        ([("s", "CONTROL.START", {})], [{"source": "s", "target": "gone"}], "no node 'gone'"),
        (
            [
                ("s", "CONTROL.START", {}),
                ("a", "FUNCTION.SET_VAR", {"assignments": [{"name": "x", "value": "1"}]}),
            ],
            [{"source": "s", "target": "a"}, {"source": "a", "target": "s"}],
            "more than 50 steps",
        ),
    ],
)
async def test_broken_flows_raise(nodes: Any, edges: Any, message: str) -> None:
    with pytest.raises(FlowError, match=message):
        await run(blueprint(nodes, edges), World()).start(state())


def test_graph_needs_one_start() -> None:
    with pytest.raises(FlowError, match="exactly one"):
        Graph.of(blueprint([("e", "CONTROL.END", {})], []))
    with pytest.raises(FlowError, match="no blueprint entry"):
        Graph.of(None)


async def test_a_nodes_data_is_validated_once_per_graph() -> None:
    """A session's turns, and the sessions of one agent version, share the validated node data."""
    flow = blueprint(
        [("s", "CONTROL.START", {"greeting": "Hi"}), ("d", "CONTROL.DIALOG", {"max_turns": 10})],
        [{"source": "s", "target": "d"}],
    )
    graph = Graph.of(flow)
    dialog = graph.node("d")
    assert graph.data(dialog) is graph.data(dialog)
    s, world = state(), World()
    interpreter = Interpreter(graph, world, system_prompt=None, secrets={}, max_steps=10, history_limit=10)
    await interpreter.start(s)
    before = graph.data(dialog)
    await interpreter.user_input(s, "one")
    await interpreter.user_input(s, "two")
    assert graph.data(dialog) is before
    assert transcript(s)[-2:] == [("user", "two"), ("assistant", "You said: two")]


def test_a_broken_nodes_data_is_not_kept() -> None:
    graph = Graph.of(blueprint([("s", "CONTROL.START", {"greeting": 3})], []))
    for _ in range(2):  # asked again, it is validated again (and fails again)
        with pytest.raises(FlowError, match=r"node 's': data\.greeting"):
            graph.data(graph.node("s"))


def test_graphs_are_made_once_per_agent_version_and_only_the_last_is_kept() -> None:
    graphs = Graphs(limit=2)
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    one, two = blueprint([("s", "CONTROL.START", {})], []), blueprint([("s", "CONTROL.START", {})], [])
    first = graphs.of(a, one)
    assert graphs.of(a, one) is first
    second = graphs.of(a, two)  # the agent's next version (an equal blueprint is another object)
    assert second is not first and graphs.of(a, two) is second
    assert graphs.of(a, one) is not first  # the old version was not kept: made again
    other = graphs.of(b, one)  # another agent's graph is its own
    assert graphs.of(b, one) is other and len(graphs._graphs) == 2
    graphs.of(c, one)  # past the limit of agents: all dropped
    assert graphs.of(b, one) is not other
    with pytest.raises(FlowError, match="no blueprint entry"):
        graphs.of(a, None)

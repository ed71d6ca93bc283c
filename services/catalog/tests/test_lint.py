"""Blueprint lint: a corpus of broken graphs, each with the exact findings and where they are,
then the HTTP side (lint endpoint, lint on save of a live agent, going live, transfer targets)."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from parley_catalog.lint import rules
from parley_catalog.lint import service as lint_service
from parley_catalog.lint.rules import lint
from parley_common.blueprint import Blueprint

from .support import World, assert_error, blueprint, edge, node, valid_blueprint

START = "CONTROL.START"
DIALOG = "CONTROL.DIALOG"
END = "CONTROL.END"
EVAL = "LOGICAL.EVAL"
SET_VAR = "FUNCTION.SET_VAR"
WEBHOOK = "FUNCTION.WEBHOOK"
EMAIL = "FUNCTION.EMAIL_NOTIFY"
TRANSFER = "FUNCTION.TRANSFER"
TERMINATE = "FUNCTION.TERMINATE"


def findings(bp: dict[str, Any]) -> set[tuple[str, str | None, str | None]]:
    """(code, node id, edge id) of every finding."""
    return {(d.code, d.node_id, d.edge_id) for d in lint(Blueprint.model_validate(bp)).diagnostics}


def every_type_graph() -> dict[str, Any]:
    """One node of every type, all wired up correctly."""
    return blueprint(
        [
            node("s", START, greeting="Hi {{ name }}", variables={"tries": 0}),
            node(
                "d",
                DIALOG,
                prompt="Ask for the order id",
                max_turns=3,
                exit_when="order_id",
                save_reply_as="reply",
            ),
            node("v", SET_VAR, assignments=[{"name": "tries", "value": "tries + 1"}]),
            node("e", EVAL, expression="tries > 2"),
            node(
                "w",
                WEBHOOK,
                url="https://api.example.com/orders/{{ order_id }}",
                method="GET",
                headers={"Authorization": "Bearer {{ secrets.API_KEY }}"},
                body={"id": "{{ order_id }}", "nested": ["{{ reply }}"]},
                save_as="order",
            ),
            node("m", EMAIL, to="ops@example.com", subject="Order {{ order_id }}", body="{{ order }}"),
            node("x", TERMINATE, message="Too many tries", reason="limit"),
            node("end", END, message="Done"),
        ],
        [
            edge("s", "d"),
            edge("d", "v"),
            edge("v", "e"),
            edge("e", "x", branch="true"),
            edge("e", "w", branch="false"),
            edge("w", "m", branch="success", condition="order.status == 'late'"),
            edge("w", "end", branch="success"),
            edge("w", "x", branch="error"),
            edge("m", "end"),
        ],
    )


def test_valid_graphs_have_no_findings() -> None:
    assert findings(valid_blueprint()) == set()
    assert findings(every_type_graph()) == set()
    # Loops are fine as long as there is a way out.
    looping = blueprint(
        [
            node("s", START),
            node("d", DIALOG, prompt="p"),
            node("e", EVAL, expression="done"),
            node("end", END),
        ],
        [edge("s", "d"), edge("d", "e"), edge("e", "d", branch="false"), edge("e", "end", branch="true")],
    )
    assert findings(looping) == set()
    # Branch values as the runtime reads them (booleans, any case); a branch-less edge is the
    # fallback for every outcome; `branch` on a node that does not branch is ignored.
    lenient = blueprint(
        [
            node("s", START),
            node("e", EVAL, expression="x"),
            node("w", WEBHOOK, url="https://example.com"),
            node("f", EVAL, expression="y"),
            node("end", END),
        ],
        [
            edge("s", "e", branch="anything"),
            edge("e", "w", branch=True),
            edge("e", "end", branch=" FALSE "),
            edge("w", "f", branch="success"),
            edge("w", "end"),
            edge("f", "end", condition="   "),
        ],
    )
    assert findings(lenient) == set()


CORPUS: list[tuple[str, dict[str, Any], set[tuple[str, str | None, str | None]]]] = [
    ("empty blueprint", {"version": "1", "entries": []}, {("blueprint.no_entries", None, None)}),
    ("no start", blueprint([node("end", END)], []), {("graph.no_start", None, None)}),
    (
        "two starts",
        blueprint(
            [node("a", START), node("b", START), node("end", END)], [edge("a", "end"), edge("b", "end")]
        ),
        {("graph.multiple_starts", "b", None)},
    ),
    (
        "unreachable node",
        blueprint([node("s", START), node("end", END), node("lost", DIALOG, prompt="p")], [edge("s", "end")]),
        {("node.unreachable", "lost", None)},
    ),
    (
        "unreachable island with its own edges",
        blueprint(
            [node("s", START), node("end", END), node("i1", DIALOG, prompt="p"), node("i2", END)],
            [edge("s", "end"), edge("i1", "i2")],
        ),
        {("node.unreachable", "i1", None), ("node.unreachable", "i2", None)},
    ),
    (
        "dangling edges",
        blueprint(
            [node("s", START), node("end", END)],
            [edge("s", "end"), edge("s", "ghost", id="e-ghost"), edge("nowhere", "end")],
        ),
        {("edge.dangling", None, "e-ghost"), ("edge.dangling", None, "nowhere->end")},
    ),
    (
        "no path to an end",
        blueprint([node("s", START), node("d", DIALOG, prompt="p")], [edge("s", "d")]),
        {("node.no_terminal_path", "s", None), ("node.no_terminal_path", "d", None)},
    ),
    (
        "a dead-end branch",
        blueprint(
            [
                node("s", START),
                node("d", DIALOG, prompt="p"),
                node("stuck", DIALOG, prompt="q"),
                node("end", END),
            ],
            [edge("s", "d"), edge("d", "end"), edge("d", "stuck")],
        ),
        {("node.no_terminal_path", "stuck", None)},
    ),
    (
        "unknown node type",
        blueprint(
            [node("s", START), node("n", "CONTROL.TELEPORT"), node("end", END)],
            [edge("s", "n"), edge("n", "end")],
        ),
        {("node.unknown_type", "n", None)},
    ),
    (
        "missing required data",
        blueprint(
            [node("s", START), node("e", EVAL), node("w", WEBHOOK), node("end", END)],
            [
                edge("s", "e"),
                edge("e", "w", branch="true"),
                edge("e", "end", branch="false"),
                edge("w", "end"),
            ],
        ),
        {("node.invalid_data", "e", None), ("node.invalid_data", "w", None)},
    ),
    (
        "wrong data types and unknown fields",
        blueprint(
            [
                node("s", START, greeting=5),
                node("d", DIALOG, prompt="p", max_turns=0, colour="red"),
                node("v", SET_VAR, assignments=[]),
                node("end", END),
            ],
            [edge("s", "d"), edge("d", "v"), edge("v", "end")],
        ),
        {
            ("node.invalid_data", "s", None),
            ("node.invalid_data", "d", None),
            ("node.invalid_data", "v", None),
        },
    ),
    (
        "invalid templates",
        blueprint(
            [
                node("s", START, greeting="Hi {{ name"),
                node("m", EMAIL, to="a@b.c", subject="{% if %}", body="ok"),
                node("w", WEBHOOK, url="https://x", body={"deep": ["{{ oops }"]}),
                node("end", END),
            ],
            [edge("s", "m"), edge("m", "w"), edge("w", "end")],
        ),
        {
            ("node.invalid_template", "s", None),
            ("node.invalid_template", "m", None),
            ("node.invalid_template", "w", None),
        },
    ),
    (
        "invalid expressions",
        blueprint(
            [
                node("s", START),
                node("e", EVAL, expression="tries >"),
                node("v", SET_VAR, assignments=[{"name": "x", "value": "1 +* 2"}]),
                node("end", END),
            ],
            [
                edge("s", "e"),
                edge("e", "v", branch="true"),
                edge("e", "end", branch="false"),
                edge("v", "end"),
            ],
        ),
        {("node.invalid_expression", "e", None), ("node.invalid_expression", "v", None)},
    ),
    (
        "invalid edge condition",
        blueprint(
            [node("s", START), node("end", END)],
            [edge("s", "end", id="c1", condition="a b"), edge("s", "end", condition=3)],
        ),
        {("edge.invalid_condition", None, "c1"), ("edge.invalid_condition", None, "s->end")},
    ),
    (
        "branch outcomes without an edge, and unknown branch values",
        blueprint(
            [
                node("s", START),
                node("e", EVAL, expression="x"),
                node("w", WEBHOOK, url="https://example.com"),
                node("end", END),
            ],
            [
                edge("s", "e"),
                edge("e", "w", branch="true"),
                edge("e", "end", id="maybe", branch="maybe"),
                edge("w", "end", branch="success"),
            ],
        ),
        {
            ("edge.invalid_branch", None, "maybe"),
            ("node.missing_branch", "e", None),
            ("node.missing_branch", "w", None),
        },
    ),
    (
        "a webhook leading nowhere is one problem, not three",
        blueprint([node("s", START), node("w", WEBHOOK, url="https://example.com")], [edge("s", "w")]),
        {("node.no_terminal_path", "s", None), ("node.no_terminal_path", "w", None)},
    ),
    (
        "edges leaving terminal nodes",
        blueprint(
            [node("s", START), node("t", TERMINATE), node("end", END)],
            [edge("s", "t"), edge("t", "end", id="after-terminate"), edge("end", "s", id="after-end")],
        ),
        {
            ("edge.from_terminal", None, "after-terminate"),
            ("edge.from_terminal", None, "after-end"),
            ("node.unreachable", "end", None),  # only an edge from a terminal node leads there
        },
    ),
    (
        "duplicate node ids",
        blueprint([node("s", START), node("s", END), node("end", END)], [edge("s", "end")]),
        {("node.duplicate_id", "s", None)},
    ),
    (
        "transfer with a malformed agent id is still reported by the database step",
        blueprint([node("s", START), node("t", TRANSFER)], [edge("s", "t")]),
        {("node.invalid_data", "t", None)},
    ),
]


@pytest.mark.parametrize(("graph", "expected"), [(g, e) for _, g, e in CORPUS], ids=[n for n, _, _ in CORPUS])
def test_broken_graph_corpus(
    graph: dict[str, Any], expected: set[tuple[str, str | None, str | None]]
) -> None:
    assert findings(graph) == expected


def test_every_entry_is_linted_and_named() -> None:
    good = valid_blueprint()["entries"][0]
    bad = {"name": "fallback", "workflow": {"nodes": [node("x", END)], "edges": []}}
    result = lint(Blueprint.model_validate({"entries": [good, bad, good]}))
    rendered = [d.render() for d in result.diagnostics]
    assert rendered == [f"entry 'fallback': no {START} node", "entry 'main': another entry has the same name"]


def test_messages_name_the_field() -> None:
    result = lint(
        Blueprint.model_validate(
            blueprint(
                [node("s", START), node("e", EVAL), node("end", END)], [edge("s", "e"), edge("e", "end")]
            )
        )
    )
    messages = [d.render() for d in result.diagnostics if d.code == "node.invalid_data"]
    assert messages == ["entry 'main', node 'e': data.expression: Field required"]


# --- over HTTP --------------------------------------------------------------------------------


async def test_lint_endpoint(world: World) -> None:
    alice = await world.user()
    agent = await alice.create_agent()
    path = f"/agents/{agent['id']}/lint"
    saved = (await alice.catalog.post(path, json={})).json()
    assert saved["errors"] == ["the blueprint has no entries"]
    assert saved["diagnostics"] == [
        {"code": "blueprint.no_entries", "message": "the blueprint has no entries"}
    ]
    assert (await alice.catalog.post(path)).json()["errors"] == saved["errors"]  # no body at all
    as_null = await alice.catalog.post(path, content=b"null", headers={"content-type": "application/json"})
    assert as_null.status_code == 200 and as_null.json()["errors"] == saved["errors"]
    clean = await alice.catalog.post(path, json={"blueprint": valid_blueprint()})
    assert clean.status_code == 200 and clean.json() == {"errors": [], "diagnostics": []}
    broken = blueprint(
        [node("s", START), node("d", DIALOG, prompt="{{ x")], [edge("s", "d"), edge("d", "gone")]
    )
    found = (await alice.catalog.post(path, json={"blueprint": broken})).json()
    assert {(d["code"], d.get("node_id"), d.get("edge_id")) for d in found["diagnostics"]} == {
        ("node.invalid_template", "d", None),
        ("edge.dangling", None, "d->gone"),
        ("node.no_terminal_path", "s", None),
        ("node.no_terminal_path", "d", None),
    }
    assert len(found["errors"]) == 4
    assert all(
        e.startswith("entry 'main', node '") or e.startswith("entry 'main', edge '") for e in found["errors"]
    )
    # The saved blueprint was not changed by linting another one.
    assert (await alice.catalog.get(f"/agents/{agent['id']}")).json()["blueprint"]["entries"] == []


async def test_transfer_targets_must_exist_for_the_same_owner(world: World) -> None:
    alice, bob = await world.user("alice"), await world.user("bob")
    target = await alice.create_agent()
    deleted = await alice.create_agent()
    await alice.catalog.delete(f"/agents/{deleted['id']}")
    foreign = await bob.create_agent()
    agent = await alice.create_agent()

    def transferring(agent_id: str) -> dict[str, Any]:
        return blueprint([node("s", START), node("t", TRANSFER, agent_id=agent_id)], [edge("s", "t")])

    async def codes(agent_id: str) -> list[tuple[str, str | None]]:
        resp = await alice.catalog.post(
            f"/agents/{agent['id']}/lint", json={"blueprint": transferring(agent_id)}
        )
        return [(d["code"], d.get("node_id")) for d in resp.json()["diagnostics"]]

    assert await codes(target["id"]) == []
    assert await codes(agent["id"]) == []  # to itself: exists
    for missing in (deleted["id"], foreign["id"], str(uuid.uuid4()), "support-bot"):
        assert await codes(missing) == [("node.unknown_agent", "t")], missing


async def test_going_live_and_saving_live_require_a_clean_lint(world: World) -> None:
    alice = await world.user()
    agent = await alice.create_agent()
    path = f"/agents/{agent['id']}"
    err = assert_error(
        await alice.catalog.patch(f"{path}/status", json={"status": "live"}), 422, "agent.lint_failed"
    )
    assert err["params"]["errors"] == ["the blueprint has no entries"] and err["params"]["count"] == 1
    # A draft may hold a broken blueprint.
    broken = blueprint([node("s", START)], [])
    assert (await alice.catalog.patch(path, json={"blueprint": broken})).status_code == 200
    assert_error(
        await alice.catalog.patch(f"{path}/status", json={"status": "live"}), 422, "agent.lint_failed"
    )
    assert (await alice.catalog.patch(path, json={"blueprint": valid_blueprint()})).status_code == 200
    assert (await alice.catalog.patch(f"{path}/status", json={"status": "live"})).status_code == 200
    # Saving a live agent lints the new blueprint; a failure changes nothing.
    before = (await alice.catalog.get(path)).json()
    err = assert_error(await alice.catalog.patch(path, json={"blueprint": broken}), 422, "agent.lint_failed")
    assert err["params"]["errors"] == [
        "entry 'main', node 's': no path from here to an END, TERMINATE or TRANSFER node"
        " (the session would stall)"
    ]
    assert (await alice.catalog.get(path)).json() == before
    # Other fields of a live agent save without a blueprint lint.
    assert (await alice.catalog.patch(path, json={"config": {"name": "still live"}})).status_code == 200


# --- docs/blueprints.md stays true -----------------------------------------------------------

DOC = Path(__file__).resolve().parents[3] / "docs" / "blueprints.md"


def test_documented_example_lints_clean() -> None:
    example = re.search(r"## Example.*?```json\n(.*?)```", DOC.read_text(), re.S)
    assert example is not None
    assert findings(json.loads(example.group(1))) == set()


def test_every_lint_code_is_documented() -> None:
    source = Path(rules.__file__).read_text() + Path(lint_service.__file__).read_text()
    emitted = set(re.findall(r'(?:report|Diagnostic)\(\s*"([a-z_]+\.[a-z_]+)"', source))
    emitted |= {"node.invalid_template", "node.invalid_expression"}  # built as f"node.invalid_{kind}"
    documented = set(re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \|", DOC.read_text(), re.M))
    assert emitted == documented

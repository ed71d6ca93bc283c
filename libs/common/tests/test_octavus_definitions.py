"""Workers, settings.json, limits, the CLI's wire shapes, and loading definitions for the runtime."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from parley_common.octavus import (
    AddMessage,
    AgentDefinition,
    DefinitionError,
    NextMessage,
    ToolCall,
    ValidationResult,
    load_definition,
    read_agent_dir,
    validate_agent,
    validate_definition,
)

CORPUS = Path(__file__).parent / "octavus_corpus" / "valid"
WORKER = {"slug": "titles", "name": "Titles", "format": "worker"}
INTERACTIVE = {"slug": "demo", "name": "Demo", "format": "interactive"}
PROMPTS = {"system": "Write titles.", "user-message": "Title please."}

Found = tuple[str, str, str, int | None]


def found(protocol: str, settings: Any, prompts: dict[str, str] = PROMPTS) -> list[Found]:
    return [(i.severity, i.path, i.message, i.line) for i in validate_definition(protocol, settings, prompts)]


W = textwrap.dedent(
    """\
    variables:
      TITLE: { type: string }
    steps:
      Start:
        block: start-thread
        thread: title-gen
        model: openai/gpt-4o
        system: system
      Ask:
        block: add-message
        thread: title-gen
        role: user
        prompt: user-message
      Generate:
        block: next-message
        thread: title-gen
        output: TITLE
    output: TITLE
    """
)
START = (
    "  Start:\n    block: start-thread\n    thread: title-gen\n    model: openai/gpt-4o\n    system: system\n"
)
SHAPE = "workers run `steps` (settings.format is worker)"


def test_worker_base_is_clean() -> None:
    assert found(W, WORKER) == []


@pytest.mark.parametrize(
    ("protocol", "expected"),
    [
        (
            W + "triggers: {}\nagent:\n  model: openai/gpt-4o\n  system: system\nhandlers: {}\n",
            [
                ("error", "triggers", f"`triggers` is not used by worker agents: {SHAPE}", 19),
                ("error", "handlers", f"`handlers` is not used by worker agents: {SHAPE}", 23),
                ("error", "agent", f"`agent` is not used by worker agents: {SHAPE}", 20),
            ],
        ),
        (
            W.replace("    thread: title-gen\n    output: TITLE\n", "    output: TITLE\n"),
            [
                (
                    "error",
                    "steps[2]",
                    "workers have no main thread: set `thread` to one opened by a start-thread step",
                    14,
                )
            ],
        ),
        (
            W.replace("    model: openai/gpt-4o\n    system: system\n", ""),
            [
                (
                    "error",
                    "steps[0]",
                    "missing required key `model` (workers have no `agent` to inherit it from)",
                    4,
                ),
                (
                    "error",
                    "steps[0]",
                    "missing required key `system` (workers have no `agent` to inherit it from)",
                    4,
                ),
            ],
        ),
        (
            W.replace("output: TITLE\n", "output: RESULT\n").replace(
                "    output: RESULT\n", "    output: TITLE\n"
            ),
            [("error", "output", "output `RESULT` is not declared in `variables`", 18)],
        ),
        ("variables:\n  TITLE: { type: string }\n", [("error", "steps", "a worker needs `steps`", None)]),
        (
            W.replace(START, "").replace(
                "\noutput: TITLE", "\n" + START.replace("Start", "Late start") + "output: TITLE"
            ),
            [
                ("error", "steps[0].thread", "thread `title-gen` is used before its start-thread block", 6),
                ("error", "steps[1].thread", "thread `title-gen` is used before its start-thread block", 11),
            ],
        ),
    ],
    ids=["handlers", "main-thread", "start-thread-needs-model", "output", "no-steps", "thread-before-start"],
)
def test_broken_worker(protocol: str, expected: list[Found]) -> None:
    assert found(protocol, WORKER) == expected


HEAD = "triggers:\n  ping: {}\nagent:\n  model: openai/gpt-4o\n  system: system\nhandlers:\n  ping: {}\n"


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (
            {"slug": "demo", "name": "Demo", "format": "generation"},
            [
                (
                    "error",
                    "settings.format",
                    "must be 'interactive' or 'worker' (got 'generation') "
                    "(docs 0.0.5 say `generation`; Octavus 2.0.0 uses `worker`)",
                    None,
                )
            ],
        ),
        (
            {"slug": "My Agent", "name": "Demo", "format": "interactive"},
            [
                (
                    "error",
                    "settings.slug",
                    "must be lowercase letters, digits and dashes (got 'My Agent')",
                    None,
                )
            ],
        ),
        (
            {"slug": "demo", "format": "interactive", "version": 2},
            [
                ("error", "settings.name", "missing required key `name`", None),
                ("error", "settings.version", "unknown key `version`", None),
            ],
        ),
        (
            '{"slug": "demo",\n "name": "Demo"\n "format": "interactive"}',
            [("error", "settings", "invalid JSON: Expecting ',' delimiter", 3)],
        ),
        ('["demo"]', [("error", "settings", "settings.json must be a JSON object", None)]),
    ],
    ids=["generation", "slug", "name-and-extra-key", "json-syntax", "not-an-object"],
)
def test_broken_settings(settings: Any, expected: list[Found]) -> None:
    # The protocol is fine; only settings.json (plus an empty-handler warning) is reported.
    assert found(HEAD, settings)[:-1] == expected


def test_alias_bomb_and_size_are_capped() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(8)
    )
    assert found(bomb, INTERACTIVE) == [
        ("error", "protocol", "protocol.yaml expands to more than 50000 nodes (aliases?)", None)
    ]
    huge = "input:\n" + "".join(f"  V{i}: {{ type: string, description: {'x' * 60} }}\n" for i in range(8000))
    assert found(huge, INTERACTIVE) == [("error", "protocol", "protocol.yaml exceeds 524288 bytes", None)]


def test_null_sections_and_empty_trigger_are_accepted() -> None:
    protocol = "input:\nvariables:\ntriggers:\n  ping:\nagent:\n  model: openai/gpt-4o\n  system: system\n"
    protocol += "handlers:\n  ping:\n    Reply:\n      block: next-message\n"
    assert found(protocol, INTERACTIVE) == []


def test_type_and_block_keys_are_the_same_block() -> None:
    one = "triggers: {ping: {}}\nagent: {model: openai/gpt-4o, system: system}\nhandlers:\n  ping:\n"
    a, _ = load_definition(one + "    Reply: {type: next-message}\n", INTERACTIVE, PROMPTS)
    b, _ = load_definition(one + "    Reply: {block: next-message}\n", INTERACTIVE, PROMPTS)
    assert a.protocol == b.protocol
    assert isinstance(a.protocol.handlers["ping"]["Reply"], NextMessage)


def test_load_definition_types_blocks_and_defaults() -> None:
    definition = read_agent_dir(CORPUS / "support-escalation")
    bundle, warnings = load_definition(
        definition.protocol, definition.settings.model_dump(), definition.prompt_map()
    )
    assert warnings == []
    protocol = bundle.protocol
    assert protocol.agent is not None and protocol.agent.max_steps == 5 and protocol.agent.thinking == "low"
    blocks = protocol.handlers["request-human"]
    assert next(iter(blocks)) == "Serialize conversation"  # handler order is YAML order
    add = blocks["Add summarize request"]
    assert isinstance(add, AddMessage) and add.input == [{"CONVERSATION": "CONVERSATION_TEXT"}]
    assert add.effective_display == "hidden" and blocks["Respond"].effective_display == "stream"
    tool = blocks["Create ticket"]
    assert isinstance(tool, ToolCall) and tool.input == {"summary": "SUMMARY", "priority": "medium"}
    assert tool.output == "TICKET" and tool.effective_display == "description"
    assert protocol.tools["create-support-ticket"].parameters["email"].optional
    assert bundle.prompts["summarize-request"].startswith("Summarise")


def test_load_definition_raises_with_every_issue() -> None:
    with pytest.raises(DefinitionError) as caught:
        load_definition("agent: {model: gpt4, system: nope}\n", INTERACTIVE, {})
    assert [i.path for i in caught.value.issues] == ["agent.model", "agent.system"]
    assert str(caught.value).startswith("error: agent.model:1: model must be `provider/model-id`")


def test_validation_result_is_the_cli_body() -> None:
    issues = validate_definition(
        "triggers: {ping: {}}\nagent: {model: openai/gpt-4o, system: system}\n"
        "handlers:\n  ping: {}\n  pong: {}\n",
        INTERACTIVE,
        PROMPTS,
    )
    body = ValidationResult.from_issues(issues).model_dump()
    assert body == {
        "valid": False,
        "errors": [
            {"message": "handler for undeclared trigger `pong` (did you mean `ping`?) (line 5)",
             "path": "handlers.pong", "severity": "error"},
        ],
        "warnings": [
            {"message": "handler `ping` has no blocks (line 4)", "path": "handlers.ping",
             "severity": "warning"},
            {"message": "handler `pong` has no blocks (line 5)", "path": "handlers.pong",
             "severity": "warning"},
        ],
    }  # fmt: skip
    assert ValidationResult.from_issues([]).model_dump() == {"valid": True, "errors": [], "warnings": []}


def test_cli_request_body_round_trip(tmp_path: Path) -> None:
    # What `octavus validate|sync` POSTs: {settings, protocol, prompts: [{name, content}]}.
    definition = read_agent_dir(CORPUS / "cli-readme")
    body = json.loads(definition.model_dump_json(exclude_none=True))
    assert sorted(body) == ["prompts", "protocol", "settings"]
    assert [p["name"] for p in body["prompts"]] == ["system", "user-message"]
    assert validate_agent(AgentDefinition.model_validate(body)) == []
    # prompts/ is optional, non-.md files are ignored, and a missing folder is refused.
    (tmp_path / "settings.json").write_text(json.dumps(INTERACTIVE))
    (tmp_path / "protocol.yaml").write_text("agent: {model: openai/gpt-4o, system: system}\n")
    assert read_agent_dir(tmp_path).prompts == []
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "system.md").write_text("Hi")
    (tmp_path / "prompts" / "notes.txt").write_text("ignored")
    assert [p.name for p in read_agent_dir(tmp_path).prompts] == ["system"]
    with pytest.raises(FileNotFoundError):
        read_agent_dir(tmp_path / "missing")

# One piece (668 lines): a table of broken Octavus definitions, one case each, with the exact
# issues expected; a catalogue read as one list.
"""Broken definitions: each case asserts the exact issues (severity, path, message, line)."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from parley_common.octavus import validate_definition

INTERACTIVE = {"slug": "demo", "name": "Demo", "format": "interactive"}
WORKER = {"slug": "demo", "name": "Demo", "format": "worker"}
PROMPTS = {"system": "You are helpful.", "user-message": "{{USER_MESSAGE}}"}

Expected = tuple[str, str, str, int | None]


def y(source: str) -> str:
    return textwrap.dedent(source).lstrip("\n")


# The shared start of most cases: one trigger, an agent, a handler (lines 1-15).
HEAD = """
# a minimal interactive agent
triggers:
  user-message:
    input:
      USER_MESSAGE: { type: string }
agent:
  model: openai/gpt-4o
  system: system
handlers:
  user-message:
    Add user message:
      block: add-message
      role: user
      prompt: user-message
      input: [USER_MESSAGE]
"""


def agent_with(line: str) -> str:
    """HEAD with `line` added to its agent section, as line 9."""
    return y(HEAD).replace("  system: system\n", f"  system: system\n  {line}\n")


def err(path: str, message: str, line: int | None) -> Expected:
    return ("error", path, message, line)


def warn(path: str, message: str, line: int | None) -> Expected:
    return ("warning", path, message, line)


def issues(protocol: str, prompts: dict[str, str] | None = None, settings: Any = None) -> list[Expected]:
    found = validate_definition(
        protocol, INTERACTIVE if settings is None else settings, PROMPTS if prompts is None else prompts
    )
    return [(i.severity, i.path, i.message, i.line) for i in found]


CASES: list[tuple[str, str, list[Expected]]] = [
    (
        "yaml-syntax-error",
        y(HEAD) + "    Respond: {block: next-message\n",
        [err("protocol", "YAML syntax error: expected ',' or '}', but got '<stream end>'", 17)],
    ),
    (
        "yaml-tab-indent",
        "triggers:\n\tuser-message: {}\n",
        [err("protocol", "YAML syntax error: found character '\\t' that cannot start any token", 2)],
    ),
    (
        "not-a-mapping",
        "- input\n- agent\n",
        [err("protocol", "protocol.yaml must be a mapping of sections", 1)],
    ),
    ("empty", "# nothing yet\n", [err("protocol", "protocol.yaml is empty", None)]),
    (
        "section-typo",
        y(HEAD).replace("handlers:", "handler:"),
        [
            err("handler", "unknown section `handler` (did you mean `handlers`?)", 9),
            err("triggers.user-message", "trigger `user-message` has no handler", 3),
        ],
    ),
    (
        "unsupported-section",
        y(HEAD) + "skills:\n  qr-code: { description: QR codes }\n",
        [err("skills", "unknown section `skills`: Octavus skills are not supported by Parley", 16)],
    ),
    (
        "agent-key-typo",
        agent_with("maxStep: 3"),
        [err("agent.maxStep", "unknown key `maxStep` (did you mean `maxSteps`?)", 9)],
    ),
    (
        "agent-thinking-level",
        agent_with("thinking: extreme"),
        [err("agent.thinking", "must be 'low', 'medium' or 'high' (got 'extreme')", 9)],
    ),
    (
        "agent-temperature-range",
        agent_with("temperature: 3"),
        [err("agent.temperature", "must be less than or equal to 2", 9)],
    ),
    (
        "agent-missing",
        y(HEAD).replace("agent:\n  model: openai/gpt-4o\n  system: system\n", ""),
        [err("agent", "missing `agent` section: interactive agents need `model` and `system`", None)],
    ),
    (
        "agent-missing-system",
        y(HEAD).replace("  system: system\n", ""),
        [err("agent.system", "missing required key `system`", 6)],
    ),
    (
        "agent-model-format",
        y(HEAD).replace("openai/gpt-4o", "gpt-4o"),
        [err("agent.model", "model must be `provider/model-id`, e.g. `openai/gpt-4o` (got `gpt-4o`)", 7)],
    ),
    (
        "agent-system-prompt-missing",
        y(HEAD).replace("system: system", "system: sytem"),
        [err("agent.system", "prompt `sytem` not found in prompts/ (have: `system`, `user-message`)", 8)],
    ),
    (
        "agent-unknown-tool",
        agent_with("tools: [get-user-acount]")
        + "tools:\n  get-user-account:\n    description: Look up the account\n",
        [
            err("agent.tools[0]", "unknown tool `get-user-acount` (did you mean `get-user-account`?)", 9),
            warn(
                "tools.get-user-account",
                "tool `get-user-account` is never used: list it in `agent.tools` (or a start-thread's "
                "`tools`) "
                "or call it with a tool-call block",
                18,
            ),
        ],
    ),
    (
        "agent-input-undeclared",
        agent_with("input: [COMPANY_NAME]"),
        [
            err(
                "agent.input[0]",
                "`COMPANY_NAME` is not declared in input, resources, variables or the trigger's input",
                9,
            )
        ],
    ),
    (
        "trigger-without-handler",
        y(HEAD).replace("agent:", "  request-human:\n    description: Talk to a human\nagent:"),
        [err("triggers.request-human", "trigger `request-human` has no handler", 6)],
    ),
    (
        "handler-for-unknown-trigger",
        y(HEAD) + "  user-mesage:\n    Respond:\n      block: next-message\n",
        [
            err(
                "handlers.user-mesage",
                "handler for undeclared trigger `user-mesage` (did you mean `user-message`?)",
                16,
            )
        ],
    ),
    (
        "block-without-kind",
        y(HEAD) + "    Respond:\n      thread: main\n",
        [
            err(
                "handlers.user-message[1]",
                "missing required key `block` (one of add-message, next-message, "
                "tool-call, set-resource, serialize-thread, start-thread, generate-image)",
                16,
            )
        ],
    ),
    (
        "block-unknown-kind",
        y(HEAD) + "    Respond:\n      type: next-mesage\n",
        [
            err(
                "handlers.user-message[1].type",
                "unknown block kind `next-mesage` (did you mean `next-message`?)",
                17,
            )
        ],
    ),
    (
        "block-kind-twice",
        y(HEAD) + "    Respond:\n      type: next-message\n      block: next-message\n",
        [err("handlers.user-message[1]", "give the block kind once: `block` or `type`, not both", 16)],
    ),
    (
        "block-not-a-mapping",
        y(HEAD) + "    Respond: next-message\n",
        [
            err(
                "handlers.user-message[1]",
                "a block must be a mapping with a `block` kind and its settings",
                16,
            )
        ],
    ),
    (
        "add-message-role",
        y(HEAD).replace("role: user", "role: bot"),
        [err("handlers.user-message[0].role", "must be 'user', 'assistant' or 'system' (got 'bot')", 13)],
    ),
    (
        "add-message-unknown-key",
        y(HEAD).replace("      role: user\n", "      role: user\n      visibility: false\n"),
        [
            err(
                "handlers.user-message[0].visibility",
                "unknown key `visibility` (did you mean `visible`?)",
                14,
            )
        ],
    ),
    (
        "add-message-prompt-missing",
        y(HEAD).replace("prompt: user-message", "prompt: user-msg"),
        [
            err(
                "handlers.user-message[0].prompt",
                "prompt `user-msg` not found in prompts/ (have: `system`, `user-message`)",
                14,
            )
        ],
    ),
    (
        "add-message-undeclared-input",
        y(HEAD).replace("input: [USER_MESSAGE]", "input: [USER_MSG]"),
        [
            err(
                "handlers.user-message[0].input[0]",
                "`USER_MSG` is not declared in input, resources, "
                "variables or the trigger's input (did you mean `USER_MESSAGE`?)",
                15,
            ),
            warn(
                "handlers.user-message[0]",
                "prompt `user-message` uses `{{USER_MESSAGE}}`, which this "
                "block does not pass in `input`; it renders empty",
                11,
            ),
        ],
    ),
    (
        "add-message-input-entry",
        y(HEAD).replace("input: [USER_MESSAGE]", "input: [{A: B, C: D}]"),
        [
            err(
                "handlers.user-message[0].input",
                "entry {'A': 'B', 'C': 'D'} must be a variable name or one `NAME: VARIABLE` pair",
                15,
            ),
            # The block is still checked without its broken `input`, so this follows from it.
            warn(
                "handlers.user-message[0]",
                "prompt `user-message` uses `{{USER_MESSAGE}}`, which this "
                "block does not pass in `input`; it renders empty",
                11,
            ),
        ],
    ),
    (
        "trigger-input-out-of-scope",
        y(HEAD).replace("agent:", "  request-human: {}\nagent:")
        + "  request-human:\n    Echo:\n      block: add-message\n      role: user\n"
        "      prompt: user-message\n      input: [USER_MESSAGE]\n",
        [
            err(
                "handlers.request-human[0].input[0]",
                "`USER_MESSAGE` is not declared in input, resources, variables or the trigger's input",
                22,
            )
        ],
    ),
    (
        "duplicate-block-name",
        y(HEAD) + "    Add user message:\n      block: next-message\n",
        [
            err(
                'handlers.user-message["Add user message"]',
                "duplicate key `Add user message`: YAML keeps only the last one",
                16,
            )
        ],
    ),
    (
        "prompt-undeclared-placeholder",
        y(HEAD),
        [
            err(
                "prompts.system",
                "`{{COMPANY}}` uses `COMPANY`, which is not declared in input, resources, "
                "variables or the trigger's input",
                2,
            )
        ],
    ),
    (
        "prompt-not-passed",
        "input:\n  COMPANY_NAME: { type: string }\n" + y(HEAD),
        [
            warn(
                "agent.system",
                "prompt `system` uses `{{COMPANY_NAME}}`, which this block does not pass in "
                "`input`; it renders empty",
                10,
            )
        ],
    ),
    (
        "prompt-malformed-placeholder",
        y(HEAD),
        [warn("prompts.user-message", "`{{user message}}` is not a variable reference; it stays as text", 1)],
    ),
]
PROMPT_OVERRIDES: dict[str, dict[str, str]] = {
    "prompt-undeclared-placeholder": {
        "system": "You are helpful.\nYou work for {{COMPANY}}.",
        "user-message": "{{USER_MESSAGE}}",
    },
    "prompt-not-passed": {"system": "You work for {{COMPANY_NAME}}.", "user-message": "{{USER_MESSAGE}}"},
    "prompt-malformed-placeholder": {"system": "Hi", "user-message": "{{USER_MESSAGE}} {{ user message }}"},
}


@pytest.mark.parametrize(("protocol", "expected"), [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_broken_protocol(protocol: str, expected: list[Expected], request: pytest.FixtureRequest) -> None:
    case = request.node.callspec.id
    assert issues(protocol, PROMPT_OVERRIDES.get(case)) == expected


# --- a richer agent: resources, variables, a tool and three blocks; each case changes one thing ----

RICH = """
# escalation agent
input:
  COMPANY_NAME: { type: string }
resources:
  CONVERSATION_SUMMARY: { type: string, default: "" }
  POLICY: { type: string, readonly: true }
variables:
  SUMMARY: { type: string }
  TICKET: { type: unknown }
tools:
  create-support-ticket:
    description: Creating a ticket
    parameters:
      summary: { type: string }
      priority: { type: string }
triggers:
  request-human: {}
agent:
  model: openai/gpt-4o
  system: system
handlers:
  request-human:
    Serialize:
      block: serialize-thread
      output: SUMMARY
    Save:
      block: set-resource
      resource: CONVERSATION_SUMMARY
      value: SUMMARY
    Create ticket:
      block: tool-call
      tool: create-support-ticket
      input: { summary: SUMMARY, priority: medium }
      output: TICKET
"""
R = y(RICH)
RICH_PROMPTS = {"system": "You are helpful."}
START = "    Start summary:\n      block: start-thread\n      thread: summary\n      system: system\n"
RICH_CASES: dict[str, str] = {
    "rich-base": R,
    "tool-call-unknown-tool": R.replace("tool: create-support-ticket", "tool: create-ticket"),
    "tool-call-unknown-parameter": R.replace("priority: medium }", "priority: medium, urgency: high }"),
    "tool-call-missing-parameter": R.replace(
        "{ summary: SUMMARY, priority: medium }", "{ summary: SUMMARY }"
    ),
    "tool-call-literal-like-variable": R.replace("priority: medium", "priority: HIGH"),
    "tool-call-output-undeclared": R.replace("output: TICKET", "output: TICKETS"),
    "tool-call-output-resource": R.replace("output: TICKET", "output: CONVERSATION_SUMMARY"),
    "tool-call-output-input": R.replace("output: TICKET", "output: COMPANY_NAME"),
    "set-resource-not-a-resource": R.replace("resource: CONVERSATION_SUMMARY", "resource: SUMMARY"),
    "set-resource-readonly": R.replace("resource: CONVERSATION_SUMMARY", "resource: POLICY"),
    "set-resource-undeclared-value": R.replace("value: SUMMARY", "value: SUMARY"),
    "serialize-thread-format": R.replace(
        "      output: SUMMARY\n", "      output: SUMMARY\n      format: html\n"
    ),
    "thread-not-started": R.replace(
        "      output: SUMMARY\n", "      output: SUMMARY\n      thread: summary\n"
    ),
    "thread-used-before-start": R.replace(
        "      output: SUMMARY\n", "      output: SUMMARY\n      thread: summary\n"
    )
    + START,
    "start-thread-main": R + START.replace("thread: summary", "thread: main"),
    "start-thread-unknown-tool-and-model": R + START + "      tools: [search]\n      model: gpt4\n",
    "response-type-unknown": R + "    Reply:\n      block: next-message\n      responseType: Reply\n",
    "response-type-not-object": R + "    Reply:\n      block: next-message\n      responseType: Tags\n"
    "types:\n  Tags:\n    type: array\n    items: { type: string }\n",
    "independent-without-output": R + "    Think:\n      block: next-message\n      independent: true\n",
    "duplicate-declaration": R.replace(
        "  TICKET: { type: unknown }\n", "  TICKET: { type: unknown }\n  COMPANY_NAME: { type: string }\n"
    ),
    "unknown-custom-type": R.replace("TICKET: { type: unknown }", "TICKET: { type: Ticket }"),
    "bad-data-type": R.replace("TICKET: { type: unknown }", "TICKET: { type: map<string> }"),
    "union-members": R + "types:\n  Result:\n    anyOf: [Ok, Missing]\n    discriminator: status\n"
    "  Ok:\n    code: { type: number }\n",
    "naming-conventions": R.replace(
        "COMPANY_NAME: { type: string }", "companyName: { type: string }"
    ).replace("request-human", "RequestHuman"),
    "tool-definition-typo": R.replace("    parameters:\n", "    parameter:\n"),
    "tool-definition-missing-description": R.replace("    description: Creating a ticket\n", ""),
    "interactive-with-steps": R + "steps: {}\noutput: SUMMARY\n",
    "generate-image": R + "    Draw:\n      block: generate-image\n      prompt: IMAGE_PROMPT\n"
    "      imageModel: openai/gpt-image-1\n      size: 512x512\n      output: IMAGE\n",
}

RICH_EXPECTED: dict[str, list[Expected]] = {
    "rich-base": [],
    "tool-call-unknown-tool": [
        err(
            "handlers.request-human[2].tool",
            "unknown tool `create-ticket` (did you mean `create-support-ticket`?)",
            32,
        ),
        warn(
            "tools.create-support-ticket",
            "tool `create-support-ticket` is never used: list it in `agent.tools` (or a start-thread's "
            "`tools`) or call it with a tool-call block",
            11,
        ),
    ],
    "tool-call-unknown-parameter": [
        err(
            "handlers.request-human[2].input.urgency",
            "tool `create-support-ticket` has no parameter `urgency`",
            33,
        ),
    ],
    "tool-call-missing-parameter": [
        err(
            "handlers.request-human[2].input",
            "missing required parameter `priority` of tool `create-support-ticket`",
            33,
        ),
    ],
    "tool-call-literal-like-variable": [
        warn(
            "handlers.request-human[2].input.priority",
            "`HIGH` is not a declared variable, so it is passed as a literal string",
            33,
        ),
    ],
    "tool-call-output-undeclared": [
        err(
            "handlers.request-human[2].output",
            "output `TICKETS` is not declared in `variables` (did you mean `TICKET`?)",
            34,
        ),
    ],
    "tool-call-output-resource": [
        err(
            "handlers.request-human[2].output",
            "`CONVERSATION_SUMMARY` is a resource: outputs go to `variables`; write resources with "
            "set-resource",
            34,
        ),
    ],
    "tool-call-output-input": [
        err(
            "handlers.request-human[2].output",
            "`COMPANY_NAME` is a session input, which is immutable: declare an output in `variables`",
            34,
        ),
    ],
    "set-resource-not-a-resource": [
        err(
            "handlers.request-human[1].resource",
            "`SUMMARY` is not declared in `resources` (it is declared in variables)",
            28,
        ),
    ],
    "set-resource-readonly": [
        err("handlers.request-human[1].resource", "resource `POLICY` is readonly", 28),
    ],
    "set-resource-undeclared-value": [
        err(
            "handlers.request-human[1].value",
            "`SUMARY` is not declared in input, resources, variables or the trigger's input (did you mean "
            "`SUMMARY`?)",
            29,
        ),
    ],
    "serialize-thread-format": [
        err("handlers.request-human[0].format", "must be 'markdown' or 'json' (got 'html')", 26),
    ],
    "thread-not-started": [
        err(
            "handlers.request-human[0].thread", "thread `summary` is not opened by any start-thread block", 26
        ),
    ],
    "thread-used-before-start": [
        err("handlers.request-human[0].thread", "thread `summary` is used before its start-thread block", 26),
    ],
    "start-thread-main": [
        err(
            "handlers.request-human[3].thread",
            "the main thread is configured by `agent`, not by start-thread",
            37,
        ),
    ],
    "start-thread-unknown-tool-and-model": [
        err(
            "handlers.request-human[3].model",
            "model must be `provider/model-id`, e.g. `openai/gpt-4o` (got `gpt4`)",
            40,
        ),
        err("handlers.request-human[3].tools[0]", "unknown tool `search`", 39),
    ],
    "response-type-unknown": [
        err("handlers.request-human[3].responseType", "unknown type `Reply`", 37),
    ],
    "response-type-not-object": [
        err("handlers.request-human[3].responseType", "responseType `Tags` must be an object type", 37),
    ],
    "independent-without-output": [
        warn(
            "handlers.request-human[3]",
            "an independent next-message without `output` discards what it generates",
            35,
        ),
    ],
    "duplicate-declaration": [
        err("variables.COMPANY_NAME", "`COMPANY_NAME` is already declared in input", 10),
    ],
    "unknown-custom-type": [
        err("variables.TICKET.type", "unknown type `Ticket`", 9),
    ],
    "bad-data-type": [
        err(
            "variables.TICKET.type",
            "must be a built-in type, a custom type, or either with `[]` (got 'map<string>')",
            9,
        ),
    ],
    "union-members": [
        err("types.Result.anyOf[0]", "`Ok` needs a `status` property with a `const` value", 37),
        err("types.Result.anyOf[1]", "union member `Missing` must be an object type declared in `types`", 37),
    ],
    "naming-conventions": [
        warn("input.companyName", "variable names are UPPERCASE_SNAKE_CASE: `companyName`", 3),
        warn("triggers.RequestHuman", "trigger names are lowercase-with-dashes: `RequestHuman`", 17),
    ],
    "tool-definition-typo": [
        err(
            "tools.create-support-ticket.parameter",
            "unknown key `parameter` (did you mean `parameters`?)",
            13,
        ),
    ],
    "tool-definition-missing-description": [
        err("tools.create-support-ticket.description", "missing required key `description`", 11),
    ],
    "interactive-with-steps": [
        err("steps", "`steps` is only for worker agents (settings.format is interactive)", 35),
        err("output", "`output` is only for worker agents (settings.format is interactive)", 36),
    ],
    "generate-image": [
        err(
            "handlers.request-human[3].size",
            "must be '1024x1024', '1792x1024' or '1024x1792' (got '512x512')",
            39,
        ),
        err(
            "handlers.request-human[3].prompt",
            "`IMAGE_PROMPT` is not declared in input, resources, variables or the trigger's input",
            37,
        ),
        err("handlers.request-human[3].output", "output `IMAGE` is not declared in `variables`", 40),
    ],
}


def test_rich_base_is_clean() -> None:
    assert issues(R, RICH_PROMPTS) == []


@pytest.mark.parametrize("case", [c for c in RICH_CASES if c != "rich-base"])
def test_broken_rich_protocol(case: str) -> None:
    assert issues(RICH_CASES[case], RICH_PROMPTS) == RICH_EXPECTED[case]

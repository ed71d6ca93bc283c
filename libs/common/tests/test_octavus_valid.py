"""The valid corpus: complete agents from the Octavus docs 0.0.5, the @octavus/cli 2.0.0 README,
and Parley's own examples (docs/octavus-protocols.md) validate with no issue at all."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from parley_common.octavus import load_definition, read_agent_dir, validate_agent, validate_definition

CORPUS = Path(__file__).parent / "octavus_corpus" / "valid"
AGENTS = sorted(p.name for p in CORPUS.iterdir() if p.is_dir())


def test_corpus_is_complete() -> None:
    assert AGENTS == [
        "cli-readme",
        "docs-agent-config-full",
        "structured-output",
        "support-escalation",
        "worker-title",
    ]


@pytest.mark.parametrize("agent", AGENTS)
def test_valid_agent_has_no_issues(agent: str) -> None:
    definition = read_agent_dir(CORPUS / agent)
    assert validate_agent(definition) == []
    bundle, warnings = load_definition(
        definition.protocol, definition.settings.model_dump(), definition.prompt_map()
    )
    assert warnings == [] and bundle.settings.slug == definition.settings.slug


def test_protocol_example_in_the_docs_matches_the_corpus() -> None:
    # docs/octavus-protocols.md shows support-escalation in full; keep the two identical.
    doc = (Path(__file__).resolve().parents[3] / "docs" / "octavus-protocols.md").read_text()
    protocol = (CORPUS / "support-escalation" / "protocol.yaml").read_text()
    assert protocol in doc


# docs 0.0.5 "Protocol Overview" > "Protocol Structure" (the docs' rendering flattened its
# indentation; re-indented here). It illustrates the sections and is not a complete agent:
# `request-human` has no handler, which the docs' own Triggers page says every trigger needs.


def test_docs_overview_structure_lacks_only_a_handler() -> None:
    protocol = textwrap.dedent(
        """\
        # Agent inputs (provided when creating a session)
        input:
          COMPANY_NAME: { type: string }
          USER_ID: { type: string, optional: true }

        # Persistent resources the agent can read/write
        resources:
          CONVERSATION_SUMMARY:
            description: Summary for handoff
            default: ""

        # How the agent can be invoked
        triggers:
          user-message:
            input:
              USER_MESSAGE: { type: string }
          request-human:
            description: User clicks "Talk to Human"

        # Temporary variables for execution (with types)
        variables:
          SUMMARY:
            type: string
          TICKET:
            type: unknown

        # Tools the agent can use
        tools:
          get-user-account:
            description: Looking up your account
            parameters:
              userId: { type: string }

        # Agent configuration (model, tools, etc.)
        agent:
          model: anthropic/claude-sonnet-4-5
          system: system # References prompts/system.md
          tools: [get-user-account]
          agentic: true # Allow multiple tool calls
          thinking: medium # Extended reasoning

        # What happens when triggers fire
        handlers:
          user-message:
            Add user message:
              type: add-message
              role: user
              prompt: user-message
              input: [USER_MESSAGE]

            Respond to user:
              type: next-message
        """
    )
    prompts = {"system": "You are a support agent.", "user-message": "{{USER_MESSAGE}}"}
    settings = {
        "slug": "my-agent",
        "name": "My Agent",
        "description": "What this agent does",
        "format": "interactive",
    }
    issues = validate_definition(protocol, settings, prompts)
    assert [(i.severity, i.path, i.message, i.line) for i in issues] == [
        ("error", "triggers.request-human", "trigger `request-human` has no handler", 17)
    ]

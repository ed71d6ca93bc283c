"""Octavus agent definitions: typed models, a validator, and prompt rendering.

    issues = validate_definition(protocol_yaml, settings_json, {"system": "You are ..."})
    bundle, warnings = load_definition(protocol_yaml, settings_json, prompts)  # for the runtime

Stream events and trigger bodies of the agent-sessions API are in `parley_common.octavus.events`.
See docs/octavus-protocols.md (what Parley supports) and docs/octavus-wire.md (what the Octavus
CLI and SDKs send).
"""

from parley_common.octavus.blocks import (
    AddMessage,
    Block,
    GenerateImage,
    NextMessage,
    SerializeThread,
    SetResource,
    StartThread,
    ToolCall,
    bindings,
)
from parley_common.octavus.bundle import read_agent_dir
from parley_common.octavus.issues import Issue, ValidationResult, WireIssue, has_errors
from parley_common.octavus.models import (
    AgentBundle,
    AgentConfig,
    AgentDefinition,
    AgentPrompt,
    AgentSettings,
    InputDef,
    Protocol,
    ResourceDef,
    ToolDef,
    ToolParameter,
    TriggerDef,
    VariableDef,
)
from parley_common.octavus.templates import placeholders, render_prompt
from parley_common.octavus.validate import (
    DefinitionError,
    load_definition,
    validate_agent,
    validate_definition,
)

__all__ = [
    "AddMessage",
    "AgentBundle",
    "AgentConfig",
    "AgentDefinition",
    "AgentPrompt",
    "AgentSettings",
    "Block",
    "DefinitionError",
    "GenerateImage",
    "InputDef",
    "Issue",
    "NextMessage",
    "Protocol",
    "ResourceDef",
    "SerializeThread",
    "SetResource",
    "StartThread",
    "ToolCall",
    "ToolDef",
    "ToolParameter",
    "TriggerDef",
    "ValidationResult",
    "VariableDef",
    "WireIssue",
    "bindings",
    "has_errors",
    "load_definition",
    "placeholders",
    "read_agent_dir",
    "render_prompt",
    "validate_agent",
    "validate_definition",
]

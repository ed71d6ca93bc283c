"""What an agent version is made of, as far as its tests are concerned: its nodes and its tools,
and so which of its tests apply to it (the effective scope)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from parley_catalog.agent_tests.models import AgentTest
from parley_catalog.agents.models import Agent
from parley_catalog.tools import service as tools
from parley_common.blueprint import NodeType
from parley_common.octavus.source import load_protocol


@dataclass(frozen=True)
class Node:
    id: str
    type: str
    prompt: str | None = None  # DIALOG nodes that answer with the LLM


@dataclass
class AgentShape:
    definition: str  # "blueprint" | "protocol"
    nodes: list[Node] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)
    system_prompt: str = ""
    language: str | None = None

    @property
    def node_ids(self) -> set[str]:
        return {n.id for n in self.nodes}


async def shape_of(db: AsyncSession, agent: Agent) -> AgentShape:
    catalogue = [t.name for t in await tools.agent_catalogue(db, agent.id, agent.owner_org_id)]
    config: dict[str, Any] = agent.config or {}
    shape = AgentShape(
        definition="protocol" if agent.protocol is not None else "blueprint",
        system_prompt=str(config.get("global_system_prompt") or ""),
        language=config.get("language"),
    )
    if agent.protocol is not None:
        parsed, _, _ = load_protocol(str(agent.protocol.get("protocol") or ""))
        protocol: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
        triggers = protocol.get("triggers") if isinstance(protocol.get("triggers"), dict) else {}
        shape.nodes = [Node(str(name), "trigger") for name in triggers or {}]
        declared = protocol.get("tools") if isinstance(protocol.get("tools"), dict) else {}
        shape.tools = sorted({*catalogue, *(str(n) for n in declared or {})})
        return shape
    for entry in (agent.blueprint or {}).get("entries") or []:
        for node in ((entry or {}).get("workflow") or {}).get("nodes") or []:
            if not isinstance(node, dict) or "id" not in node:
                continue
            raw = node.get("data")
            data: dict[str, Any] = raw if isinstance(raw, dict) else {}
            prompt = None
            if node.get("type") == NodeType.DIALOG.value and data.get("message") is None:
                prompt = str(data.get("prompt") or "")
            shape.nodes.append(Node(str(node["id"]), str(node.get("type", "")), prompt))
    shape.tools = sorted(set(catalogue))
    return shape


Exclusion = Literal["disabled", "node_missing", "tool_missing"]


def exclusion(test: AgentTest, shape: AgentShape) -> Exclusion | None:
    """Why a test does not apply to this agent version, or None when it does."""
    if not test.enabled:
        return "disabled"
    if test.node_id is not None and test.node_id not in shape.node_ids:
        return "node_missing"
    if any(name not in shape.tools for name in test.tools or []):
        return "tool_missing"
    return None

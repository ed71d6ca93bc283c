"""Which agent a ServiceAi request is bound to, and what the Chatty Voice routes make of it.

The binding (docs/webrtc.md#which-agent-a-caller-is-bound-to): a session cookie or an API key
names the agent in `X-Parley-Agent` and must hold the route's role on the agent's owner (viewer
to read its tools and instructions, member to run a tool), as on `/agents/{agentID}/tools`.
Client tokens never get here (the routers' `Authenticator` refuses them with
`chatty.not_entitled`): they are minted for talking to an agent, not for reading its prompt or
running its tools directly. Anything the caller may not use is 403 `chatty.not_entitled`, whether
the agent exists or not.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import structlog
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from parley_catalog.agents import service as agents
from parley_catalog.agents.models import Agent
from parley_catalog.context import CatalogContext
from parley_catalog.tools.models import Tool
from parley_catalog.tools.schemas import ExecuteToolRequest
from parley_common.auth_contract import MemberRole, Principal
from parley_common.blueprint import Blueprint, NodeType
from parley_common.catalog_contract import AgentConfig, ToolResult
from parley_common.chatty_contract import (
    ChattyAiContextResponse,
    ChattyExecuteRequest,
    ChattyToolDefinition,
)
from parley_common.errors import Codes, ParleyError

log = structlog.get_logger(__name__)


def not_entitled(detail: str) -> ParleyError:
    return ParleyError(Codes.CHATTY_NOT_ENTITLED, params={"detail": detail})


async def bound_agent(
    ctx: CatalogContext, db: AsyncSession, principal: Principal, named: str | None, min_role: MemberRole
) -> Agent:
    """The agent `X-Parley-Agent` names, if the caller holds `min_role` on its owner."""
    if not named:
        raise ParleyError(Codes.CHATTY_AGENT_REQUIRED)
    refused = not_entitled("no agent of that id that this credential may use")
    try:
        agent_id = UUID(named)
    except ValueError:
        raise refused from None
    try:
        return await agents.load_for(ctx, db, principal, agent_id, min_role)
    except ParleyError as exc:
        if exc.code is Codes.NOT_FOUND:
            raise refused from exc
        raise


def tool_definitions(agent: Agent, tools: list[Tool]) -> list[ChattyToolDefinition]:
    """The catalogue in the contract's shape. A tool whose parameters do not fit it (a property
    without `type`, an `enum` of numbers) is left out of this list and logged; it stays in
    `GET /agents/{agentID}/tools` and can still be executed by name."""
    definitions = []
    for tool in tools:
        raw = {
            "type": "function",
            "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters},
        }
        try:
            definitions.append(ChattyToolDefinition.model_validate(raw))
        except ValidationError as exc:
            first = exc.errors(include_input=False)[0]
            log.warning(
                "chatty.tool_not_listed",
                agent_id=str(agent.id),
                tool=tool.name,
                where=".".join(str(p) for p in first["loc"]),
                problem=first["msg"],
            )
    return definitions


def execute_request(body: ChattyExecuteRequest | None) -> ExecuteToolRequest | ToolResult:
    """The catalog's execution request, or the `{success: false}` answer when the body cannot be
    one (a name longer than any tool's is unknown; arguments that are not clean JSON are invalid)."""
    body = body or ChattyExecuteRequest()
    raw: dict[str, Any] = {"function": body.function, "name": body.name, "arguments": body.arguments or {}}
    try:
        return ExecuteToolRequest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors(include_input=False)[0]
        if first["loc"] and first["loc"][0] in ("function", "name"):
            name = body.function or body.name or ""
            return ToolResult(
                success=False,
                error=f"There is no tool named {name[:80]}.",
                code=Codes.TOOL_UNKNOWN_FUNCTION.code,
            )
        detail = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
        return ToolResult(
            success=False,
            error=Codes.TOOL_INVALID_ARGUMENTS.message.format(detail=detail),
            code=Codes.TOOL_INVALID_ARGUMENTS.code,
        )


def ai_context(agent: Agent, now: datetime | None = None) -> ChattyAiContextResponse:
    """The agent's instructions: its global system prompt, then its workflow stages (the DIALOG
    nodes of a blueprint with their prompt or fixed message, in the order the nodes are listed;
    an Octavus protocol agent's prompt files). Parley agents have no knowledge base."""
    config = AgentConfig.model_validate(agent.config)
    parts = [config.global_system_prompt.strip()] if config.global_system_prompt else []
    stages = _stages(agent)
    if stages:
        parts.append("Workflow stages:\n" + "\n".join(stages))
    return ChattyAiContextResponse(
        instructions="\n\n".join(p for p in parts if p),
        knowledgeBaseLoaded=False,
        workflowStagesLoaded=bool(stages),
        timestamp=(now or datetime.now(UTC)).isoformat().replace("+00:00", "Z"),
    )


def _stages(agent: Agent) -> list[str]:
    if agent.protocol is not None:
        prompts = agent.protocol.get("prompts") or []
        return [
            f"- {p.get('name')}: {str(p.get('content', '')).strip()}"
            for p in prompts
            if isinstance(p, dict) and str(p.get("content", "")).strip()
        ]
    blueprint = Blueprint.model_validate(agent.blueprint or {})
    stages: list[str] = []
    for entry in blueprint.entries:
        for node in entry.workflow.nodes:
            if node.type != NodeType.DIALOG.value:
                continue
            text = node.data.get("prompt") or node.data.get("message")
            if isinstance(text, str) and text.strip():
                stages.append(f"{len(stages) + 1}. {node.id}: {text.strip()}")
    return stages


def model_name(config: AgentConfig) -> str | None:
    """How `POST /api/realtime-token` names the agent's LLM: `engine/model`, or what is set."""
    engine = config.llm_engine.value if config.llm_engine else None
    if engine and config.llm_model:
        return f"{engine}/{config.llm_model}"
    return config.llm_model or engine


def voice_name(config: AgentConfig) -> str | None:
    """The agent's TTS voice (`config.voice.tts.voice`), else its TTS engine, when configured."""
    tts = config.voice.tts if config.voice else None
    if tts is None:
        return None
    return tts.voice or tts.engine

"""HTTP: the ServiceAi Chatty Voice routes, for the agent a request is bound to (service.py).

- `GET /api/chatty-voice/tools`: the agent's tool catalogue, a bare array (viewer).
- `POST /api/chatty-voice/tools/execute`: run one by `function` (or legacy `name`) (member).
- `GET /api/chatty-voice/ai-context`: its instructions from its prompt and flow (viewer).

Statuses and bodies are the contract's (specs/serviceai-openapi-excerpt.yaml); 426 for an old
`X-Client-Version` comes from the version gate every route has (parley_common.http).
"""

from __future__ import annotations

from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Body, Depends
from fastapi.responses import JSONResponse
from pydantic.json_schema import SkipJsonSchema

from parley_catalog.chatty import service
from parley_catalog.deps import Ctx, Db
from parley_catalog.tools import service as tools
from parley_common.auth_contract import MemberRole, Principal
from parley_common.authenticator import Authenticator
from parley_common.catalog_contract import ToolResult
from parley_common.chatty_contract import (
    ChattyAiContextResponse,
    ChattyExecuteRequest,
    ChattyExecuteResponse,
    ChattyToolDefinition,
    ErrorEnvelope,
)
from parley_common.chatty_http import BoundAgent
from parley_common.errors import Codes
from parley_common.http import UpgradeRequiredEnvelope

log = structlog.get_logger(__name__)
router = APIRouter(tags=["chatty"])

# A session cookie or an API key; a client token gets 403 `chatty.not_entitled` (service.py).
ChattyReader = Annotated[
    Principal,
    Depends(Authenticator(required_scopes={"agents:read"}, wrong_kind=Codes.CHATTY_NOT_ENTITLED)),
]
ChattyWriter = Annotated[
    Principal,
    Depends(Authenticator(required_scopes={"agents:write"}, wrong_kind=Codes.CHATTY_NOT_ENTITLED)),
]

_UNAUTHENTICATED: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorEnvelope, "description": "Unauthenticated."}
}


def _forbidden(description: str) -> dict[int | str, dict[str, Any]]:
    return {403: {"model": ErrorEnvelope, "description": description}}


@router.get(
    "/api/chatty-voice/tools",
    response_model=list[ChattyToolDefinition],
    response_model_exclude_unset=True,
    operation_id="listChattyVoiceTools",
    summary="List the OpenAI-Realtime-compatible function tools the executor can run.",
    description="The bound agent's tool catalogue, a bare array of `ChattyToolDefinition` (requires viewer).",
    responses={
        **_UNAUTHENTICATED,
        **_forbidden("Caller lacks the chatty-voice entitlement."),
        426: {"model": UpgradeRequiredEnvelope, "description": "Client major below minClientVersion."},
    },
)
async def list_tools(ctx: Ctx, db: Db, principal: ChattyReader, agent: BoundAgent = None) -> Any:
    bound = await service.bound_agent(ctx, db, principal, agent, MemberRole.VIEWER)
    return service.tool_definitions(bound, await tools.agent_catalogue(db, bound.id, bound.owner_org_id))


@router.post(
    "/api/chatty-voice/tools/execute",
    response_model=ChattyExecuteResponse,
    response_model_exclude_none=True,
    operation_id="executeChattyVoiceTool",
    summary="Execute a Chatty Voice tool by canonical `function` (or legacy `name`).",
    description=(
        "Runs a tool of the bound agent's catalogue (requires member). 200 whenever the executor "
        "runs: failures are `{success: false, error, code}`."
    ),
    responses={
        **_UNAUTHENTICATED,
        **_forbidden("Caller lacks the chatty-voice entitlement or a per-tool permission."),
        500: {
            "model": ChattyExecuteResponse,
            "description": "Unhandled executor error. Body is `{ success: false, error }` (as for 200).",
        },
    },
)
async def execute_tool(
    ctx: Ctx,
    db: Db,
    principal: ChattyWriter,
    agent: BoundAgent = None,
    body: Annotated[SkipJsonSchema[None] | ChattyExecuteRequest, Body()] = None,
) -> Any:
    bound = await service.bound_agent(ctx, db, principal, agent, MemberRole.MEMBER)
    catalogue = await tools.agent_catalogue(db, bound.id, bound.owner_org_id)
    await db.close()  # the webhook may take a while: give the connection back first
    request = service.execute_request(body)
    if isinstance(request, ToolResult):
        return ChattyExecuteResponse.model_validate(request.model_dump())
    try:
        result = await tools.execute(ctx, catalogue, request)
    except Exception:
        # The contract's 500 is the execution envelope, not the error envelope.
        log.exception("chatty.execute_failed", agent_id=str(bound.id))
        failed = ChattyExecuteResponse(success=False, error=Codes.INTERNAL.message, code=Codes.INTERNAL.code)
        return JSONResponse(failed.model_dump(exclude_none=True), status_code=500)
    return ChattyExecuteResponse.model_validate(result.model_dump())


@router.get(
    "/api/chatty-voice/ai-context",
    response_model=ChattyAiContextResponse,
    operation_id="getChattyVoiceAiContext",
    summary="Fetch the Chatty Voice system prompt + load-status flags.",
    description="The bound agent's global system prompt and workflow stages (requires viewer).",
    responses={**_UNAUTHENTICATED, **_forbidden("Caller lacks the chatty-voice entitlement.")},
)
async def get_ai_context(
    ctx: Ctx, db: Db, principal: ChattyReader, agent: BoundAgent = None
) -> ChattyAiContextResponse:
    bound = await service.bound_agent(ctx, db, principal, agent, MemberRole.VIEWER)
    return service.ai_context(bound)

"""The ServiceAi "Chatty Voice" HTTP contract (specs/serviceai-openapi-excerpt.yaml, API 1.2.1).

The models are named as the contract's components and written so that the OpenAPI schema pydantic
derives from them is the contract's, field for field: camelCase names, no `null` for optional
fields (`SkipJsonSchema[None]`; responses leave out what they do not carry), the parameter schema
of a tool as the contract spells it. The catalog serves `/api/chatty-voice/*`, the session
gateway `/api/realtime-token`, `/api/csrf-token` and `/api/realtime/webrtc` (docs/webrtc.md);
tests/e2e/test_serviceai_contract.py diffs the served document against the excerpt.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from parley_common.errors import Error

# How a session cookie or an API key names the agent a request is bound to (docs/webrtc.md). A
# client token is bound to its own agent and needs no header.
AGENT_HEADER = "X-Parley-Agent"
CSRF_HEADER = "X-CSRF-Token"


class ErrorEnvelope(Error):
    """The platform's `Error` envelope, under the name the ServiceAi contract gives it."""


def _property_schema(schema: dict[str, Any]) -> None:
    # The contract's shape: any JSON schema keyword (`additionalProperties: {}`), and these typed.
    known = {"type": "object", "properties": schema.pop("properties"), "required": schema.pop("required")}
    for key in list(schema):
        if key not in ("title", "description"):
            del schema[key]
    schema["allOf"] = [{"type": "object", "additionalProperties": {}}, known]


class ChattyParameterProperty(BaseModel):
    """One property of a tool's parameters: a JSON schema whose `type` is given."""

    model_config = ConfigDict(extra="allow", json_schema_extra=_property_schema)

    type: str | list[str]
    description: SkipJsonSchema[None] | str = None
    enum: SkipJsonSchema[None] | list[str] = None
    required: SkipJsonSchema[None] | list[str] = None
    additionalProperties: SkipJsonSchema[None] | bool = None


class ChattyToolParameters(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["object"]
    properties: dict[str, ChattyParameterProperty]
    required: SkipJsonSchema[None] | list[str] = None
    additionalProperties: SkipJsonSchema[None] | bool = None


class ChattyToolFunction(BaseModel):
    name: Annotated[str, Field(min_length=1)]
    description: str
    parameters: ChattyToolParameters


class ChattyToolDefinition(BaseModel):
    """One entry of `GET /api/chatty-voice/tools` (an OpenAI Realtime function tool)."""

    type: Literal["function"]
    function: ChattyToolFunction


class ChattyExecuteRequest(BaseModel):
    """`POST /api/chatty-voice/tools/execute`: the canonical `function` or the legacy `name`."""

    function: SkipJsonSchema[None] | Annotated[str, Field(min_length=1)] = None
    name: SkipJsonSchema[None] | Annotated[str, Field(min_length=1)] = None
    arguments: SkipJsonSchema[None] | dict[str, Any] = None


class ChattyExecuteResponse(BaseModel):
    success: bool
    message: SkipJsonSchema[None] | str = None
    error: SkipJsonSchema[None] | str = None
    code: SkipJsonSchema[None] | str = None
    data: Any = None
    action: Any = None


class ChattyAiContextResponse(BaseModel):
    instructions: str
    knowledgeBaseLoaded: bool
    workflowStagesLoaded: bool
    timestamp: str


class RealtimeTokenRequest(BaseModel):
    directWebRTC: SkipJsonSchema[None] | bool = None


class RealtimeTokenMetadata(BaseModel):
    organizationId: str | float


class RealtimeTokenResponse(BaseModel):
    """The single union object of `POST /api/realtime-token`: only `fallback` is always there."""

    sessionId: SkipJsonSchema[None] | str = None
    model: SkipJsonSchema[None] | str = None
    voice: SkipJsonSchema[None] | str = None
    clientSecret: SkipJsonSchema[None] | str = None
    fallback: bool
    directWebRTC: SkipJsonSchema[None] | bool = None
    useWebRTC: SkipJsonSchema[None] | bool = None
    expiresInSeconds: SkipJsonSchema[None] | Annotated[int, Field(ge=0)] = None
    metadata: SkipJsonSchema[None] | RealtimeTokenMetadata = None
    message: SkipJsonSchema[None] | str = None


class CsrfTokenResponse(BaseModel):
    token: Annotated[str, Field(min_length=1)]


class RealtimeWebrtcRequest(BaseModel):
    sdp: Annotated[str, Field(min_length=1)]


class RealtimeWebrtcUpstreamError(BaseModel):
    """The contract's 502 body of `POST /api/realtime/webrtc`."""

    error: str
    status: SkipJsonSchema[None] | int = None

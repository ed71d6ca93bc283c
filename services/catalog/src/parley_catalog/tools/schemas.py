"""HTTP schemas of the tool endpoints.

The catalogue (`GET …/tools`) and the execution envelope are the ServiceAi contract's shapes
(`parley_common.catalog_contract.ToolDefinition` / `ToolResult`); the records below are how a
team defines its webhook tools.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from jsonschema import Draft202012Validator, SchemaError
from pydantic import AfterValidator, AnyHttpUrl, BaseModel, Field, StringConstraints, field_validator

from parley_catalog.agents.schemas import AgentSecret
from parley_catalog.jsonsafe import CleanJSON, ensure_clean

ToolName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Description = Annotated[str, Field(max_length=2000)]
Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
# RFC 9110 token characters; values may not carry CR/LF (header injection).
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
_HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer"}


def _check_parameters(value: dict[str, Any]) -> dict[str, Any]:
    if value.get("type") != "object" or not isinstance(value.get("properties"), dict):
        raise ValueError('parameters must be a JSON schema with "type": "object" and "properties"')
    try:
        Draft202012Validator.check_schema(value)
    except SchemaError as exc:
        raise ValueError(f"parameters is not a valid JSON schema: {exc.message}") from exc
    return value


Parameters = Annotated[
    dict[str, Any],
    AfterValidator(ensure_clean),
    AfterValidator(_check_parameters),
    Field(
        description=(
            'JSON schema of the arguments, e.g. `{"type": "object", "properties": {"city": {"type": '
            '"string"}}, "required": ["city"]}`.'
        )
    ),
]


def _check_headers(value: dict[str, str]) -> dict[str, str]:
    for name, header_value in value.items():
        if not _HEADER_NAME.match(name) or name.lower() in _HOP_BY_HOP:
            raise ValueError(f"header name {name!r} is not allowed")
        if any(c in header_value for c in "\r\n\x00") or len(header_value) > 8192:
            raise ValueError(f"header {name!r} has an invalid value")
    return value


Headers = Annotated[dict[str, str], Field(max_length=50), AfterValidator(_check_headers)]


class Webhook(BaseModel):
    url: Annotated[AnyHttpUrl, Field(max_length=2048)]
    method: Method = "POST"
    headers: Headers = Field(default_factory=dict)
    timeout_s: Annotated[float, Field(gt=0, le=30)] = 10.0


class WebhookIn(Webhook):
    """`secret_headers` are stored encrypted (e.g. `Authorization`) and shown masked."""

    secret_headers: Headers = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _no_credentials(cls, url: AnyHttpUrl) -> AnyHttpUrl:
        if url.username or url.password:
            raise ValueError("put credentials in secret_headers, not in the URL")
        return url


class WebhookOut(Webhook):
    secret_headers: list[AgentSecret] = Field(description="Header names with masked values.")


class CreateToolRequest(BaseModel):
    name: ToolName
    description: Description
    parameters: Parameters
    webhook: WebhookIn


class UpdateToolRequest(BaseModel):
    """Given fields replace the stored ones; a secret header sent back with its mask is kept."""

    name: ToolName | None = None
    description: Description | None = None
    parameters: Parameters | None = None
    webhook: WebhookIn | None = None


class Tool(BaseModel):
    id: UUID
    owner_agent_id: UUID | None = None
    owner_org_id: UUID | None = None
    name: str
    description: str
    parameters: dict[str, Any]
    webhook: WebhookOut
    created_at: datetime
    updated_at: datetime


class ExecuteToolRequest(BaseModel):
    """ServiceAi: the canonical `function` or its legacy alias `name` (at least one)."""

    function: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    arguments: CleanJSON = Field(default_factory=dict)

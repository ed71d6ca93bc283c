"""Tool records, catalogues and execution.

An agent's catalogue is its own tools followed by its org's tools whose names it does not use
itself (an agent tool shadows an org tool of the same name); an org's catalogue is its own tools.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.exceptions import Unresolvable
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from parley_catalog import secretstore
from parley_catalog.access import live_row, not_found
from parley_catalog.agents.schemas import AgentSecret
from parley_catalog.context import CatalogContext
from parley_catalog.convert import from_row, record_from_row
from parley_catalog.timeutil import created_now, utcnow
from parley_catalog.tools import schemas, webhook
from parley_catalog.tools.models import Tool
from parley_common.catalog_contract import ToolDefinition, ToolFunction, ToolResult
from parley_common.errors import Codes
from parley_common.kit.db import flush_unique


def to_schema(tool: Tool) -> schemas.Tool:
    secret_headers = [AgentSecret(key=s.key, value=s.masked) for s in secretstore.load(tool.secret_headers)]
    webhook = from_row(schemas.WebhookOut, tool, secret_headers=secret_headers)  # url: validated when written
    return from_row(schemas.Tool, tool, webhook=webhook)


def definition(tool: Tool) -> ToolDefinition:
    return ToolDefinition(
        function=ToolFunction(name=tool.name, description=tool.description, parameters=tool.parameters)
    )


async def owned_tools(
    db: AsyncSession, *, agent_id: UUID | None = None, org_id: UUID | None = None
) -> list[Tool]:
    query = select(Tool).where(Tool.deleted_at.is_(None)).order_by(Tool.name)
    if agent_id is not None:
        query = query.where(Tool.owner_agent_id == agent_id)
    else:
        query = query.where(Tool.owner_org_id == org_id)
    return list((await db.scalars(query)).all())


async def agent_catalogue(db: AsyncSession, agent_id: UUID, org_id: UUID | None) -> list[Tool]:
    own = await owned_tools(db, agent_id=agent_id)
    if org_id is None:
        return own
    names = {t.name for t in own}
    return own + [t for t in await owned_tools(db, org_id=org_id) if t.name not in names]


def _set_webhook(ctx: CatalogContext, tool: Tool, webhook: schemas.WebhookIn) -> None:
    """Write `webhook` into the tool's columns, for a new tool or over a stored one (a secret
    header sent back with its mask keeps its stored value)."""
    tool.url = str(webhook.url)
    tool.method = webhook.method
    tool.headers = webhook.headers
    tool.timeout_s = webhook.timeout_s
    secret_headers = [secretstore.SecretInput(key=k, value=v) for k, v in webhook.secret_headers.items()]
    tool.secret_headers = secretstore.write(ctx.box, secret_headers, tool.secret_headers or ())


async def create_tool(
    ctx: CatalogContext,
    db: AsyncSession,
    body: schemas.CreateToolRequest,
    *,
    agent_id: UUID | None = None,
    org_id: UUID | None = None,
) -> Tool:
    tool = Tool(
        owner_agent_id=agent_id,
        owner_org_id=org_id,
        name=body.name,
        description=body.description,
        parameters=body.parameters,
        **created_now(),
    )
    _set_webhook(ctx, tool, body.webhook)
    db.add(tool)
    await flush_unique(db, Codes.TOOL_NAME_TAKEN, {"name": body.name})
    return tool


async def get_tool(db: AsyncSession, tool_id: UUID, *, lock: bool = False) -> Tool:
    tool = await live_row(db, Tool, tool_id, lock=lock)
    if tool is None:
        raise not_found("tool")
    return tool


async def update_tool(
    ctx: CatalogContext, db: AsyncSession, tool: Tool, body: schemas.UpdateToolRequest
) -> None:
    if body.name is not None:
        tool.name = body.name
    if body.description is not None:
        tool.description = body.description
    if body.parameters is not None:
        tool.parameters = body.parameters
    if body.webhook is not None:
        _set_webhook(ctx, tool, body.webhook)
    tool.updated_at = utcnow()
    await flush_unique(db, Codes.TOOL_NAME_TAKEN, {"name": tool.name})


async def delete_tool(db: AsyncSession, tool: Tool) -> None:
    tool.deleted_at = utcnow()
    await db.flush()


async def execute(
    ctx: CatalogContext, catalogue: Sequence[Tool], body: schemas.ExecuteToolRequest
) -> ToolResult:
    """Run the named tool of `catalogue`; every outcome is a `ToolResult` (HTTP 200)."""
    name = body.function or body.name
    if not name:
        return webhook.failure(Codes.TOOL_FUNCTION_REQUIRED, Codes.TOOL_FUNCTION_REQUIRED.message)
    tool = next((t for t in catalogue if t.name == name), None)
    if tool is None:
        return webhook.failure(Codes.TOOL_UNKNOWN_FUNCTION, f"There is no tool named {name}.")
    problem = _argument_problem(tool.parameters, body.arguments)
    if problem is not None:
        return webhook.failure(
            Codes.TOOL_INVALID_ARGUMENTS, Codes.TOOL_INVALID_ARGUMENTS.message.format(detail=problem)
        )
    headers = dict(tool.headers)
    headers.update(secretstore.reveal(ctx.box, secretstore.load(tool.secret_headers)))
    call = record_from_row(webhook.WebhookCall, tool, headers=headers, arguments=body.arguments)
    return await webhook.execute(ctx.http, call, ctx.settings)


def _argument_problem(parameters: dict[str, Any], arguments: dict[str, Any]) -> str | None:
    # An empty registry: a `$ref` to a URL is never fetched (that would be a request from here).
    validator = Draft202012Validator(parameters, registry=Registry())
    try:
        error = next(iter(validator.iter_errors(arguments)), None)
    except (Unresolvable, RecursionError, ValueError) as exc:
        return f"the parameters schema cannot be applied: {type(exc).__name__}"
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "arguments"
    return f"{where}: {error.message}"[:500]

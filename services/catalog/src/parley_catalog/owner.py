"""Who owns what a route lists or creates: a user, an organization or an agent, as one dependency.

The contract names the same operation under each owner (`GET /users/me/agents` and
`GET /orgs/{orgSlug}/agents`, `POST /agents/{agentID}/tools` and `POST /orgs/{orgSlug}/tools`). An
endpoint is written once with an `owner: Owner` parameter and `owner_routes` registers it at each
owner's path, with that owner's dependency resolving (and authorizing) the `Owner`:

- `USER` (`/users/me`): the caller's own resources, personal credentials only (an org's API key
  gets 403 there, see `access.personal_owner`).
- `ORG` (`/orgs/{orgSlug}`): auth decides over the bus whether the caller holds the route's role.
- `AGENT` (`/agents/{agentID}`): the agent, loaded if the caller holds the role on its owner.
"""

# No `from __future__ import annotations`: FastAPI reads the resolvers' annotations, which name a
# local `Depends(auth)`, so they are evaluated where they are written.
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, get_type_hints
from uuid import UUID

from fastapi import APIRouter, Depends, status
from pydantic import BaseModel
from sqlalchemy import ColumnElement

from parley_catalog.access import org_by_slug, personal_owner
from parley_catalog.agents import service as agents
from parley_catalog.agents.models import Agent
from parley_catalog.deps import Ctx, Db
from parley_catalog.pagination import ListQuery, search_page
from parley_catalog.params import AgentID, OrgSlug
from parley_common.auth_contract import MemberRole, Principal
from parley_common.authenticator import Authenticator


@dataclass(frozen=True)
class Owner:
    principal: Principal
    user_id: UUID | None = None
    org_id: UUID | None = None
    agent: Agent | None = None

    def owns(self, model: Any) -> ColumnElement[bool]:
        """The rows of `model` (with `owner_user_id` / `owner_org_id`) this owner owns."""
        if self.user_id is not None:
            return model.owner_user_id == self.user_id  # type: ignore[no-any-return]
        return model.owner_org_id == self.org_id  # type: ignore[no-any-return]


Resolver = Callable[..., Awaitable[Owner]]


@dataclass(frozen=True)
class OwnerKind:
    prefix: str  # the path before the route's own part
    word: str  # in operation ids: list{word}Agents
    resolver: Callable[[str, MemberRole, bool], Resolver]  # (scope, min_role, lock) -> dependency


def _user(scope: str, _role: MemberRole, _lock: bool) -> Resolver:
    auth = Authenticator(required_scopes={scope}, org_keys=False)

    async def user_owner(principal: Annotated[Principal, Depends(auth)]) -> Owner:
        return Owner(principal, user_id=personal_owner(principal))

    return user_owner


def _org(scope: str, min_role: MemberRole, _lock: bool) -> Resolver:
    auth = Authenticator(required_scopes={scope})

    async def org_owner(org_slug: OrgSlug, ctx: Ctx, principal: Annotated[Principal, Depends(auth)]) -> Owner:
        return Owner(principal, org_id=await org_by_slug(ctx, principal, org_slug, min_role))

    return org_owner


def _agent(scope: str, min_role: MemberRole, lock: bool) -> Resolver:
    auth = Authenticator(required_scopes={scope})

    async def agent_owner(
        agent_id: AgentID, ctx: Ctx, db: Db, principal: Annotated[Principal, Depends(auth)]
    ) -> Owner:
        agent = await agents.load_for(ctx, db, principal, agent_id, min_role, lock=lock)
        return Owner(principal, agent=agent)

    return agent_owner


@dataclass(frozen=True)
class Access:
    """What an owner route requires: the credential's scope and, where the owner is an organization
    (or an agent's owner), the caller's role there."""

    scope: str
    min_role: MemberRole


READ = Access("agents:read", MemberRole.VIEWER)
WRITE = Access("agents:write", MemberRole.MEMBER)
ADMINISTER = Access("agents:write", MemberRole.ADMIN)

USER = OwnerKind("/users/me", "User", _user)
ORG = OwnerKind("/orgs/{orgSlug}", "Org", _org)
AGENT = OwnerKind("/agents/{agentID}", "Agent", _agent)


def owner_routes(
    router: APIRouter,
    method: str,
    path: str,
    *,
    summaries: Mapping[OwnerKind, str],
    operation_id: str,
    access: Access,
    lock: bool = False,
    descriptions: Mapping[OwnerKind, str] | None = None,
    **route: Any,
) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
    """Register the decorated endpoint at `<owner prefix><path>` for each owner in `summaries`.

    `operation_id` has one `{}` for the owner's word; `lock` locks an agent owner's row for the
    request."""

    def decorate(endpoint: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        for kind, summary in summaries.items():
            router.add_api_route(
                kind.prefix + path,
                _with_owner(endpoint, kind, kind.resolver(access.scope, access.min_role, lock)),
                methods=[method],
                operation_id=operation_id.format(kind.word),
                summary=summary,
                description=(descriptions or {}).get(kind),
                **route,
            )
        return endpoint

    return decorate


def _with_owner(
    endpoint: Callable[..., Awaitable[Any]], kind: OwnerKind, resolver: Resolver
) -> Callable[..., Awaitable[Any]]:
    """`endpoint` with its `owner` parameter resolved by `resolver` (FastAPI reads the signature)."""
    hints = get_type_hints(endpoint, include_extras=True)
    signature = inspect.signature(endpoint)
    parameters = [
        p.replace(annotation=Annotated[Owner, Depends(resolver)] if p.name == "owner" else hints[p.name])
        for p in signature.parameters.values()
    ]

    async def route(**kwargs: Any) -> Any:
        return await endpoint(**kwargs)

    route.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=parameters, return_annotation=hints.get("return", inspect.Signature.empty)
    )
    route.__name__ = f"{endpoint.__name__}_{kind.word.lower()}"
    return route


def owned_list_routes(
    router: APIRouter, path: str, model: Any, page: type[BaseModel], to_schema: Callable[[Any], BaseModel]
) -> None:
    """`GET /users/me<path>` and `GET /orgs/{orgSlug}<path>` (viewer): the owner's `model` rows as
    `page`s (see `search_page`). The operation ids and summaries name the path's resource:
    `listUserAgents`, "List agents owned by the authenticated user"."""
    noun = path.strip("/")

    @owner_routes(
        router,
        "GET",
        path,
        summaries={
            USER: f"List {noun} owned by the authenticated user",
            ORG: f"List {noun} owned by an organization (requires viewer)",
        },
        operation_id=f"list{{}}{noun.capitalize()}",
        access=READ,
        response_model=page,
    )
    async def list_owned(owner: Owner, db: Db, query: Annotated[ListQuery, Depends()]) -> BaseModel:
        return await search_page(db, model, owner.owns(model), query, page, to_schema)


def owned_create_routes(
    router: APIRouter, path: str, noun: str
) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
    """`POST /users/me<path>` and `POST /orgs/{orgSlug}<path>` (member), 201: the decorated
    endpoint creates `noun` ("an agent") for its `owner`; the operation ids are `createUserAgent`,
    `createOrgAgent`."""
    return owner_routes(
        router,
        "POST",
        path,
        summaries={
            USER: f"Create {noun} owned by the authenticated user",
            ORG: f"Create {noun} owned by an organization (requires member)",
        },
        operation_id="create{}" + noun.split()[-1].capitalize(),
        access=WRITE,
        status_code=status.HTTP_201_CREATED,
    )

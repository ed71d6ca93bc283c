"""HTTP: /users/me/templates, /orgs/{orgSlug}/templates, /templates/{templateID}."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from parley_catalog.deps import AgentsReader, AgentsWriter, Ctx, Db
from parley_catalog.loaded import Loader, loaded, loader
from parley_catalog.owner import Owner, owned_create_routes, owned_list_routes
from parley_catalog.params import TemplateID
from parley_catalog.routing import contract_router, deleting
from parley_catalog.templates import schemas, service
from parley_catalog.templates.models import Template
from parley_common.auth_contract import MemberRole

router = contract_router("templates")
ViewedTemplate = Annotated[Template, loaded(service.load_for, TemplateID, AgentsReader, MemberRole.VIEWER)]
_locked = partial(service.load_for, lock=True)
LoadChangedTemplate = Annotated[
    Loader[Template], loader(_locked, TemplateID, AgentsWriter, MemberRole.MEMBER)
]
DeletedTemplate = Annotated[Template, loaded(_locked, TemplateID, AgentsWriter, MemberRole.ADMIN)]


owned_list_routes(router, "/templates", Template, schemas.TemplatePage, service.to_schema)


@owned_create_routes(router, "/templates", "a template")
async def create_template(
    owner: Owner, body: schemas.CreateTemplateRequest, ctx: Ctx, db: Db
) -> schemas.Template:
    template = await service.create_template(ctx, db, body, owner)
    await db.commit()
    return service.to_schema(template)


@router.get(
    "/templates/{templateID}",
    summary="Get a template by ID",
    description="Requires viewer if org-owned; a user's templates are visible to that user only.",
)
async def get_template(template: ViewedTemplate) -> schemas.Template:
    return service.to_schema(template)


@router.patch(
    "/templates/{templateID}",
    summary="Update a template (requires member if org-owned)",
)
async def update_template(
    load: LoadChangedTemplate, body: schemas.UpdateTemplateRequest, ctx: Ctx, db: Db
) -> schemas.Template:
    template = await load()
    await service.update_template(ctx, db, template, body)
    await db.commit()
    return service.to_schema(template)


@deleting(router, "/templates/{templateID}", summary="Soft-delete a template (requires admin if org-owned)")
async def delete_template(template: DeletedTemplate, db: Db) -> None:
    await service.delete_template(db, template)
    await db.commit()

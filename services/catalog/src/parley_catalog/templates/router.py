"""HTTP: /users/me/templates, /orgs/{orgSlug}/templates, /templates/{templateID}."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from parley_catalog.access import org_by_slug, personal_owner
from parley_catalog.deps import AgentsReader, AgentsWriter, Ctx, Db, PersonalReader, PersonalWriter
from parley_catalog.pagination import DEFAULT_LIMIT, Limit, Page, Search
from parley_catalog.params import OrgSlug, TemplateID
from parley_catalog.templates import schemas, service
from parley_common.auth_contract import MemberRole

router = APIRouter(tags=["templates"])


@router.get(
    "/users/me/templates",
    response_model=schemas.TemplatePage,
    operation_id="listUserTemplates",
    summary="List templates owned by the authenticated user",
    response_model_exclude_none=True,
)
async def list_user_templates(
    db: Db, principal: PersonalReader, limit: Limit = DEFAULT_LIMIT, page: Page = 1, search: Search = None
) -> schemas.TemplatePage:
    owner = personal_owner(principal)
    return await service.list_templates(db, owner_user_id=owner, search=search, limit=limit, page=page)


@router.post(
    "/users/me/templates",
    status_code=status.HTTP_201_CREATED,
    response_model=schemas.Template,
    operation_id="createUserTemplate",
    summary="Create a template owned by the authenticated user",
    response_model_exclude_none=True,
)
async def create_user_template(
    body: schemas.CreateTemplateRequest, ctx: Ctx, db: Db, principal: PersonalWriter
) -> schemas.Template:
    template = await service.create_template(ctx, db, body, owner_user_id=personal_owner(principal))
    await db.commit()
    return service.to_schema(template)


@router.get(
    "/orgs/{orgSlug}/templates",
    response_model=schemas.TemplatePage,
    operation_id="listOrgTemplates",
    summary="List templates owned by an organization (requires viewer)",
    response_model_exclude_none=True,
)
async def list_org_templates(
    org_slug: OrgSlug,
    ctx: Ctx,
    db: Db,
    principal: AgentsReader,
    limit: Limit = DEFAULT_LIMIT,
    page: Page = 1,
    search: Search = None,
) -> schemas.TemplatePage:
    org_id = await org_by_slug(ctx, principal, org_slug, MemberRole.VIEWER)
    return await service.list_templates(db, owner_org_id=org_id, search=search, limit=limit, page=page)


@router.post(
    "/orgs/{orgSlug}/templates",
    status_code=status.HTTP_201_CREATED,
    response_model=schemas.Template,
    operation_id="createOrgTemplate",
    summary="Create a template owned by an organization (requires member)",
    response_model_exclude_none=True,
)
async def create_org_template(
    org_slug: OrgSlug, body: schemas.CreateTemplateRequest, ctx: Ctx, db: Db, principal: AgentsWriter
) -> schemas.Template:
    org_id = await org_by_slug(ctx, principal, org_slug, MemberRole.MEMBER)
    template = await service.create_template(ctx, db, body, owner_org_id=org_id)
    await db.commit()
    return service.to_schema(template)


@router.get(
    "/templates/{templateID}",
    response_model=schemas.Template,
    operation_id="getTemplate",
    summary="Get a template by ID",
    description="Requires viewer if org-owned; a user's templates are visible to that user only.",
    response_model_exclude_none=True,
)
async def get_template(
    template_id: TemplateID, ctx: Ctx, db: Db, principal: AgentsReader
) -> schemas.Template:
    template = await service.load_for(ctx, db, principal, template_id, MemberRole.VIEWER)
    return service.to_schema(template)


@router.patch(
    "/templates/{templateID}",
    response_model=schemas.Template,
    operation_id="updateTemplate",
    summary="Update a template (requires member if org-owned)",
    response_model_exclude_none=True,
)
async def update_template(
    template_id: TemplateID, body: schemas.UpdateTemplateRequest, ctx: Ctx, db: Db, principal: AgentsWriter
) -> schemas.Template:
    template = await service.load_for(ctx, db, principal, template_id, MemberRole.MEMBER, lock=True)
    await service.update_template(ctx, db, template, body)
    await db.commit()
    return service.to_schema(template)


@router.delete(
    "/templates/{templateID}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="deleteTemplate",
    summary="Soft-delete a template (requires admin if org-owned)",
)
async def delete_template(template_id: TemplateID, ctx: Ctx, db: Db, principal: AgentsWriter) -> Response:
    template = await service.load_for(ctx, db, principal, template_id, MemberRole.ADMIN, lock=True)
    await service.delete_template(db, template)
    await db.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)

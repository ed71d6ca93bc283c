"""Template logic. Role rules: user-owned templates are their owner's alone; org-owned ones need
viewer to read, member to create or update, admin to delete."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from parley_catalog import secretstore
from parley_catalog.access import OwnedLoader, OwnerIds
from parley_catalog.context import CatalogContext
from parley_catalog.templates import schemas
from parley_catalog.templates.models import Template
from parley_catalog.timeutil import created_now, utcnow
from parley_common.blueprint import Blueprint
from parley_common.catalog_contract import AgentConfig


def to_schema(template: Template) -> schemas.Template:
    return schemas.Template.model_validate(template, from_attributes=True)


async def create_template(
    ctx: CatalogContext, db: AsyncSession, body: schemas.CreateTemplateRequest, owner: OwnerIds
) -> Template:
    config = body.config or AgentConfig(name=body.name, description=body.description)
    template = Template(
        owner_user_id=owner.user_id,
        owner_org_id=owner.org_id,
        name=body.name,
        description=body.description,
        config=config.model_dump(mode="json", exclude_none=True),
        secrets=secretstore.write(ctx.box, secretstore.inputs(body.secrets or [])),
        blueprint=(body.blueprint or Blueprint()).model_dump(mode="json"),
        **created_now(),
    )
    db.add(template)
    await db.flush()
    return template


# The template if the caller holds `min_role` on its owner (a user's: that user alone), else 404 / 403.
load_for = OwnedLoader(Template, "template")


async def update_template(
    ctx: CatalogContext, db: AsyncSession, template: Template, body: schemas.UpdateTemplateRequest
) -> None:
    fields = body.model_fields_set
    if body.name is not None:
        template.name = body.name
    if "description" in fields:
        template.description = body.description
    if body.config is not None:
        template.config = body.config.model_dump(mode="json", exclude_none=True)
    if body.secrets is not None:
        template.secrets = secretstore.write(ctx.box, secretstore.inputs(body.secrets), template.secrets)
    if body.blueprint is not None:
        template.blueprint = body.blueprint.model_dump(mode="json")
    template.updated_at = utcnow()
    await db.flush()


async def delete_template(db: AsyncSession, template: Template) -> None:
    template.deleted_at = utcnow()
    await db.flush()

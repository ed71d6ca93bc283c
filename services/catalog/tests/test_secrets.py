"""Secrets: encrypted at rest, masked in every response, revealed only to the runtime snapshot."""

from __future__ import annotations

import json
import uuid

import httpx
import nats
import pytest
from sqlalchemy import text

from parley_catalog.context import CatalogContext
from parley_catalog.crypto import MASK, SecretBox, SecretKeyError, mask
from parley_catalog.rotate_secrets import rotate
from parley_common import subjects
from parley_common.catalog_contract import AgentResolveReply

from .conftest import SECRET_KEY
from .support import World, assert_error, valid_blueprint

LONG = "sk-live-" + "a1b2c3d4" * 4 + "WXYZ"  # 44 characters
SHORT = "hunter2"


def test_mask_shows_last_four_of_long_values_only() -> None:
    assert mask(LONG) == MASK + "WXYZ"
    assert mask(SHORT) == MASK
    assert mask("x" * 15) == MASK and mask("x" * 15 + "Q") == MASK + "xxxQ"


def test_keys_rotate() -> None:
    old, new = SecretBox("old key"), SecretBox("new key")
    token = old.encrypt("value")
    both = SecretBox("new key, old key")
    assert both.decrypt(token) == "value"
    rotated = both.rotate(token)
    assert new.decrypt(rotated) == "value"
    with pytest.raises(SecretKeyError):
        new.decrypt(token)
    with pytest.raises(SecretKeyError):
        SecretBox(" , ")
    assert "value" not in token and "value" not in rotated


async def resolve(ctx: CatalogContext, agent_id: str) -> AgentResolveReply:
    nc = await nats.connect(ctx.settings.nats_url)
    try:
        msg = await nc.request(
            subjects.CATALOG_AGENT_RESOLVE, json.dumps({"agent_id": agent_id}).encode(), timeout=5
        )
    finally:
        await nc.close()
    return AgentResolveReply.model_validate_json(msg.data)


def no_raw(resp: httpx.Response, *values: str) -> None:
    for value in values:
        assert value not in resp.text, f"{resp.request.method} {resp.request.url} leaked a secret"


async def test_secret_values_never_come_back(world: World, ctx: CatalogContext) -> None:
    alice = await world.user()
    secrets = [{"key": "API_KEY", "value": LONG, "description": "CRM"}, {"key": "PIN", "value": SHORT}]
    created = await alice.catalog.post(
        "/users/me/agents", json={"config": {"name": "s"}, "secrets": secrets, "blueprint": valid_blueprint()}
    )
    assert created.status_code == 201
    assert created.json()["secrets"] == [
        {"key": "API_KEY", "value": MASK + "WXYZ", "description": "CRM"},
        {"key": "PIN", "value": MASK},
    ]
    agent_id = created.json()["id"]
    responses = [
        created,
        await alice.catalog.get(f"/agents/{agent_id}"),
        await alice.catalog.get("/users/me/agents"),
        await alice.catalog.get("/users/me/agents", params={"search": "s"}),
        await alice.catalog.patch(f"/agents/{agent_id}", json={"config": {"name": "s2"}}),
        await alice.catalog.patch(f"/agents/{agent_id}/status", json={"status": "live"}),
        await alice.catalog.post(f"/agents/{agent_id}/lint", json={}),
        await alice.catalog.post(
            "/users/me/templates", json={"name": "t", "secrets": [{"key": "T", "value": LONG}]}
        ),
        await alice.catalog.get("/users/me/templates"),
    ]
    template_id = responses[-2].json()["id"]
    responses.append(await alice.catalog.get(f"/templates/{template_id}"))
    responses.append(await alice.catalog.post("/users/me/agents", json={"template_id": template_id}))
    for resp in responses:
        assert resp.status_code < 300, resp.text
        no_raw(resp, LONG, SHORT)
    assert "secrets" not in responses[-2].json()  # the spec's Template has none

    # At rest: ciphertext only.
    async with ctx.db.engine.connect() as conn:
        stored = await conn.scalar(
            text("SELECT secrets::text FROM catalog.agents WHERE id = :id"), {"id": uuid.UUID(agent_id)}
        )
        template_row = await conn.scalar(
            text("SELECT secrets::text FROM catalog.templates WHERE id = :id"), {"id": uuid.UUID(template_id)}
        )
    assert stored is not None and LONG not in stored and SHORT not in stored and "ciphertext" in stored
    assert template_row is not None and LONG not in template_row

    # Only the runtime snapshot reveals them.
    reply = await resolve(ctx, agent_id)
    assert reply.ok and reply.snapshot is not None
    assert reply.snapshot.secrets == {"API_KEY": LONG, "PIN": SHORT}


async def test_writing_back_masks_keeps_the_secrets(world: World, ctx: CatalogContext) -> None:
    alice = await world.user()
    agent = await alice.create_agent(secrets=[{"key": "A", "value": LONG}, {"key": "B", "value": SHORT}])
    shown = (await alice.catalog.get(f"/agents/{agent['id']}")).json()["secrets"]
    # An editor saves what it read, changes one description, adds one secret and drops B.
    shown[0]["description"] = "edited"
    write = [shown[0], {"key": "C", "value": "brand-new-value-0000"}]
    patched = await alice.catalog.patch(f"/agents/{agent['id']}", json={"secrets": write})
    assert patched.status_code == 200
    assert patched.json()["secrets"] == [
        {"key": "A", "value": MASK + "WXYZ", "description": "edited"},
        {"key": "C", "value": MASK + "0000"},
    ]
    snapshot = (await resolve(ctx, agent["id"])).snapshot
    assert snapshot is not None and snapshot.secrets == {"A": LONG, "C": "brand-new-value-0000"}
    # A real new value replaces; the literal mask of another key does not leak across keys.
    await alice.catalog.patch(
        f"/agents/{agent['id']}",
        json={"secrets": [{"key": "A", "value": "rotated"}, {"key": "C", "value": MASK}]},
    )
    snapshot = (await resolve(ctx, agent["id"])).snapshot
    assert snapshot is not None and snapshot.secrets == {"A": "rotated", "C": MASK}


async def test_rotation_command_reencrypts_everything(world: World, ctx: CatalogContext) -> None:
    alice = await world.user()
    agent = await alice.create_agent(secrets=[{"key": "K", "value": LONG}])
    new_key = "rotated-key-" + uuid.uuid4().hex
    rotated_settings = ctx.settings.model_copy(update={"catalog_secret_key": f"{new_key},{SECRET_KEY}"})
    try:
        assert await rotate(rotated_settings) >= 1
        async with ctx.db.engine.connect() as conn:
            raw = await conn.scalar(
                text("SELECT secrets->0->>'ciphertext' FROM catalog.agents WHERE id = :id"),
                {"id": uuid.UUID(agent["id"])},
            )
        assert raw is not None
        assert SecretBox(new_key).decrypt(raw) == LONG
        with pytest.raises(SecretKeyError):
            SecretBox(SECRET_KEY).decrypt(raw)
        # The running service (old key only) cannot read it: a clear error, not a crash.
        reply = await resolve(ctx, agent["id"])
        assert not reply.ok and reply.error is not None and reply.error.code == "secret.unreadable"
    finally:
        # Back to the key every other test uses.
        back = ctx.settings.model_copy(update={"catalog_secret_key": f"{SECRET_KEY},{new_key}"})
        await rotate(back)
    snapshot = (await resolve(ctx, agent["id"])).snapshot
    assert snapshot is not None and snapshot.secrets == {"K": LONG}


async def test_secret_validation(world: World) -> None:
    alice = await world.user()
    for secrets in (
        [{"key": "K", "value": ""}],
        [{"key": "K"}],
        [{"key": "has space", "value": "v"}],
        [{"key": "K", "value": "x" * 10_001}],
        [{"key": f"K{i}", "value": "v"} for i in range(101)],
    ):
        resp = await alice.catalog.post("/users/me/agents", json={"secrets": secrets})
        assert_error(resp, 422, "request.validation_failed")

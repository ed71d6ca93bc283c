"""`catalog.agent.access` and `catalog.agent.resolve` over the real bus, as the gateway and the
runtime call them."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client

import parley_catalog
from parley_catalog.context import CatalogContext
from parley_common import subjects
from parley_common.auth_contract import CredentialKind, Principal
from parley_common.catalog_contract import AgentAccessReply, AgentAccessRequest, AgentResolveReply

from .support import User, World, valid_blueprint


@pytest.fixture
async def nc(ctx: CatalogContext) -> AsyncIterator[Client]:
    client = await nats.connect(ctx.settings.nats_url)
    yield client
    await client.close()


def person(user: User, org_id: uuid.UUID | None = None) -> Principal:
    return Principal(
        kind=CredentialKind.SESSION, credential_id=uuid.uuid4(), user_id=user.id, org_id=org_id, scopes=["*"]
    )


def client_token(user: User, agent_id: str, org_id: uuid.UUID | None = None) -> Principal:
    return Principal(
        kind=CredentialKind.CLIENT_TOKEN,
        credential_id=uuid.uuid4(),
        user_id=user.id,
        org_id=org_id,
        agent_id=agent_id,
        scopes=["chat:connect"],
        token_type="chat",
    )


async def access(nc: Client, agent_id: str, principal: Principal) -> AgentAccessReply:
    req = AgentAccessRequest(agent_id=agent_id, principal=principal)
    msg = await nc.request(subjects.CATALOG_AGENT_ACCESS, req.model_dump_json().encode(), timeout=5)
    return AgentAccessReply.model_validate_json(msg.data)


async def test_access_rules(world: World, nc: Client) -> None:
    owner, viewer, stranger = await world.user("owner"), await world.user("viewer"), await world.user("x")
    slug, org_id = await world.org(owner, {"viewer": viewer})
    draft = await owner.create_agent(f"/orgs/{slug}/agents", blueprint=valid_blueprint())
    live = await owner.create_agent(f"/orgs/{slug}/agents", blueprint=valid_blueprint())
    await owner.catalog.patch(f"/agents/{live['id']}/status", json={"status": "live"})
    personal = await owner.create_agent(blueprint=valid_blueprint())

    ok = await access(nc, draft["id"], person(viewer))
    assert ok.ok and ok.status == "draft" and ok.version == 1 and ok.agent_id == draft["id"]
    assert (await access(nc, live["id"], person(stranger))).ok  # live: anyone may talk to it
    assert (await access(nc, personal["id"], person(owner))).ok
    for agent_id, who in ((draft["id"], stranger), (personal["id"], viewer), (str(uuid.uuid4()), owner)):
        denied = await access(nc, agent_id, person(who))
        assert not denied.ok and denied.error is not None and denied.error.code == "resource.not_found"
    assert not (await access(nc, "not-a-uuid", person(owner))).ok

    # Client tokens: only the agent they name, within their org, and then as anyone else would.
    assert (await access(nc, live["id"], client_token(stranger, live["id"]))).ok
    assert (await access(nc, live["id"], client_token(owner, live["id"], org_id))).ok
    assert not (await access(nc, live["id"], client_token(owner, draft["id"], org_id))).ok
    assert not (await access(nc, live["id"], client_token(owner, live["id"], uuid.uuid4()))).ok
    assert not (await access(nc, draft["id"], client_token(owner, draft["id"], org_id))).ok  # not live
    assert not (await access(nc, live["id"], client_token(owner, "support-bot"))).ok

    # What `POST /api/realtime-token` reports of the agent: owner org, model and voice.
    assert (ok.owner_org_id, ok.model, ok.voice) == (org_id, None, None)
    voiced = await owner.create_agent(
        config={
            "name": "Voiced",
            "llm_engine": "openai",
            "llm_model": "gpt-4o-mini",
            "voice": {"tts": {"engine": "espeak", "voice": "en-gb"}},
        },
        blueprint=valid_blueprint(),
    )
    told = await access(nc, voiced["id"], person(owner))
    assert (told.owner_org_id, told.model, told.voice) == (None, "openai/gpt-4o-mini", "en-gb")

    # Deleted agents are gone for everyone.
    await owner.catalog.delete(f"/agents/{live['id']}")
    assert not (await access(nc, live["id"], person(owner))).ok


async def test_only_a_live_agents_answer_is_shared(world: World, nc: Client) -> None:
    """`shared` tells the gateway it may reuse the answer for principals of the same kind, org and
    named agent: only where no membership was asked (a live agent). A draft's viewer check asked
    auth about the caller's role, which no agent event announces a change of."""
    owner, viewer = await world.user("owner"), await world.user("viewer")
    slug, org_id = await world.org(owner, {"viewer": viewer})
    agent = await owner.create_agent(f"/orgs/{slug}/agents", blueprint=valid_blueprint())

    draft = await access(nc, agent["id"], person(viewer))
    assert draft.ok and draft.status == "draft" and not draft.shared
    await owner.catalog.patch(f"/agents/{agent['id']}/status", json={"status": "live"})
    live = await access(nc, agent["id"], person(viewer))
    assert live.ok and live.status == "live" and live.shared
    assert (await access(nc, agent["id"], client_token(owner, agent["id"], org_id))).shared
    await owner.catalog.patch(f"/agents/{agent['id']}/status", json={"status": "archived"})
    archived = await access(nc, agent["id"], person(viewer))
    assert archived.ok and not archived.shared
    refused = await access(nc, agent["id"], person(await world.user("stranger")))
    assert not refused.ok and not refused.shared


async def test_resolve_snapshot_and_versions(world: World, nc: Client) -> None:
    alice = await world.user()
    agent = await alice.create_agent(
        config={"name": "Snap", "llm_engine": "openai"},
        secrets=[{"key": "TOKEN", "value": "s3cr3t"}],
        blueprint=valid_blueprint(),
    )

    async def snapshot() -> dict[str, Any]:
        msg = await nc.request(
            subjects.CATALOG_AGENT_RESOLVE, json.dumps({"agent_id": agent["id"]}).encode(), timeout=5
        )
        reply = AgentResolveReply.model_validate_json(msg.data)
        assert reply.ok and reply.snapshot is not None, reply
        return reply.snapshot.model_dump(mode="json")

    first = await snapshot()
    assert first["version"] == 1 and first["status"] == "draft" and first["owner_user_id"] == str(alice.id)
    assert first["config"]["name"] == "Snap" and first["secrets"] == {"TOKEN": "s3cr3t"}
    assert first["blueprint"] == agent["blueprint"] and first["protocol"] is None and first["tools"] == []
    await alice.catalog.patch(f"/agents/{agent['id']}", json={"config": {"name": "Snap 2"}})
    second = await snapshot()
    assert second["version"] == 2 and second["config"]["name"] == "Snap 2"
    await alice.catalog.patch(f"/agents/{agent['id']}/status", json={"status": "live"})
    assert (await snapshot())["version"] == 3
    await alice.catalog.delete(f"/agents/{agent['id']}")
    msg = await nc.request(
        subjects.CATALOG_AGENT_RESOLVE, json.dumps({"agent_id": agent["id"]}).encode(), timeout=5
    )
    gone = AgentResolveReply.model_validate_json(msg.data)
    assert not gone.ok and gone.error is not None and gone.error.code == "resource.not_found"


async def test_malformed_bus_requests_get_error_replies(nc: Client) -> None:
    for subject in (subjects.CATALOG_AGENT_ACCESS, subjects.CATALOG_AGENT_RESOLVE):
        for payload in (
            b"",
            b"not json",
            b"[]",
            b"{}",
            b'{"agent_id": 5}',
            b'{"agent_id": "' + b"x" * 300 + b'"}',
        ):
            msg = await nc.request(subject, payload, timeout=5)
            reply = json.loads(msg.data)
            assert reply["ok"] is False and reply["error"]["code"] == "bus.bad_message", (subject, payload)
    # Still serving afterwards.
    msg = await nc.request(
        subjects.CATALOG_AGENT_RESOLVE, json.dumps({"agent_id": str(uuid.uuid4())}).encode(), timeout=5
    )
    assert json.loads(msg.data)["error"]["code"] == "resource.not_found"


# What makes a subscription: a FastStream subscriber, a nats-py subscription, or a durable pull
# consumer (a `DurableConsumer` subclass started on a connection).
_SUBSCRIBING = re.compile(
    r"\.subscriber\(|(?<!\bbus)\.subscribe\(|pull_subscribe\(|\b\w+Consumer\(ctx\.settings"
)


def test_every_subscription_is_declared_in_bus_py() -> None:
    """bus.py is where a reader finds everything the catalog listens to: no other module subscribes."""
    package = Path(parley_catalog.__file__).parent
    elsewhere = [
        f"{path.relative_to(package)}:{number}"
        for path in sorted(package.rglob("*.py"))
        if path.name != "bus.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if _SUBSCRIBING.search(line)
    ]
    assert elsewhere == []
    declared = _SUBSCRIBING.findall((package / "bus.py").read_text())
    assert len(declared) == 3  # the answer() helper's subscriber and the two consumers

"""Property-based API test of the catalog with schemathesis, in-process over ASGI.

The catalog and a real auth app (credentials are verified over the bus) run against real
PostgreSQL, Redis and NATS with their lifespans started on schemathesis's event loop thread;
`st_apps` stops them at teardown. Every case is sent authenticated (a session cookie or an API
key, Hypothesis draws which) and, for about half of them, path parameters and a few body fields
are replaced by real identifiers made for that case (agents, templates, tools, conversations, the
caller's org), so success paths are exercised too, not only 401/404/422.

Checks: no 5xx, status codes, content types and response schemas conform to the catalog's
OpenAPI. Deterministic (fixed seed, derandomized), bounded by `MAX_EXAMPLES` per operation.
(`schemathesis.pytest.from_fixture` breaks on pytest 9.2, so the schema is read from an app that
is never started; see `parley_devstack.api_fuzz.load_schema`.)
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import nats
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.python import asgi

from parley_auth.app import build_app as build_auth_app
from parley_catalog.app import build_app
from parley_catalog.settings import CatalogSettings
from parley_common import subjects
from parley_common.jetstream import DurableConsumer
from parley_devstack import api_fuzz as fuzz
from parley_devstack.testing import Infra

from .conftest import auth_settings_for, catalog_settings_for
from .support import COOKIE, PASSWORD, valid_blueprint

# One test item per API operation, all with the same node id: pytest-xdist would run only one
# of them, so `make test` runs this module in its own, serial, pytest run.
pytestmark = pytest.mark.serial

MAX_EXAMPLES = 20
SEED = 20261121


@dataclass
class Account:
    user_id: str
    session: str
    api_key: str


@dataclass
class Api:
    """Calls the apps through the same in-process client (and event loop) schemathesis uses."""

    auth_app: Any
    catalog_app: Any

    def call(self, app: Any, method: str, path: str, *, session: str, json_body: Any = None) -> Any:
        with asgi.get_client(app) as client:
            resp = client.request(method, path, json=json_body, cookies={COOKIE: session})
        assert resp.status_code < 300, f"{method} {path}: {resp.status_code} {resp.text}"
        return resp.json() if resp.content else None

    def new_account(self) -> Account:
        email = f"{fuzz.unique('st')}@example.com"
        with asgi.get_client(self.auth_app) as client:
            resp = client.post("/auth/signup", json={"email": email, "password": PASSWORD, "name": "Fuzz"})
            assert resp.status_code == 201, resp.text
            session = resp.cookies[COOKIE]
            assert session is not None
        user = self.call(self.auth_app, "GET", "/users/me", session=session)
        key = self.call(self.auth_app, "POST", "/auth/api-keys", session=session, json_body={"name": "st"})
        return Account(user_id=user["id"], session=session, api_key=key["key"])

    def new_org(self, owner: Account) -> str:
        slug = fuzz.unique("org")
        self.call(
            self.auth_app, "POST", "/orgs", session=owner.session, json_body={"name": "Fuzz", "slug": slug}
        )
        return slug

    def catalog(self, method: str, path: str, owner: Account, body: Any = None) -> Any:
        return self.call(self.catalog_app, method, path, session=owner.session, json_body=body)


def publish_conversations(nats_url: str, agent_id: str, count: int) -> list[str]:
    """Conversations with a few messages each, published as a runtime would."""

    async def run() -> list[str]:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        ids = []
        for _ in range(count):
            conv = str(uuid.uuid4())
            ids.append(conv)
            at = datetime.now(UTC).isoformat()
            events: list[dict[str, Any]] = [
                {"type": "conversation.started", "agent_id": agent_id, "channel": "chat"},
                *[
                    {
                        "type": "conversation.message",
                        "message_id": str(uuid.uuid4()),
                        "role": "user",
                        "content": f"m{i}",
                        "seq": i,
                    }
                    for i in range(3)
                ],
            ]
            for event in events:
                body = {"event_id": str(uuid.uuid4()), "conversation_id": conv, "at": at, **event}
                await js.publish(subjects.conversation_event(conv), json.dumps(body).encode())
        await nc.close()
        return ids

    return asyncio.run(run())


@dataclass
class Authenticator:
    api: Api
    main: Account
    org_slug: str
    shared_agent: str
    conversations: list[str]

    def fresh_agent(self, in_org: bool) -> str:
        path = f"/orgs/{self.org_slug}/agents" if in_org else "/users/me/agents"
        body = {"config": {"name": "fuzz target"}, "blueprint": valid_blueprint()}
        agent = self.api.catalog("POST", path, self.main, body)
        return str(agent["id"])

    def prepare(
        self, case: schemathesis.Case[Any], *, use_key: bool, use_real_ids: bool, in_org: bool
    ) -> dict[str, str]:
        # schemathesis ends every lifespan after each test; the catalog's is restarted by the call
        # itself, auth's (reached only over the bus) must be restarted here.
        with asgi.get_client(self.api.auth_app):
            pass
        if use_real_ids:
            self._plug_real_ids(case, in_org)
        if use_key:
            return {"Authorization": f"Bearer {self.main.api_key}"}
        return {"Cookie": f"{COOKIE}={self.main.session}"}

    def _plug_real_ids(self, case: schemathesis.Case[Any], in_org: bool) -> None:
        params = case.path_parameters
        if params is not None:
            if "orgSlug" in params:
                params["orgSlug"] = self.org_slug
            if "agentID" in params:
                params["agentID"] = self.fresh_agent(in_org)
            if "templateID" in params:
                template = self.api.catalog(
                    "POST", "/users/me/templates", self.main, {"name": "fuzz template"}
                )
                params["templateID"] = template["id"]
            if "conversationID" in params:
                params["conversationID"] = self.conversations[len(fuzz.unique("c")) % len(self.conversations)]
            if "toolID" in params:
                body: dict[str, Any] = {
                    "name": f"tool_{uuid.uuid4().hex[:8]}",
                    "description": "fuzz",
                    "parameters": {"type": "object", "properties": {}},
                    "webhook": {"url": "http://127.0.0.1:9/blocked"},
                }
                tool = self.api.catalog("POST", f"/agents/{self.shared_agent}/tools", self.main, body)
                params["toolID"] = tool["id"]
            if "id" in params:  # an adversarial test of the shared agent
                body = {
                    "name": "fuzz",
                    "persona": "p",
                    "goal": "g",
                    "node_id": "talk",
                    "criteria": [{"id": "c", "kind": "must_not", "text": 'Say "x"'}],
                }
                made = self.api.catalog(
                    "POST", f"/agents/{self.shared_agent}/adversarial-tests", self.main, body
                )
                params["id"] = made["id"]
            if "node_id" in params:
                params["node_id"] = "talk"
        query = case.query
        if isinstance(query, dict) and "agent_id" in query:
            query["agent_id"] = self.shared_agent
            query.pop("org_slug", None)
        if isinstance(case.body, dict) and "template_id" in case.body:
            template = self.api.catalog("POST", "/users/me/templates", self.main, {"name": "fuzz template"})
            case.body["template_id"] = template["id"]


# Module scope: these apps join the `auth`/`catalog` queue groups on the session's NATS; they share
# the secrets of every other test app, and are stopped before the next module starts its own.
# schemathesis ends the apps' lifespans after each of the 57 operations, and a durable consumer's
# stop waits for the fetch under way: with a quiet fetch of 0.1 s rather than 1 s, the module takes
# about a minute less.
@pytest.fixture(scope="module")
def st_apps(migrated: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    auth_app = build_auth_app(auth_settings_for(migrated, tmp_path_factory.mktemp("mail")))
    catalog_app = build_app(catalog_settings_for(migrated))
    with pytest.MonkeyPatch.context() as patch, fuzz.fuzzing():
        patch.setattr(DurableConsumer, "fetch_timeout_s", 0.1)
        yield auth_app, catalog_app


@pytest.fixture(scope="module")
def authenticator(st_apps: tuple[Any, Any], migrated: Infra) -> Authenticator:
    api = Api(*st_apps)
    main = api.new_account()
    slug = api.new_org(main)
    shared = api.catalog(
        "POST", "/users/me/agents", main, {"config": {"name": "shared"}, "blueprint": valid_blueprint()}
    )
    conversations = publish_conversations(migrated.nats_url, shared["id"], 4)
    deadline = time.monotonic() + 15
    while True:  # wait until the consumer has persisted them
        page = api.catalog("GET", f"/agents/{shared['id']}/conversations", main)
        if len(page["items"]) == len(conversations):
            break
        assert time.monotonic() < deadline, "conversations were not persisted"
        time.sleep(0.05)
    return Authenticator(api, main, slug, shared["id"], conversations)


schema = fuzz.load_schema(build_app(CatalogSettings()), seed=SEED, max_examples=MAX_EXAMPLES)


@schema.parametrize()
@schema.given(use_key=st.booleans(), use_real_ids=st.booleans(), in_org=st.booleans())
def test_catalog_api_conforms_to_its_openapi(
    case: schemathesis.Case[Any],
    use_key: bool,
    use_real_ids: bool,
    in_org: bool,
    st_apps: tuple[Any, Any],
    authenticator: Authenticator,
) -> None:
    headers = authenticator.prepare(case, use_key=use_key, use_real_ids=use_real_ids, in_org=in_org)
    fuzz.call_and_validate(case, st_apps[1], headers, use_key=use_key)

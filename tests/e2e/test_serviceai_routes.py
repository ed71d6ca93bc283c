"""The ServiceAi voice-session routes of the session gateway (`POST /api/realtime-token`,
`GET /api/csrf-token`, `POST /api/realtime/webrtc`) with the real auth, catalog and gateway apps on
a NATS and a Redis of this module's own, which the fault tests stop and start again.

What is checked: which agent each kind of credential is bound to and who is refused (403 with the
envelope, across owners too), the union object and its client secret (a real client token of the
agent, revoked with the session that minted it), the per-user and per-IP rate limits, the CSRF
token's binding to its credential, the offer's validation, and what a client sees while NATS or
Redis is down (the contract's `fallback: true`, or a clean 503/504) and after they are back.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from parley_auth.app import build_app as build_auth_app
from parley_auth.migrate import upgrade as upgrade_auth
from parley_auth.settings import AuthSettings
from parley_catalog.app import build_app as build_catalog_app
from parley_catalog.migrate import upgrade as upgrade_catalog
from parley_catalog.settings import CatalogSettings
from parley_common.auth_contract import CredentialKind
from parley_common.chatty_contract import AGENT_HEADER, CSRF_HEADER, RealtimeTokenResponse
from parley_devstack.postgres import create_database, drop_database, with_database
from parley_devstack.servers import NatsServer, ValkeyServer, stop_all
from parley_session_gateway.app import build_app as build_gateway_app
from parley_session_gateway.settings import GatewaySettings

NO_LIMIT = "1000000/minute"
SDP = Path(__file__).resolve().parents[2] / "services/session_gateway/tests/sdp/chromium-offer.sdp"
OFFER = "".join(line + "\r\n" for line in SDP.read_text().splitlines())
COOKIE = "kivox_session"
BLUEPRINT = {
    "entries": [
        {
            "name": "main",
            "workflow": {
                "nodes": [
                    {"id": "start", "type": "CONTROL.START", "data": {"greeting": "Hi!"}},
                    {"id": "chat", "type": "CONTROL.DIALOG", "data": {"prompt": "Help."}},
                    {"id": "end", "type": "CONTROL.END", "data": {}},
                ],
                "edges": [{"source": "start", "target": "chat"}, {"source": "chat", "target": "end"}],
            },
        }
    ]
}


@dataclass
class Stack:
    auth: FastAPI
    catalog: FastAPI
    gateway: FastAPI
    nats: NatsServer
    valkey: ValkeyServer

    def client(self, app: FastAPI, address: str = "10.0.0.1", **kwargs: Any) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(address, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://parley", **kwargs)


@pytest.fixture(scope="module")
async def stack(infra: Any, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    root = tmp_path_factory.mktemp("serviceai")
    nats = NatsServer(root / "nats", log_path=root / "nats.log")
    valkey = ValkeyServer(root / "valkey", persistent=False, log_path=root / "valkey.log")
    for server in (nats, valkey):
        server.start()
    for server in (nats, valkey):
        await asyncio.to_thread(server.wait_ready, 30)
    server_url = with_database(infra.database_url, "postgres")
    database = f"parley_sai_{secrets.token_hex(6)}"
    await asyncio.to_thread(create_database, server_url, database, if_missing=False)
    database_url = with_database(infra.database_url, database)
    await asyncio.to_thread(upgrade_auth, database_url)
    await asyncio.to_thread(upgrade_catalog, database_url)
    common: dict[str, Any] = {
        "database_url": database_url,
        "nats_url": nats.url,
        "redis_url": valkey.url,
        "log_json": False,
        "bus_request_timeout_s": 0.5,
        "redis_retries": 0,
        "redis_pool_timeout_s": 0.5,
    }
    auth = build_auth_app(
        AuthSettings(
            **common,
            auth_token_secret=secrets.token_urlsafe(32),
            auth_mail_dir=root / "mail",
            auth_rate_signup_ip=NO_LIMIT,
            auth_rate_key_create_ip=NO_LIMIT,
            auth_rate_key_create_account=NO_LIMIT,
            auth_rate_token_mint_account=NO_LIMIT,
        )
    )
    catalog = build_catalog_app(CatalogSettings(**common, catalog_secret_key=secrets.token_urlsafe(32)))
    gateway = build_gateway_app(
        GatewaySettings(
            **common,
            gateway_rate_realtime_token="4/minute",
            gateway_auth_cache_ttl_s=0,
            public_url="https://voice.example.com",
            # The media edge is test_webrtc_media.py's: here a valid offer stops at 501.
            gateway_webrtc_media=False,
        )
    )
    try:
        async with (
            auth.router.lifespan_context(auth),
            catalog.router.lifespan_context(catalog),
            gateway.router.lifespan_context(gateway),
        ):
            yield Stack(auth, catalog, gateway, nats, valkey)
    finally:
        await asyncio.to_thread(stop_all, [nats, valkey], 10)
        await asyncio.to_thread(drop_database, server_url, database)


@dataclass
class Person:
    stack: Stack
    cookie: str
    id: str

    def http(self, app: FastAPI, **kwargs: Any) -> httpx.AsyncClient:
        return self.stack.client(app, cookies={COOKIE: self.cookie}, **kwargs)

    async def agent(self, path: str = "/users/me/agents", live: bool = False, **config: Any) -> str:
        async with self.http(self.stack.catalog) as http:
            resp = await http.post(path, json={"config": {"name": "Voice", **config}, "blueprint": BLUEPRINT})
            assert resp.status_code == 201, resp.text
            agent_id = str(resp.json()["id"])
            if live:
                assert (
                    await http.patch(f"/agents/{agent_id}/status", json={"status": "live"})
                ).status_code == 200
        return agent_id

    async def key(self, scopes: list[str]) -> str:
        async with self.http(self.stack.auth) as http:
            resp = await http.post("/auth/api-keys", json={"name": "k", "scopes": scopes})
            assert resp.status_code == 201, resp.text
            return str(resp.json()["key"])


async def person(stack: Stack) -> Person:
    async with stack.client(stack.auth) as http:
        email = f"sai-{uuid.uuid4().hex[:10]}@example.com"
        resp = await http.post(
            "/auth/signup", json={"email": email, "password": "correct horse battery", "name": "S"}
        )
        assert resp.status_code == 201, resp.text
        me = await http.get("/users/me")
        return Person(stack, resp.cookies[COOKIE], str(me.json()["id"]))


def assert_error(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["code"] == code and body["doc_url"].endswith("#" + code.replace(".", "-").replace("_", "-"))
    return dict(body)


async def eventually(probe: Callable[[], Awaitable[bool]], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await probe():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_the_union_object_and_its_client_secret(stack: Stack) -> None:
    alice = await person(stack)
    agent = await alice.agent(
        llm_engine="openai", llm_model="gpt-4o-mini", voice={"tts": {"engine": "espeak", "voice": "en-gb"}}
    )
    async with alice.http(stack.gateway) as http:
        resp = await http.post(
            "/api/realtime-token", headers={AGENT_HEADER: agent}, json={"directWebRTC": True}
        )
        assert resp.status_code == 200, resp.text
        body = resp.json()
        RealtimeTokenResponse.model_validate(body)
        assert body["fallback"] is False and body["directWebRTC"] is False and body["useWebRTC"] is False
        assert (body["model"], body["voice"]) == ("openai/gpt-4o-mini", "en-gb")
        assert 590 <= body["expiresInSeconds"] <= 600 and "metadata" not in body  # a personal agent
        assert "wss://voice.example.com/realtime?token=" in body["message"]
        # No body at all is the same request.
        assert (await http.post("/api/realtime-token", headers={AGENT_HEADER: agent})).status_code == 200
        assert_error(await http.get("/api/realtime-token"), 405, "request.method_not_allowed")
    # The client secret is a client token of that agent, rooted in the session that minted it.
    token = await stack.gateway.state.realtime.auth.verify(body["clientSecret"])
    assert token.kind is CredentialKind.CLIENT_TOKEN and token.agent_id == agent
    assert str(token.credential_id) == body["sessionId"] and token.session_id is not None
    # It is itself bound to its agent: it mints (and asks for CSRF tokens) without a header.
    async with stack.client(
        stack.gateway, headers={"Authorization": f"Bearer {body['clientSecret']}"}
    ) as end_user:
        assert (await end_user.post("/api/realtime-token")).status_code == 200
        assert (await end_user.get("/api/csrf-token")).status_code == 200
    # Logging the session out ends it.
    async with alice.http(stack.auth) as http:
        assert (await http.delete("/auth/sessions/me")).status_code == 204
    async with stack.client(
        stack.gateway, headers={"Authorization": f"Bearer {body['clientSecret']}"}
    ) as end_user:
        assert_error(await end_user.get("/api/csrf-token"), 401, "auth.credential_revoked")


async def test_org_agents_carry_the_organization(stack: Stack) -> None:
    alice = await person(stack)
    slug = f"sai-{uuid.uuid4().hex[:8]}"
    async with alice.http(stack.auth) as http:
        org = (await http.post("/orgs", json={"name": "Acme", "slug": slug})).json()
    agent = await alice.agent(f"/orgs/{slug}/agents")
    async with alice.http(stack.gateway) as http:
        body = (await http.post("/api/realtime-token", headers={AGENT_HEADER: agent})).json()
    assert body["metadata"] == {"organizationId": org["id"]}
    assert "model" not in body and "voice" not in body  # the agent names neither


async def test_binding_and_refusals(stack: Stack) -> None:
    alice, mallory = await person(stack), await person(stack)
    draft, live, other = await alice.agent(), await alice.agent(live=True), await alice.agent(live=True)
    key = await alice.key(["tokens:mint"])
    async with stack.client(stack.auth, headers={"Authorization": f"Bearer {key}"}) as http:
        minted = await http.post("/voice/tokens", json={"workflow_id": live})
    voice_token = minted.json()["token"]
    weak_key = await alice.key(["agents:read"])
    routes: list[tuple[str, str]] = [("POST", "/api/realtime-token"), ("GET", "/api/csrf-token")]
    async with (
        stack.client(stack.gateway) as anon,
        alice.http(stack.gateway) as owner,
        mallory.http(stack.gateway) as stranger,
        stack.client(stack.gateway, headers={"Authorization": f"Bearer {voice_token}"}) as end_user,
    ):
        for method, path in routes:
            assert_error(
                await anon.request(method, path, headers={AGENT_HEADER: live}), 401, "auth.unauthenticated"
            )
            assert_error(await owner.request(method, path), 403, "chatty.agent_required")
            # Another owner's draft, an unknown agent, garbage: the same answer.
            for named in (draft, str(uuid.uuid4()), "not-an-agent"):
                body = assert_error(
                    await stranger.request(method, path, headers={AGENT_HEADER: named}),
                    403,
                    "chatty.not_entitled",
                )
                assert "may talk to" in body["message"]
            # A live agent is open to anyone, as on /realtime.
            assert (await stranger.request(method, path, headers={AGENT_HEADER: live})).status_code == 200
            # A client token is bound to its own agent, and only to it.
            assert (await end_user.request(method, path)).status_code == 200
            assert (await end_user.request(method, path, headers={AGENT_HEADER: live})).status_code == 200
            assert_error(
                await end_user.request(method, path, headers={AGENT_HEADER: other}),
                403,
                "chatty.not_entitled",
            )
    # Minting with an API key needs `tokens:mint`, as POST /chat/tokens does.
    async with stack.client(stack.gateway, headers={"Authorization": f"Bearer {weak_key}"}) as weak:
        assert_error(
            await weak.post("/api/realtime-token", headers={AGENT_HEADER: live}),
            403,
            "auth.insufficient_scope",
        )


async def test_realtime_tokens_are_rate_limited_per_user(stack: Stack) -> None:
    alice, bob = await person(stack), await person(stack)
    agent = await alice.agent(live=True)
    async with alice.http(stack.gateway) as http:
        for _ in range(4):
            assert (await http.post("/api/realtime-token", headers={AGENT_HEADER: agent})).status_code == 200
        limited = await http.post("/api/realtime-token", headers={AGENT_HEADER: agent})
        body = assert_error(limited, 429, "rate_limit.exceeded")
        assert int(limited.headers["Retry-After"]) >= 1 and body["params"]["action"] == "realtime-token"
    async with bob.http(stack.gateway) as http:
        assert (await http.post("/api/realtime-token", headers={AGENT_HEADER: agent})).status_code == 200


async def test_the_offer_csrf_and_sdp_checks(stack: Stack) -> None:
    alice, mallory = await person(stack), await person(stack)
    agent = await alice.agent(live=True)
    headers = {AGENT_HEADER: agent}
    async with alice.http(stack.gateway, address="10.0.1.1") as http:
        csrf = (await http.get("/api/csrf-token", headers=headers)).json()["token"]
        assert len(csrf) >= 32
        # A valid offer with its CSRF token: checked through, then 501 (media turned off here).
        resp = await http.post(
            "/api/realtime/webrtc", headers={**headers, CSRF_HEADER: csrf}, json={"sdp": OFFER}
        )
        assert_error(resp, 501, "webrtc.unavailable")
        # The token is reusable for its 5 minutes; a broken offer is named.
        resp = await http.post(
            "/api/realtime/webrtc", headers={**headers, CSRF_HEADER: csrf}, json={"sdp": "v=0"}
        )
        body = assert_error(resp, 400, "webrtc.invalid_sdp")
        assert "o=" in body["message"]
        # The third request of this minute from this address: the CSRF token is checked first.
        assert_error(
            await http.post("/api/realtime/webrtc", headers=headers, json={"sdp": OFFER}), 403, "csrf.invalid"
        )
        # The fourth: 3 requests a minute per address, whatever they carry.
        limited = await http.post(
            "/api/realtime/webrtc", headers={**headers, CSRF_HEADER: csrf}, json={"sdp": OFFER}
        )
        assert_error(limited, 429, "rate_limit.exceeded")
    async with alice.http(stack.gateway, address="10.0.1.2") as http:
        for body_value in ({"sdp": ""}, {"offer": OFFER}, "not json", {"sdp": 5}):
            kwargs: dict[str, Any] = (
                {"json": body_value} if not isinstance(body_value, str) else {"content": body_value}
            )
            resp = await http.post("/api/realtime/webrtc", headers={**headers, CSRF_HEADER: csrf}, **kwargs)
            if resp.status_code == 429:
                break
            assert_error(resp, 400, "webrtc.invalid_sdp")
    # Every request counts against the address, even one that is not JSON or has no credential.
    async with stack.client(stack.gateway, address="10.0.1.9") as http:
        for _ in range(3):
            assert_error(
                await http.post("/api/realtime/webrtc", content="{not json"), 401, "auth.unauthenticated"
            )
        assert_error(await http.post("/api/realtime/webrtc", json={"sdp": OFFER}), 429, "rate_limit.exceeded")
    # Another credential cannot use alice's CSRF token, nor a made-up one.
    async with mallory.http(stack.gateway, address="10.0.1.3") as http:
        for token in (csrf, "x" * 43, "y" * 500):
            resp = await http.post(
                "/api/realtime/webrtc", headers={**headers, CSRF_HEADER: token}, json={"sdp": OFFER}
            )
            assert_error(resp, 403, "csrf.invalid")
    # Nor can alice's other session.
    async with alice.http(stack.auth) as account:
        email = (await account.get("/users/me")).json()["email"]
    async with stack.client(stack.auth) as login:
        again = await login.post("/auth/sessions", json={"email": email, "password": "correct horse battery"})
        other_cookie = again.cookies[COOKIE]
    async with stack.client(stack.gateway, address="10.0.1.4", cookies={COOKIE: other_cookie}) as http:
        resp = await http.post(
            "/api/realtime/webrtc", headers={**headers, CSRF_HEADER: csrf}, json={"sdp": OFFER}
        )
        assert_error(resp, 403, "csrf.invalid")
    # The binding comes before the CSRF token: another owner's draft is 403 chatty.not_entitled.
    draft = await alice.agent()
    async with mallory.http(stack.gateway, address="10.0.1.5") as http:
        resp = await http.post(
            "/api/realtime/webrtc", headers={AGENT_HEADER: draft, CSRF_HEADER: csrf}, json={"sdp": OFFER}
        )
        assert_error(resp, 403, "chatty.not_entitled")


async def test_nats_down_means_fallback_then_recovery(stack: Stack) -> None:
    alice = await person(stack)
    agent = await alice.agent(live=True)
    headers = {AGENT_HEADER: agent}
    async with alice.http(stack.gateway, address="10.0.2.1") as http:
        csrf = (await http.get("/api/csrf-token", headers=headers)).json()["token"]
        await asyncio.to_thread(stack.nats.stop, 10)
        try:
            # The mint cannot happen: the contract's 500 with `fallback: true`, nothing else.
            resp = await http.post("/api/realtime-token", headers=headers)
            assert resp.status_code == 500, resp.text
            assert resp.json() == {
                "fallback": True,
                "directWebRTC": False,
                "useWebRTC": False,
                "message": "The realtime session could not be minted; use the HTTP fallback.",
            }
            # The other routes answer with the envelope of an outage.
            for resp in (
                await http.get("/api/csrf-token", headers=headers),
                await http.post(
                    "/api/realtime/webrtc", headers={**headers, CSRF_HEADER: csrf}, json={"sdp": OFFER}
                ),
            ):
                assert resp.status_code in (503, 504), resp.text
                assert resp.json()["code"] in ("service.unavailable", "bus.timeout")
        finally:
            stack.nats.restart()
            await asyncio.to_thread(stack.nats.wait_ready, 30)

        async def minted() -> bool:
            return (await http.post("/api/realtime-token", headers=headers)).status_code == 200

        await eventually(minted, "a mint after NATS is back")

    async def whole() -> bool:  # every service back on the bus, not only the mint's: the next test's too
        for app in (stack.auth, stack.catalog, stack.gateway):
            async with alice.http(app) as probe:
                if (await probe.get("/readyz")).status_code != 200:
                    return False
        return True

    await eventually(whole, "every service ready after NATS is back")


async def test_redis_down_means_fallback_then_recovery(stack: Stack) -> None:
    alice = await person(stack)
    agent = await alice.agent(live=True)
    headers = {AGENT_HEADER: agent}
    async with alice.http(stack.gateway, address="10.0.3.1") as http:
        await asyncio.to_thread(stack.valkey.stop, 10)
        try:
            resp = await http.post("/api/realtime-token", headers=headers)
            assert resp.status_code == 500 and resp.json()["fallback"] is True, resp.text
            assert_error(await http.get("/api/csrf-token", headers=headers), 503, "service.unavailable")
            resp = await http.post(
                "/api/realtime/webrtc", headers={**headers, CSRF_HEADER: "x"}, json={"sdp": OFFER}
            )
            assert_error(resp, 503, "service.unavailable")
        finally:
            stack.valkey.restart()
            await asyncio.to_thread(stack.valkey.wait_ready, 30)

        async def served() -> bool:
            return (await http.get("/api/csrf-token", headers=headers)).status_code == 200

        await eventually(served, "a CSRF token after Redis is back")

        async def minted() -> bool:  # a mint also needs auth's Redis and the bus, which recover on their own
            return (await http.post("/api/realtime-token", headers=headers)).status_code == 200

        await eventually(minted, "a mint after Redis is back")

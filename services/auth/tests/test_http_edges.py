"""Malformed requests, body limits, unknown routes, client version gate, Turnstile, rate limits."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from parley_auth.app import build_app
from parley_auth.context import AuthContext
from parley_auth.security.turnstile import CloudflareTurnstile, DisabledTurnstile
from parley_auth.settings import AuthSettings

from .support import Accounts, assert_envelope, new_client, unique_email


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"{not json", "application/json", 400, "request.malformed_json"),
        (b"", "application/json", 422, "request.validation_failed"),
        (b"[1, 2]", "application/json", 422, "request.validation_failed"),
        (json.dumps({"email": 5, "password": [], "name": None}).encode(), "application/json", 422, None),
        (
            json.dumps({"email": "x@example.com", "password": "p" * 300, "name": "n"}).encode(),
            "application/json",
            422,
            None,
        ),
        (
            json.dumps({"email": "x@example.com", "password": "longenough", "name": "n" * 10_000}).encode(),
            "application/json",
            422,
            None,
        ),
        (
            json.dumps({"email": "not-an-email", "password": "longenough", "name": "n"}).encode(),
            "application/json",
            422,
            None,
        ),
        (b"email=a&password=b", "application/x-www-form-urlencoded", 422, None),
        (b"\xff\xfe\x00garbage", "application/json", 400, "request.malformed_json"),
    ],
)
async def test_malformed_signup_bodies(
    anon: httpx.AsyncClient, body: bytes, content_type: str, status: int, code: str | None
) -> None:
    resp = await anon.post("/auth/signup", content=body, headers={"content-type": content_type})
    envelope = assert_envelope(resp, status, code)
    if status == 422:
        assert envelope["code"] == "request.validation_failed" and envelope["params"]["errors"]


async def test_oversized_body_is_413(anon: httpx.AsyncClient) -> None:
    huge = json.dumps({"email": "a@example.com", "password": "x" * 2_000_000, "name": "n"})
    assert_envelope(
        await anon.post("/auth/signup", content=huge, headers={"content-type": "application/json"}),
        413,
        "request.body_too_large",
    )


async def test_oversized_chunked_body_is_413(anon: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b"x" * 65_536

    resp = await anon.post("/auth/signup", content=chunks(), headers={"content-type": "application/json"})
    assert_envelope(resp, 413, "request.body_too_large")


async def test_unknown_route_and_method(anon: httpx.AsyncClient, accounts: Accounts) -> None:
    assert_envelope(await anon.get("/nope"), 404, "request.route_not_found")
    assert_envelope(await anon.put("/auth/signup"), 405, "request.method_not_allowed")
    user = await accounts.create()
    assert_envelope(await user.client.patch("/orgs/x/members/not-a-uuid", json={"role": "viewer"}), 422)


async def test_version_and_upgrade_gate(auth_settings: AuthSettings) -> None:
    settings = auth_settings.model_copy(update={"api_version": "2.3.0", "min_client_version": "2.0.0"})
    app = build_app(settings)
    async with new_client(app) as client:
        versions = {"apiVersion": "2.3.0", "minClientVersion": "2.0.0"}
        assert (await client.get("/version")).json() == versions
        # The ServiceAi contract's path answers the same.
        assert (await client.get("/api/version")).json() == versions
        old = await client.get("/version", headers={"X-Client-Version": "1.9.9"})
        body = assert_envelope(old, 426, "client.upgrade_required")
        assert body["params"] == {"client_version": "1.9.9", "min_version": "2.0.0"}
        # The upgrade envelope: the Error envelope plus what to upgrade to.
        assert (body["apiVersion"], body["minClientVersion"]) == ("2.3.0", "2.0.0")
        assert (await client.get("/api/version", headers={"X-Client-Version": "1.0.0"})).status_code == 426
        assert (await client.get("/version", headers={"X-Client-Version": "2.0.1"})).status_code == 200
        assert (await client.get("/version", headers={"X-Client-Version": "3.0.0"})).status_code == 200
        assert_envelope(await client.get("/version", headers={"X-Client-Version": "banana"}), 422)
        assert_envelope(await client.post("/auth/signup", json={}, headers={"X-Client-Version": "1.0"}), 426)


async def test_turnstile_verifier(auth_app: FastAPI, ctx: AuthContext) -> None:
    seen: list[dict[str, str]] = []

    def siteverify(request: httpx.Request) -> httpx.Response:
        form = dict(httpx.QueryParams(request.content.decode()))
        seen.append(form)
        ok = form.get("secret") == "s3cret" and form.get("response") == "good-token"
        return httpx.Response(
            200, json={"success": ok, "error-codes": [] if ok else ["invalid-input-response"]}
        )

    verifier = CloudflareTurnstile(
        "s3cret",
        "https://turnstile.test/siteverify",
        client=httpx.AsyncClient(transport=httpx.MockTransport(siteverify)),
    )
    ctx.turnstile = verifier
    try:
        async with new_client(auth_app) as client:
            body = {"email": unique_email(), "password": "long enough pw", "name": "T"}
            missing = await client.post("/auth/signup", json=body)
            assert_envelope(missing, 403, "auth.turnstile_failed")
            bad = await client.post("/auth/signup", json=body, headers={"X-Turnstile-Token": "bad"})
            assert_envelope(bad, 403, "auth.turnstile_failed")
            good = await client.post("/auth/signup", json=body, headers={"X-Turnstile-Token": "good-token"})
            assert good.status_code == 201
            login = await client.post(
                "/auth/sessions",
                json={"email": body["email"], "password": body["password"]},
                headers={"X-Turnstile-Token": "bad"},
            )
            assert_envelope(login, 403, "auth.turnstile_failed")
            recover = await client.post("/auth/password/recover", json={"email": body["email"]})
            assert_envelope(recover, 403, "auth.turnstile_failed")
        assert seen[-1]["remoteip"] == "127.0.0.1"
    finally:
        ctx.turnstile = DisabledTurnstile()


async def test_turnstile_unreachable_fails_closed() -> None:
    def boom(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("down")

    verifier = CloudflareTurnstile(
        "s", "https://x.test", client=httpx.AsyncClient(transport=httpx.MockTransport(boom))
    )
    from parley_common.errors import ParleyError

    with pytest.raises(ParleyError):
        await verifier.verify("token", None)


def _client_from(app: FastAPI, ip: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(ip, 1234)), base_url="http://testserver"
    )


async def test_login_rate_limited_per_ip_and_per_account(
    accounts: Accounts, auth_app: FastAPI, ctx: AuthContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = await accounts.create()
    monkeypatch.setattr(ctx.settings, "auth_rate_login_ip", "3/minute")
    async with _client_from(auth_app, "10.0.0.1") as client:
        for _ in range(3):
            assert (
                await client.post("/auth/sessions", json={"email": user.email, "password": "nope nope"})
            ).status_code == 401
        limited = await client.post("/auth/sessions", json={"email": user.email, "password": user.password})
        assert_envelope(limited, 429, "rate_limit.exceeded")
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
    monkeypatch.setattr(ctx.settings, "auth_rate_login_ip", "1000/minute")
    monkeypatch.setattr(ctx.settings, "auth_rate_login_account", "2/minute")
    target = await accounts.create()
    for i in range(2):
        async with _client_from(auth_app, f"10.0.1.{i}") as client:
            await client.post("/auth/sessions", json={"email": target.email, "password": "wrong one"})
    async with _client_from(auth_app, "10.0.1.99") as client:
        limited = await client.post(
            "/auth/sessions", json={"email": target.email.upper(), "password": target.password}
        )
        assert_envelope(limited, 429, "rate_limit.exceeded")
        assert "Retry-After" in limited.headers


async def test_signup_recovery_and_key_creation_limits(
    accounts: Accounts, auth_app: FastAPI, ctx: AuthContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ctx.settings, "auth_rate_signup_ip", "2/minute")
    async with _client_from(auth_app, "10.0.2.1") as client:
        for _ in range(2):
            body = {"email": unique_email(), "password": "long enough pw", "name": "R"}
            assert (await client.post("/auth/signup", json=body)).status_code == 201
        body = {"email": unique_email(), "password": "long enough pw", "name": "R"}
        assert_envelope(await client.post("/auth/signup", json=body), 429, "rate_limit.exceeded")

    monkeypatch.setattr(ctx.settings, "auth_rate_recover_ip", "2/minute")
    async with _client_from(auth_app, "10.0.2.2") as client:
        for _ in range(2):
            assert (
                await client.post("/auth/password/recover", json={"email": unique_email()})
            ).status_code == 204
        assert_envelope(await client.post("/auth/password/recover", json={"email": unique_email()}), 429)

    user = await accounts.create()
    monkeypatch.setattr(ctx.settings, "auth_rate_key_create_account", "2/minute")
    for _ in range(2):
        await user.api_key()
    assert_envelope(
        await user.client.post("/auth/api-keys", json={"name": "third"}), 429, "rate_limit.exceeded"
    )


async def test_nul_characters_are_rejected_everywhere(accounts: Accounts) -> None:
    """PostgreSQL text cannot hold NUL; it must be a 422, never a database error."""
    user = await accounts.create()
    client = user.client
    nul_name = '{"email": "nul@example.com", "password": "long enough", "name": "a\\u0000b"}'
    resp = await client.post("/auth/signup", content=nul_name, headers={"content-type": "application/json"})
    assert_envelope(resp, 422, "request.validation_failed")
    for method, path, body in [
        ("PATCH", "/users/me", '{"name": "x\\u0000"}'),
        ("POST", "/auth/api-keys", '{"name": "k\\u0000"}'),
        ("POST", "/orgs", '{"name": "n\\u0000", "slug": "nul-org"}'),
    ]:
        resp = await client.request(method, path, content=body, headers={"content-type": "application/json"})
        assert_envelope(resp, 422, "request.validation_failed")
    assert_envelope(await client.get("/orgs/a%00b"), 422, "request.validation_failed")
    # An escaped backslash followed by "u0000" is ordinary text, not a NUL.
    ok = await client.patch(
        "/users/me", content='{"name": "x\\\\u0000"}', headers={"content-type": "application/json"}
    )
    assert ok.status_code == 200 and ok.json()["name"] == "x\\u0000"


async def test_null_for_required_org_field_is_ignored(accounts: Accounts) -> None:
    user = await accounts.create()
    await user.client.post("/orgs", json={"name": "Keep", "slug": f"null-{user.id.hex[:8]}"})
    resp = await user.client.patch(f"/orgs/null-{user.id.hex[:8]}", json={"name": None, "description": None})
    assert resp.status_code == 200 and resp.json()["name"] == "Keep"


async def test_metrics_endpoint_counts_requests_and_rejections(
    anon: httpx.AsyncClient, accounts: Accounts, ctx: AuthContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    def sample(text: str, name: str, **labels: str) -> float:
        for line in text.splitlines():
            if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = (await anon.get("/metrics")).text
    user = await accounts.create()
    await user.client.get(f"/orgs/{'m' * 10}")
    monkeypatch.setattr(ctx.settings, "auth_rate_signup_ip", "1/minute")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=anon._transport.app, client=("10.9.9.9", 1)),  # type: ignore[attr-defined]
        base_url="http://testserver",
    ) as client:
        for _ in range(2):
            await client.post(
                "/auth/signup", json={"email": unique_email(), "password": "long enough", "name": "M"}
            )
    after = (await anon.get("/metrics")).text
    labels = {"service": "auth", "method": "GET", "route": "/orgs/{orgSlug}", "status": "404"}
    assert (
        sample(after, "parley_http_requests_total", **labels)
        == sample(before, "parley_http_requests_total", **labels) + 1
    )
    assert (
        sample(after, "parley_rate_limit_rejections_total", action="signup")
        >= sample(before, "parley_rate_limit_rejections_total", action="signup") + 1
    )

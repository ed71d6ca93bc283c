"""Property-based API test of the auth service with schemathesis, in-process over ASGI.

The app runs against real PostgreSQL, Redis and NATS (the `infra` fixture) with its lifespan started:
schemathesis starts it on the event loop thread it serves the app from, and `st_app` stops it at
teardown. Every case is sent authenticated, with a session cookie or an API key (Hypothesis draws
which), and for about half of the cases the path parameters (org slug, API key id, member id) and the
login body are replaced by real ones made for that case, so the success paths are exercised too,
not only 401/404/422.

Operations that destroy their own credential (`DELETE /users/me`, `DELETE /auth/sessions`,
`DELETE /auth/sessions/me`) get a fresh user per case, so they never log the shared one out.

Checks: no 5xx, status code, content type and response schema conformance. The run is deterministic
(fixed seed, derandomized Hypothesis) and bounded by `MAX_EXAMPLES` per operation.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.python import asgi

from parley_auth.app import build_app
from parley_auth.migrate import upgrade
from parley_auth.settings import AuthSettings
from parley_auth.testing import no_rate_limits
from parley_devstack import api_fuzz as fuzz
from parley_devstack.testing import Infra

# One test item per API operation, all with the same node id: pytest-xdist would run only one
# of them, so `make test` runs this module in its own, serial, pytest run.
pytestmark = pytest.mark.serial

MAX_EXAMPLES = 25
SEED = 20240601
PASSWORD = "correct horse battery staple"
# These revoke or delete the credential that calls them.
SELF_DESTRUCTIVE = {("DELETE", "/users/me"), ("DELETE", "/auth/sessions"), ("DELETE", "/auth/sessions/me")}


@dataclass
class Account:
    user_id: str
    email: str
    session: str
    api_key: str


@dataclass
class Api:
    """Talks to the app through the same in-process client (and event loop) schemathesis uses."""

    app: Any
    cookie_name: str

    def call(self, method: str, path: str, *, session: str | None = None, json: Any = None) -> Any:
        # A fresh client per call, so no cookie leaks from one call into the next.
        with asgi.get_client(self.app) as client:
            cookies = {self.cookie_name: session} if session else None
            resp = client.request(method, path, json=json, cookies=cookies)
        assert resp.status_code < 300, f"{method} {path}: {resp.status_code} {resp.text}"
        return resp

    def new_account(self) -> Account:
        email = f"{fuzz.unique('st')}@example.com"
        resp = self.call("POST", "/auth/signup", json={"email": email, "password": PASSWORD, "name": "Fuzz"})
        session = resp.cookies[self.cookie_name]
        user_id = self.call("GET", "/users/me", session=session).json()["id"]
        key = self.call("POST", "/auth/api-keys", session=session, json={"name": "schemathesis"}).json()
        return Account(user_id=user_id, email=email, session=session, api_key=key["key"])

    def new_org(self, owner: Account) -> str:
        slug = fuzz.unique("org")
        self.call("POST", "/orgs", session=owner.session, json={"name": "Fuzz org", "slug": slug})
        return slug


@dataclass
class Authenticator:
    """Decides, case by case, which credential to send and which real identifiers to plug in."""

    api: Api
    main: Account  # the caller of every non-destructive case
    other: Account  # a second user, to be added to and removed from orgs
    login: Account  # only ever logged into, never modified

    def prepare(self, case: schemathesis.Case[Any], *, use_key: bool, use_real_ids: bool) -> dict[str, str]:
        op = (case.operation.method.upper(), case.operation.path)
        account = self.api.new_account() if op in SELF_DESTRUCTIVE else self.main
        if use_real_ids:
            self._plug_real_ids(case, op, account)
        if use_key:
            return {"Authorization": f"Bearer {account.api_key}"}
        return {"Cookie": f"{self.api.cookie_name}={account.session}"}

    def _plug_real_ids(self, case: schemathesis.Case[Any], op: tuple[str, str], account: Account) -> None:
        params = case.path_parameters
        if params is not None and "orgSlug" in params:
            slug = self.api.new_org(account)
            params["orgSlug"] = slug
            if "userID" in params:
                self.api.call(
                    "POST",
                    f"/orgs/{slug}/members",
                    session=account.session,
                    json={"user_id": self.other.user_id, "role": "member"},
                )
                params["userID"] = self.other.user_id
            elif op[0] == "POST" and isinstance(case.body, dict):
                case.body["user_id"] = self.other.user_id
        if params is not None and "keyID" in params:
            key = self.api.call("POST", "/auth/api-keys", session=account.session, json={"name": "doomed"})
            params["keyID"] = key.json()["id"]
        if op == ("POST", "/auth/sessions") and isinstance(case.body, dict):
            case.body.update(email=self.login.email, password=PASSWORD)


# Module scope: the app's `auth.verify` subscriber joins the `auth` queue group on the session's NATS,
# where it must not stay to answer other modules' requests with a different token secret.
@pytest.fixture(scope="module")
def st_app(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    upgrade(infra.database_url)
    settings = infra.settings(
        AuthSettings,
        auth_token_secret="schemathesis-" + "x" * 32,
        auth_mail_dir=tmp_path_factory.mktemp("mail"),
        # Every request comes from the one ASGI test client address, so the per-IP limits would turn
        # most of the run into 429s. Rate limiting has its own tests; here it must not hide the
        # endpoints behind it.
        **no_rate_limits(),
    )
    app = build_app(settings)
    with fuzz.fuzzing():
        yield app


@pytest.fixture(scope="module")
def authenticator(st_app: Any) -> Authenticator:
    api = Api(st_app, cookie_name=st_app.state.ctx.settings.auth_cookie_name)
    return Authenticator(api=api, main=api.new_account(), other=api.new_account(), login=api.new_account())


# Read from an app that is never started; the cases are sent to the real app of `st_app`.
schema = fuzz.load_schema(build_app(AuthSettings()), seed=SEED, max_examples=MAX_EXAMPLES)


@schema.parametrize()
@schema.given(use_key=st.booleans(), use_real_ids=st.booleans())
def test_auth_api_conforms_to_its_openapi(
    case: schemathesis.Case[Any], use_key: bool, use_real_ids: bool, st_app: Any, authenticator: Authenticator
) -> None:
    headers = authenticator.prepare(case, use_key=use_key, use_real_ids=use_real_ids)
    fuzz.call_and_validate(case, st_app, headers, use_key=use_key)

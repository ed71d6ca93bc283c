"""The metrics contract (docs/operations.md, "Metrics") after a real conversation.

The stack of test_realtime (its own NATS; auth and catalog in this process; the gateway and two
runtime workers as processes of their own). Every service's `/metrics` is scraped before and after
one conversation, and the deltas must match what the conversation did: the HTTP routes it used,
its turns by outcome, turn latency, time to first token, bus round trips, and the gauges back to
zero once the socket and the session are closed. Auth and catalog run in this process, so they
share its registry: their HTTP samples are told apart by the `service` label.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families
from tests.e2e.harness import (
    LONG,
    Stack,
    chat_agent,
    make_agent,
    session,
    signup,
    stack,  # noqa: F401 - the module-scoped fixture: this module gets a stack of its own
    text_of,
    transcript,
)

from parley_devstack.servers import ManagedProcess

Labels = frozenset[tuple[str, str]]


@dataclass(frozen=True)
class Scrape:
    """One `/metrics` answer: every sample by name and labels."""

    samples: dict[tuple[str, Labels], float]

    @classmethod
    def parse(cls, text: str) -> Scrape:
        samples = {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        return cls(samples)

    def get(self, name: str, **labels: str) -> float:
        """The sum over every sample of `name` whose labels include `labels` (0 when absent: a
        labelled series only appears once it was first recorded)."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= ls)


async def scrape_url(url: str) -> Scrape:
    async with httpx.AsyncClient(timeout=5) as http:
        resp = await http.get(url)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    return Scrape.parse(resp.text)


def http_base(proc: ManagedProcess) -> str:
    assert proc.env is not None
    return f"http://127.0.0.1:{proc.env['PARLEY_HTTP_PORT']}"


@dataclass
class Fleet:
    """A scrape of every service of the stack."""

    auth: Scrape
    catalog: Scrape
    gateway: Scrape
    workers: list[Scrape]

    def runtime(self, name: str, **labels: str) -> float:
        """Summed over the workers: which one owns the session is up to JetStream."""
        return sum(w.get(name, **labels) for w in self.workers)


async def scrape_all(stack: Stack) -> Fleet:  # noqa: F811 - the fixture's value
    async def in_process(app: object) -> Scrape:
        async with stack.http(app) as http:  # type: ignore[arg-type]
            resp = await http.get("/metrics")
        assert resp.status_code == 200, resp.text
        return Scrape.parse(resp.text)

    assert stack.gateway is not None
    workers = stack.alive_workers()
    assert len(workers) == 2
    auth, catalog, gateway, *per_worker = await asyncio.gather(
        in_process(stack.auth),
        in_process(stack.catalog),
        scrape_url(f"{http_base(stack.gateway)}/metrics"),
        *(scrape_url(f"{http_base(w)}/metrics") for w in workers),
    )
    return Fleet(auth=auth, catalog=catalog, gateway=gateway, workers=per_worker)


async def settles(probe: Callable[[], Awaitable[bool]], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)


async def test_every_service_counts_a_conversation(stack: Stack) -> None:  # noqa: F811
    before = await scrape_all(stack)

    user = await signup(stack)  # auth: POST /auth/signup, GET /users/me
    agent = await make_agent(stack, user, *chat_agent())  # catalog: POST agents, PATCH status
    async with httpx.AsyncClient(timeout=5) as http:  # the gateway's one plain HTTP route
        assert stack.gateway is not None
        upgrade = await http.get(f"{http_base(stack.gateway)}/realtime")
        assert upgrade.status_code == 426, upgrade.text

    async with session(stack, agent, cookie=user.cookie) as s:
        await s.until("turn_complete")  # the greeting: a turn with no user input
        assert text_of(await s.say("hello")) == 'You said: "hello".'
        during = await scrape_all(stack)
        assert during.gateway.get("parley_ws_connections_active", protocol="realtime") == 1
        assert during.runtime("parley_sessions_active") == 1
        assert during.runtime("parley_worker_capacity_in_use") > 0

        await s.send({"type": "input_text", "text": LONG})
        assert (await s.recv())["type"] == "text_delta"
        await s.send({"type": "cancel"})
        await s.until("turn_complete")
        await s.send({"type": "input_text", "text": "bye"})  # answered, then the flow ends
        assert await s.closed() == "flow_end"
    await transcript(stack, user, s.conversation_id)  # catalog: GET /conversations/{id}, messages

    async def gauges_at_zero() -> bool:
        now = await scrape_all(stack)
        return (
            now.gateway.get("parley_ws_connections_active", protocol="realtime") == 0
            and now.runtime("parley_sessions_active") == 0
            and now.runtime("parley_worker_capacity_in_use") == 0
        )

    await settles(gauges_at_zero, "the socket and session gauges back to 0")
    after = await scrape_all(stack)

    def delta(pick: Callable[[Fleet], float]) -> float:
        return pick(after) - pick(before)

    def http_requests(service: str, method: str, route: str, status: str) -> Callable[[Fleet], float]:
        def pick(fleet: Fleet) -> float:
            scrape = {"auth": fleet.auth, "catalog": fleet.catalog, "session_gateway": fleet.gateway}[service]
            labels = {"service": service, "method": method, "route": route, "status": status}
            return scrape.get("parley_http_requests_total", **labels)

        return pick

    # HTTP, by route template (never the raw path), with a duration for each request.
    assert delta(http_requests("auth", "POST", "/auth/signup", "201")) == 1
    assert delta(http_requests("auth", "GET", "/users/me", "200")) == 1
    assert delta(http_requests("catalog", "POST", "/users/me/agents", "201")) == 1
    assert delta(http_requests("catalog", "PATCH", "/agents/{agentID}/status", "200")) == 1
    assert delta(http_requests("catalog", "GET", "/conversations/{conversationID}", "200")) >= 1
    assert delta(http_requests("session_gateway", "GET", "/realtime", "426")) == 1
    assert (
        delta(
            lambda f: f.auth.get(
                "parley_http_request_duration_seconds_count", service="auth", route="/auth/signup"
            )
        )
        == 1
    )
    assert not any(
        dict(labels).get("route", "").count("-") >= 4  # no uuid ever makes it into a label
        for (name, labels) in after.catalog.samples
        if name == "parley_http_requests_total"
    )

    def turns(outcome: str) -> float:
        return delta(lambda f: f.runtime("parley_turns_total", outcome=outcome))

    # The greeting and "hello" complete, the long answer is cancelled, "bye" ends the session.
    outcomes = ("complete", "cancelled", "closed", "failed", "abandoned")
    assert {o: turns(o) for o in outcomes} == {
        "complete": 2,
        "cancelled": 1,
        "closed": 1,
        "failed": 0,
        "abandoned": 0,
    }
    # Latency is measured for turns caused by input that end with turn_complete ("hello", cancel).
    assert delta(lambda f: f.runtime("parley_turn_latency_seconds_count")) == 2
    # The LLM answered "hello", the long message (cut) and "bye"; the greeting is verbatim.
    ttft = "parley_llm_time_to_first_token_seconds_count"
    assert delta(lambda f: f.runtime(ttft, provider="builtin")) == 3
    assert delta(lambda f: f.runtime("parley_llm_errors_total")) == 0

    # Bus round trips, as each caller sees them.
    def bus(scrape: Scrape, subject: str) -> float:
        return scrape.get("parley_bus_request_seconds_count", subject=subject)

    assert delta(lambda f: bus(f.gateway, "auth.verify")) >= 1
    assert delta(lambda f: bus(f.gateway, "catalog.agent.access")) == 1
    # A new agent: the owning worker resolves it once, then has it cached.
    assert delta(lambda f: sum(bus(w, "catalog.agent.resolve") for w in f.workers)) == 1
    # Every worker reports its work queue, whether or not it ran this session.
    queue = frozenset({("stream", "SESSIONS"), ("consumer", "runtime")})
    assert all(("parley_jetstream_consumer_pending", queue) in w.samples for w in after.workers)

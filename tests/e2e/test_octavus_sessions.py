"""Octavus agent sessions (`/api/agent-sessions*`, docs/octavus-sessions.md) over the real stack.

test_realtime's stack (auth, catalog, a gateway and two runtime workers as processes, real NATS,
Redis and PostgreSQL), with the workers' Anthropic engine pointed at a local fake of the Messages
API: the agent of tests/e2e/octavus_agents/support runs `anthropic/claude-sonnet-4-5`, and each
test scripts what "Claude" answers. Every streamed event is checked against the event schema the
Octavus SDKs parse with (`parley_common.octavus.events`, mirroring @octavus/core).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.e2e.harness import (
    Stack,
    api_key,
    signup,
    stack,  # noqa: F401 - the module-scoped fixture: this module gets a stack of its own
)

from parley_common.octavus import read_agent_dir
from parley_common.octavus.events import STREAM_EVENT

from .llm_fakes import FakeAnthropic, anthropic_text, anthropic_tool_use

AGENT_DIR = Path(__file__).parent / "octavus_agents" / "support"
FAKE_KEY = "sk-ant-fake-e2e"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=FAKE_KEY) as server:
        yield server


@pytest.fixture(scope="module")
def stack_env(fake: FakeAnthropic) -> dict[str, str]:
    return {"PARLEY_LLM_ANTHROPIC_BASE_URL": fake.base_url, "PARLEY_LLM_ANTHROPIC_API_KEY": FAKE_KEY}


def base_url(running: Stack) -> str:
    return running.gateway_url.replace("ws://", "http://").removesuffix("/realtime")


class Client:
    """What @octavus/server-sdk does over HTTP, without the SDK (the SDK's own test is separate)."""

    def __init__(self, running: Stack, key: str) -> None:
        self.stack, self.key = running, key
        self.http = httpx.AsyncClient(
            base_url=base_url(running), headers={"Authorization": f"Bearer {key}"}, timeout=30
        )

    async def create_agent(self, **protocol_changes: str) -> str:
        definition = read_agent_dir(AGENT_DIR)
        text = definition.protocol
        for old, new in protocol_changes.items():
            text = text.replace(old, new)
        body = definition.model_copy(update={"protocol": text}).model_dump(exclude_none=True)
        body["settings"]["slug"] = f"support-{uuid.uuid4().hex[:8]}"
        async with self.stack.http(self.stack.catalog, headers={"Authorization": f"Bearer {self.key}"}) as c:
            resp = await c.post("/api/agents", json=body)
        assert resp.status_code == 201, resp.text
        return str(resp.json()["agentId"])

    async def create_session(self, agent_id: str, inp: dict[str, Any] | None = None) -> str:
        resp = await self.http.post("/api/agent-sessions", json={"agentId": agent_id, "input": inp})
        assert resp.status_code == 200, resp.text
        return str(resp.json()["sessionId"])

    async def trigger(self, session_id: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        """The events of one round; asserts the SSE framing and each event's schema."""
        async with self.http.stream("POST", f"/api/agent-sessions/{session_id}/trigger", json=body) as resp:
            assert resp.status_code == 200, (await resp.aread()).decode()
            assert resp.headers["content-type"].startswith("text/event-stream")
            text = (await resp.aread()).decode()
        data = [line[len("data: ") :] for line in text.split("\n") if line.startswith("data: ")]
        assert data and data[-1] == "[DONE]", text
        events = [json.loads(d) for d in data[:-1]]
        for event in events:
            STREAM_EVENT.validate_python(event)  # what @octavus/core's zod schema accepts
        return events

    async def get(self, session_id: str, ui: bool = False) -> dict[str, Any]:
        resp = await self.http.get(
            f"/api/agent-sessions/{session_id}", params={"format": "ui"} if ui else None
        )
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def one(events: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [e for e in events if e["type"] == kind]
    assert len(found) == 1, (kind, kinds(events))
    return found[0]


def said(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Anthropic messages with all-text content blocks flattened to strings (easier to compare)."""
    out = []
    for m in messages:
        content = m["content"]
        if isinstance(content, list) and all(block["type"] == "text" for block in content):
            content = "".join(block["text"] for block in content)
        out.append({"role": m["role"], "content": content})
    return out


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "text-delta")


@pytest.fixture(scope="module")
async def client(stack: Stack) -> Client:  # noqa: F811 - the fixture imported above
    user = await signup(stack)
    return Client(stack, await api_key(stack, user))


async def test_chat_with_two_tool_rounds_then_an_answer(client: Client, fake: FakeAnthropic) -> None:
    agent_id = await client.create_agent()
    session_id = await client.create_session(agent_id, {"COMPANY": "Acme", "USER_ID": "u-1"})
    state = await client.get(session_id)
    assert state["status"] == "active" and state["input"] == {"COMPANY": "Acme", "USER_ID": "u-1"}
    assert state["resources"] == {"SUMMARY": "", "LAST_TICKET": None} and state["messages"] == []

    # Round 1: Claude thinks, then calls get-account.
    fake.requests.clear()
    fake.push(anthropic_tool_use([("toolu_1", "get-account", '{"userId": "u-1"}')]))
    trigger = {"triggerName": "user-message", "input": {"USER_MESSAGE": "Where is my order?"}}
    first = await client.trigger(session_id, trigger)
    start = first[0]
    assert start["type"] == "start" and start["executionId"] and start["messageId"]
    assert kinds(first) == [
        "start",
        "block-start", "block-end",  # add-message (hidden)
        "block-start", "tool-input-start", "tool-input-end", "tool-input-available", "tool-request",
        "finish",
    ]  # fmt: skip
    assert first[1]["blockType"] == "add-message" and first[1]["display"] == "hidden"
    assert first[3] == {
        "type": "block-start", "blockId": first[3]["blockId"], "blockName": "Respond to user",
        "blockType": "next-message", "display": "stream", "outputToChat": True,
    }  # fmt: skip
    assert one(first, "tool-input-start")["title"] == "Looking up your account"  # display: description
    request = one(first, "tool-request")["toolCalls"]
    assert request == [
        {"toolCallId": "toolu_1", "toolName": "get-account", "args": {"userId": "u-1"}, "source": "llm"}
    ]
    assert first[-1] == {"type": "finish", "finishReason": "tool-calls", "executionId": start["executionId"]}
    sent = fake.requests[0].json
    assert sent["system"] == "You are the support agent of Acme. Be brief."
    assert said(sent["messages"]) == [{"role": "user", "content": "Where is my order?"}]
    assert [t["name"] for t in sent["tools"]] == ["get-account"]
    assert sent["tools"][0]["input_schema"]["required"] == ["userId"]
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 5000}

    # Round 2 (the server SDK's form: the trigger repeated, plus results): another tool call.
    fake.push(anthropic_tool_use([("toolu_2", "get-account", '{"userId": "u-2"}')]))
    results = [{"toolCallId": "toolu_1", "toolName": "get-account", "result": {"orders": 1}}]
    second = await client.trigger(
        session_id, {**trigger, "executionId": start["executionId"], "toolResults": results}
    )
    assert second[0] == start  # the same execution and message go on
    assert one(second, "tool-request")["toolCalls"][0]["toolCallId"] == "toolu_2"
    assert second[-1]["finishReason"] == "tool-calls"
    tool_turn = fake.requests[1].json["messages"]
    assert tool_turn[-1]["role"] == "user" and tool_turn[-1]["content"][0] == {
        "type": "tool_result", "tool_use_id": "toolu_1", "content": '{"orders": 1}',
    }  # fmt: skip

    # Round 3 (the client SDK's form: no trigger name): the answer.
    fake.push(anthropic_text(["Your order ", "ships today."]))
    third = await client.trigger(
        session_id,
        {
            "executionId": start["executionId"],
            "toolResults": [{"toolCallId": "toolu_2", "error": "no such user"}],
        },
    )
    assert kinds(third) == [
        "start", "text-start", "text-delta", "text-delta", "text-end", "block-end", "finish",
    ]  # fmt: skip
    assert text_of(third) == "Your order ships today." and third[-1]["finishReason"] == "stop"
    last = fake.requests[2].json["messages"][-1]["content"][0]
    assert last["tool_use_id"] == "toolu_2" and last["content"] == "Error: no such user"

    # Stored: the user message, then one assistant message with both tool calls and the text.
    state = await client.get(session_id)
    user, assistant = state["messages"]
    assert user["role"] == "user" and user["content"] == "Where is my order?"
    assert assistant["id"] == start["messageId"] and assistant["content"] == "Your order ships today."
    calls = {c["id"]: c for c in assistant["toolCalls"]}
    assert calls["toolu_1"]["status"] == "available" and calls["toolu_1"]["result"] == {"orders": 1}
    assert calls["toolu_2"]["status"] == "error" and calls["toolu_2"]["error"] == "no such user"
    ui = await client.get(session_id, ui=True)
    assert ui["sessionId"] == session_id and ui["agentId"] == agent_id
    parts = ui["messages"][1]["parts"]
    assert [p["type"] for p in parts] == ["tool-call", "tool-call", "text"]
    assert parts[0]["status"] == "done" and parts[0]["displayName"] == "Looking up your account"
    assert parts[1]["status"] == "error" and parts[2] == {
        "type": "text",
        "text": "Your order ships today.",
        "status": "done",
    }

    # Nothing is paused any more: results now are a client error, in the SDKs' error shape.
    resp = await client.http.post(
        f"/api/agent-sessions/{session_id}/trigger",
        json={"executionId": start["executionId"], "toolResults": results},
    )
    assert resp.status_code == 400 and resp.json()["code"] == "octavus.no_pending_tools"
    assert resp.json()["error"] == resp.json()["message"]


async def test_a_handler_with_every_block_type(client: Client, fake: FakeAnthropic) -> None:
    agent_id = await client.create_agent()
    session_id = await client.create_session(agent_id, {"COMPANY": "Acme"})
    fake.push(anthropic_text("Hi! How can I help?"))
    await client.trigger(session_id, {"triggerName": "user-message", "input": {"USER_MESSAGE": "Hello"}})

    fake.requests.clear()
    fake.push(anthropic_text("User wants a human about billing."))
    events = await client.trigger(session_id, {"triggerName": "escalate", "input": {"REASON": "billing"}})
    blocks = [(e["blockName"], e["blockType"], e["display"]) for e in events if e["type"] == "block-start"]
    assert blocks == [
        ("Note the reason", "add-message", "hidden"),
        ("Serialize conversation", "serialize-thread", "description"),
        ("Start summary thread", "start-thread", "description"),
        ("Ask for a summary", "add-message", "hidden"),
        ("Summarize", "next-message", "hidden"),
        ("Save summary", "set-resource", "name"),
        ("Create ticket", "tool-call", "description"),
    ]
    summarize = next(e for e in events if e["type"] == "block-start" and e["blockName"] == "Summarize")
    assert summarize["thread"] == "summary"
    # The summary thread: its own system prompt and only what was added to it.
    sent = fake.requests[0].json
    assert sent["system"] == "You write hand-over notes for human agents, in one sentence."
    assert said(sent["messages"]) == [
        {"role": "user", "content": "Summarize this conversation:\n\n**User**: Hello\n\n"
         "**Assistant**: Hi! How can I help?\n\n**User**: The user asks for a human because: billing"}
    ]  # fmt: skip
    assert [t["name"] for t in sent["tools"]] == ["get-account"]  # inherited from `agent:`
    assert sent["thinking"]["budget_tokens"] == 5000
    assert one(events, "resource-update") == {
        "type": "resource-update",
        "name": "SUMMARY",
        "value": "User wants a human about billing.",
    }
    call = one(events, "tool-request")["toolCalls"][0]
    assert call["toolName"] == "create-ticket" and call["source"] == "block"
    assert call["args"] == {"summary": "User wants a human about billing.", "priority": 2}  # trigger default
    assert call["outputVariable"] == "TICKET" and call["blockIndex"] == 6
    assert one(events, "tool-input-start")["title"] == "create-ticket"  # display: name
    assert events[-1]["finishReason"] == "tool-calls"

    fake.push(anthropic_text("A human will reply within the hour."))
    done = await client.trigger(
        session_id,
        {"triggerName": "escalate", "input": {"REASON": "billing"}, "executionId": events[0]["executionId"],
         "toolResults": [{**call, "result": {"ticketId": "T-9"}}]},
    )  # fmt: skip
    assert [e["blockName"] for e in done if e["type"] == "block-start"] == [
        "Remember ticket",
        "Announce",
        "Follow up",
    ]
    assert one(done, "resource-update") == {
        "type": "resource-update",
        "name": "LAST_TICKET",
        "value": {"ticketId": "T-9"},
    }
    assert text_of(done) == "A human will reply within the hour." and done[-1]["finishReason"] == "stop"
    # The main thread saw the escalation note, the announced ticket, not the summary thread.
    final = said(fake.requests[-1].json["messages"])
    assert final[-2:] == [
        {"role": "user", "content": "The user asks for a human because: billing"},
        {"role": "assistant", "content": "I created ticket T-9 for you."},
    ]

    state = await client.get(session_id)
    assert state["resources"] == {
        "SUMMARY": "User wants a human about billing.",
        "LAST_TICKET": {"ticketId": "T-9"},
    }
    assert state["variables"]["TICKET"] == {"ticketId": "T-9"}
    assert state["variables"]["NOTES"] == "User wants a human about billing."
    assert state["variables"]["TRANSCRIPT"].startswith("**User**: Hello")
    hidden_note = state["messages"][2]
    assert hidden_note["visible"] is False and hidden_note["content"].endswith("billing")
    ui = await client.get(session_id, ui=True)
    assert [m["role"] for m in ui["messages"]] == ["user", "assistant", "assistant"]  # the note is hidden
    ops = [p for p in ui["messages"][2]["parts"] if p["type"] == "operation"]
    assert [(o["name"], o["operationType"]) for o in ops] == [
        ("Preparing the hand-over", "serialize-thread"), ("Saving the summary", "set-resource"),
    ]  # fmt: skip
    texts = [(p.get("thread"), p["text"]) for p in ui["messages"][2]["parts"] if p["type"] == "text"]
    assert texts == [
        ("summary", "User wants a human about billing."),  # as the client SDK shows other threads
        (None, "I created ticket T-9 for you."),
        (None, "A human will reply within the hour."),
    ]


async def test_expired_session_reads_as_expired_and_restores(client: Client, fake: FakeAnthropic) -> None:
    agent_id = await client.create_agent()
    session_id = await client.create_session(agent_id, {"COMPANY": "Acme"})
    fake.push(anthropic_text("Hello there."))
    await client.trigger(session_id, {"triggerName": "user-message", "input": {"USER_MESSAGE": "Hi"}})
    saved = (await client.get(session_id, ui=True))["messages"]

    # Expiry is the state key's TTL running out; the marker that outlives it stays.
    await client.stack.redis.delete(f"parley:octavus:state:{session_id}")
    for ui in (False, True):
        expired = await client.get(session_id, ui=ui)
        assert expired == {"sessionId": session_id, "agentId": agent_id, "status": "expired",
                           "createdAt": expired["createdAt"]}  # fmt: skip
    still = {"triggerName": "user-message", "input": {"USER_MESSAGE": "Still there?"}}
    resp = await client.http.post(f"/api/agent-sessions/{session_id}/trigger", json=still)
    assert resp.status_code == 404 and "restore" in resp.json()["error"]

    # A client-stopped tool call (`cancelled`) is accepted and served as an error.
    saved[1]["parts"].insert(0, {"type": "tool-call", "toolCallId": "t-x", "toolName": "get-account",
                                 "args": {"userId": "u"}, "status": "cancelled"})  # fmt: skip
    resp = await client.http.post(
        f"/api/agent-sessions/{session_id}/restore", json={"messages": saved, "input": {"COMPANY": "Globex"}}
    )
    assert resp.status_code == 200 and resp.json() == {"sessionId": session_id, "restored": True}
    again = await client.http.post(f"/api/agent-sessions/{session_id}/restore", json={"messages": saved})
    assert again.json() == {"sessionId": session_id, "restored": False}
    shown = await client.get(session_id, ui=True)
    assert [m["id"] for m in shown["messages"]] == [m["id"] for m in saved]
    assert shown["messages"][1]["parts"][0]["status"] == "error"

    fake.requests.clear()
    fake.push(anthropic_text("Yes, still here."))
    events = await client.trigger(
        session_id, {"triggerName": "user-message", "input": {"USER_MESSAGE": "Still there?"}}
    )
    assert text_of(events) == "Yes, still here."
    sent = fake.requests[0].json
    assert sent["system"] == "You are the support agent of Globex. Be brief."  # the restored input
    assert said(sent["messages"])[0] == {"role": "user", "content": "Hi"}
    assert said(sent["messages"])[-1] == {"role": "user", "content": "Still there?"}


async def test_bad_requests_get_clear_errors(client: Client, stack: Stack) -> None:  # noqa: F811
    agent_id = await client.create_agent()
    http = client.http

    async def expect(method: str, path: str, status: int, code: str, body: Any = None) -> dict[str, Any]:
        resp = await http.request(method, path, json=body)
        assert resp.status_code == status, resp.text
        err: dict[str, Any] = resp.json()
        assert err["code"] == code and err["error"] == err["message"] and err["doc_url"], err
        return err

    err = await expect("POST", "/api/agent-sessions", 400, "octavus.invalid_input", {"agentId": agent_id})
    assert "COMPANY" in err["error"]
    await expect(
        "POST",
        "/api/agent-sessions",
        400,
        "octavus.invalid_input",
        {"agentId": agent_id, "input": {"COMPANY": 7}},
    )
    await expect("POST", "/api/agent-sessions", 400, "octavus.invalid_input",
                 {"agentId": agent_id, "input": {"COMPANY": "A", "EXTRA": 1}})  # fmt: skip
    await expect("POST", "/api/agent-sessions", 404, "resource.not_found", {"agentId": str(uuid.uuid4())})
    await expect("POST", "/api/agent-sessions", 422, "request.validation_failed", {"input": {}})
    session_id = await client.create_session(agent_id, {"COMPANY": "Acme"})
    trigger = f"/api/agent-sessions/{session_id}/trigger"
    await expect("POST", trigger, 400, "octavus.unknown_trigger", {"triggerName": "nope"})
    await expect("POST", trigger, 400, "octavus.invalid_input", {"triggerName": "user-message", "input": {}})
    await expect("POST", trigger, 400, "octavus.invalid_input",
                 {"triggerName": "escalate", "input": {"REASON": "x", "PRIORITY": 1.5}})  # fmt: skip
    await expect("POST", trigger, 400, "octavus.invalid_input", {})
    await expect("POST", trigger, 400, "octavus.no_pending_tools",
                 {"executionId": "exec_x", "toolResults": [{"toolCallId": "t"}]})  # fmt: skip
    await expect("POST", trigger, 422, "request.validation_failed", {"toolResults": "nope"})
    await expect("GET", f"/api/agent-sessions/{uuid.uuid4()}", 404, "resource.not_found")

    # Another user's key sees neither the agent nor the session; no key at all is a 401.
    other = Client(stack, await api_key(stack, await signup(stack)))
    resp = await other.http.get(f"/api/agent-sessions/{session_id}")
    assert resp.status_code == 404 and resp.json()["error"]
    resp = await other.http.post("/api/agent-sessions", json={"agentId": agent_id, "input": {"COMPANY": "A"}})
    assert resp.status_code == 404
    resp = await httpx.AsyncClient(base_url=base_url(stack)).get(f"/api/agent-sessions/{session_id}")
    assert resp.status_code == 401 and resp.json()["error"]

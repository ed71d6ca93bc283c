"""The published `@octavus/server-sdk@2.0.0` (from the npm registry, unchanged) drives an agent
session on the real stack: create, a trigger whose LLM calls the one server-side tool (run by the
SDK in the "consumer's server", then continued by the SDK), an unknown trigger, get, getMessages,
restore, and an expired session restored. Every raw `data:` line is checked with the SDK's own
`safeParseStreamEvent`: the SDK silently drops events that fail it, so a rejected event fails here.

The agent runs on the built-in engine (`builtin/parley`), which calls a tool when the user message
is `call <tool> <json>` and then reports the tool's result (docs/llm-providers.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.harness import Stack, api_key, signup
from tests.e2e.harness import stack as stack  # the module-scoped fixtures: a stack of its own

from .npm import npm_install
from .test_octavus_sessions import Client, base_url

SDK_VERSION = "2.0.0"
DRIVER = Path(__file__).parent / "octavus_sdk" / "drive.mjs"


async def drive(stack: Stack, key: str, **env: str) -> dict[str, Any]:
    prefix = npm_install("@octavus/server-sdk", SDK_VERSION)
    script = prefix / "drive.mjs"  # next to node_modules, so the import resolves
    shutil.copyfile(DRIVER, script)
    node = shutil.which("node")
    assert node is not None
    done = await asyncio.to_thread(
        subprocess.run,
        [node, str(script)],
        env={**os.environ, "BASE_URL": base_url(stack), "API_KEY": key, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"node failed ({done.returncode}):\n{done.stderr}\n{done.stdout}"
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


async def test_the_published_server_sdk_drives_a_session_with_a_server_tool(stack: Stack) -> None:
    key = await api_key(stack, await signup(stack))
    client = Client(stack, key)
    agent_id = await client.create_agent(**{"anthropic/claude-sonnet-4-5": "builtin/parley"})
    out = await drive(stack, key, AGENT_ID=agent_id, USER_MESSAGE='call get-account {"userId": "u-1"}')

    assert out["rejected"] == [], out["rejected"]  # every event passes the SDK's schema
    assert out["raw"].count("[DONE]") == 2  # two rounds: the tool request, then the continuation
    assert out["toolCalls"] == [{"userId": "u-1"}]  # the handler ran in the SDK with the LLM's args
    chat = out["chat"]
    kinds = [e["type"] for e in chat]
    # The SDK swallows `tool-request` and `finish: tool-calls`, runs the tool, reports its output
    # and posts the continuation; the platform's second round answers.
    assert "tool-request" not in kinds and kinds.count("start") == 2
    output = next(e for e in chat if e["type"] == "tool-output-available")
    assert output["output"] == {"name": "Ada", "plan": "pro"}
    assert chat[-1] == {"type": "finish", "finishReason": "stop", "executionId": chat[0]["executionId"]}
    answer = "".join(e["delta"] for e in chat if e["type"] == "text-delta")
    assert "get-account" in answer and "Ada" in answer

    # An unknown trigger: the 400 becomes the SDK's validation_error event, with our message.
    (error,) = [e for e in out["unknown"] if e["type"] == "error"]
    assert error["errorType"] == "validation_error" and "no-such-trigger" in error["message"]

    # get() and getMessages() parse our bodies with the SDK's zod schemas (they threw otherwise).
    state, ui = out["state"], out["ui"]
    assert (
        state["id"] == out["sessionId"]
        and state["agentId"] == agent_id
        and state["input"] == {"COMPANY": "Acme"}
    )
    assert [m["role"] for m in state["messages"]] == ["user", "assistant"]
    assert state["messages"][1]["toolCalls"][0]["result"] == {"name": "Ada", "plan": "pro"}
    parts = ui["messages"][1]["parts"]  # thinking: low, so the built-in engine reasons first
    assert [p["type"] for p in parts] == ["reasoning", "tool-call", "reasoning", "text"]
    assert parts[1]["status"] == "done" and parts[1]["result"] == {"name": "Ada", "plan": "pro"}
    assert out["restore"] == {"sessionId": out["sessionId"], "restored": False}  # still active

    # Expired (the state's TTL ran out): the SDK sees `expired`, restores, and reads it back.
    await stack.redis.delete(f"parley:octavus:state:{out['sessionId']}")
    again = await drive(
        stack, key, MODE="expired", SESSION_ID=out["sessionId"], MESSAGES=json.dumps(ui["messages"])
    )
    assert [e["status"] for e in again["expired"]] == ["expired", "expired"]
    assert again["restore"] == {"sessionId": out["sessionId"], "restored": True}
    assert again["ui"]["messages"] == ui["messages"]


@pytest.fixture(autouse=True)
def _node() -> None:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")

"""One trace follows a user turn from the socket through the bus to the LLM call and back.

The gateway (under uvicorn) and a runtime worker run in this process on their own NATS, so their
spans land in one in-memory exporter; auth and the catalog are stand-ins answering their subjects.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
import uvicorn
from nats.aio.msg import Msg
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from websockets.asyncio.client import connect

from parley_common import subjects
from parley_common.auth_contract import CredentialKind, Principal, VerifyReply
from parley_common.blueprint import Blueprint
from parley_common.catalog_contract import (
    AgentAccessReply,
    AgentConfig,
    AgentResolveReply,
    AgentSnapshot,
    AgentStatus,
)
from parley_common.settings import CommonSettings
from parley_common.telemetry import setup_telemetry
from parley_devstack.servers import NatsServer, free_port
from parley_runtime.app import build_app as build_runtime
from parley_runtime.llm import LLMSettings
from parley_runtime.settings import RuntimeSettings
from parley_session_gateway.app import build_app as build_gateway
from parley_session_gateway.settings import GatewaySettings

AGENT = uuid.uuid4()
BLUEPRINT = {
    "entries": [
        {
            "name": "main",
            "workflow": {
                "nodes": [
                    {"id": "s", "type": "CONTROL.START", "data": {"greeting": "Hi"}},
                    {"id": "d", "type": "CONTROL.DIALOG", "data": {"exit_when": "false"}},
                    {"id": "e", "type": "CONTROL.END", "data": {}},
                ],
                "edges": [{"source": "s", "target": "d"}, {"source": "d", "target": "e"}],
            },
        }
    ]
}


@pytest.fixture(scope="module")
async def traced_stack(
    tmp_path_factory: pytest.TempPathFactory, infra: Any
) -> AsyncIterator[tuple[str, Any]]:
    exporter = InMemorySpanExporter()
    provider = setup_telemetry(CommonSettings())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    server_nats = NatsServer(tmp_path_factory.mktemp("trace-nats"))
    server_nats.start()
    await asyncio.to_thread(server_nats.wait_ready, 30)
    common = {"nats_url": server_nats.url, "redis_url": infra.redis_url, "database_url": infra.database_url}
    nc = await nats.connect(server_nats.url)

    async def verify(msg: Msg) -> None:
        principal = Principal(
            kind=CredentialKind.API_KEY,
            credential_id=uuid.uuid4(),
            user_id=uuid.uuid4(),
            scopes=["sessions:write"],
        )
        await msg.respond(VerifyReply(ok=True, principal=principal).model_dump_json().encode())

    async def access(msg: Msg) -> None:
        reply = AgentAccessReply(ok=True, agent_id=str(AGENT), status=AgentStatus.LIVE, version=1)
        await msg.respond(reply.model_dump_json().encode())

    async def resolve(msg: Msg) -> None:
        snapshot = AgentSnapshot(
            agent_id=AGENT,
            version=1,
            status=AgentStatus.LIVE,
            config=AgentConfig(name="traced"),
            blueprint=Blueprint.model_validate(BLUEPRINT),
        )
        await msg.respond(AgentResolveReply(ok=True, snapshot=snapshot).model_dump_json().encode())

    await nc.subscribe(subjects.AUTH_VERIFY, cb=verify)
    await nc.subscribe(subjects.CATALOG_AGENT_ACCESS, cb=access)
    await nc.subscribe(subjects.CATALOG_AGENT_RESOLVE, cb=resolve)

    runtime = build_runtime(
        RuntimeSettings(**common, log_json=False), llm_settings=LLMSettings(runtime_builtin_pace_ms=0)
    )
    port = free_port()
    gateway = uvicorn.Server(
        uvicorn.Config(build_gateway(GatewaySettings(**common, log_json=False)), port=port, log_config=None)
    )
    async with runtime.router.lifespan_context(runtime):
        serving = asyncio.create_task(gateway.serve())
        try:
            while not gateway.started:
                assert not serving.done(), "the gateway did not start"
                await asyncio.sleep(0.02)
            yield f"ws://127.0.0.1:{port}/realtime?token=key", exporter
        finally:
            gateway.should_exit = True
            await serving
            await nc.close()
            exporter.shutdown()  # the provider is process-wide: stop collecting for later tests
    await asyncio.to_thread(server_nats.stop)


async def test_a_turn_is_one_trace_from_socket_to_llm(traced_stack: tuple[str, Any]) -> None:
    url, exporter = traced_stack
    async with connect(url) as ws:
        await ws.send(json.dumps({"type": "handshake", "agent_id": str(AGENT)}))
        assert json.loads(await ws.recv())["type"] == "handshake_ok"
        while json.loads(await ws.recv())["type"] != "turn_complete":
            pass
        opening = exporter.get_finished_spans()
        exporter.clear()
        await ws.send(json.dumps({"type": "input_text", "text": "trace me"}))
        while json.loads(await ws.recv())["type"] != "turn_complete":
            pass
        await ws.send(json.dumps({"type": "end"}))

    def spans(name: str) -> list[Any]:
        return [s for s in exporter.get_finished_spans() if s.name == name]

    (sent,) = spans("realtime.input")
    turn = next(s for s in spans("runtime.turn") if s.attributes["input.seq"])
    (llm,) = [s for s in spans("llm.stream") if s.context.trace_id == sent.context.trace_id]
    (node,) = [s for s in spans("runtime.node") if s.context.trace_id == sent.context.trace_id]
    # gateway input → (bus, W3C headers) → runtime turn → the DIALOG node → LLM stream: one trace.
    assert turn.context.trace_id == sent.context.trace_id
    assert turn.parent is not None and turn.parent.span_id == sent.context.span_id
    assert dict(node.attributes) == {"node.id": "d", "node.type": "CONTROL.DIALOG"}
    assert node.parent is not None and node.parent.span_id == turn.context.span_id
    assert llm.parent is not None and llm.parent.span_id == node.context.span_id
    # The first token is marked on the LLM span, when it came.
    (first,) = [e for e in llm.events if e.name == "first_token"]
    assert llm.start_time <= first.timestamp <= llm.end_time

    # The opening turn runs START, then stops on the DIALOG: one span per node, in order.
    (greeting,) = [s for s in opening if s.name == "runtime.turn" and not s.attributes["input.seq"]]
    nodes = sorted((s for s in opening if s.name == "runtime.node"), key=lambda s: s.start_time)
    assert [(s.attributes["node.id"], s.attributes["node.type"]) for s in nodes] == [
        ("s", "CONTROL.START"),
        ("d", "CONTROL.DIALOG"),
    ]
    assert all(s.parent is not None and s.parent.span_id == greeting.context.span_id for s in nodes)

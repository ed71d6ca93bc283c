"""The merged `/openapi.json` the edge serves matches the ServiceAi contract excerpt
(specs/serviceai-openapi-excerpt.yaml) on every path Parley serves from it: `/api/version`, the
Chatty Voice routes, `/api/realtime-token`, `/api/csrf-token` and `/api/realtime/webrtc`, with their
parameters, bodies, response codes and schemas, and the components the excerpt defines.

The document is the one edge-meta serves, merged from the real service apps (as in
test_openapi_contract.py for the Kivox contract).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from .merged_openapi import merged_openapi
from .serviceai_contract import Contract, contract_differences, parse_excerpt, spec_path, tokenize

# Parley's additions to the contract's operations, each documented in docs/webrtc.md: optional, so
# a client generated from the contract neither sends nor misses them. Nothing else may differ.
EXTENSIONS: dict[str, str] = {
    f"{op}: header parameter x-parley-agent not in the contract": "how a cookie or an API key names its agent"
    for op in (
        "GET /api/chatty-voice/tools",
        "POST /api/chatty-voice/tools/execute",
        "GET /api/chatty-voice/ai-context",
        "POST /api/realtime-token",
        "GET /api/csrf-token",
        "POST /api/realtime/webrtc",
    )
} | {
    "POST /api/realtime/webrtc: response codes ['200', '400', '401', '403', '429', '500', '501', '502', "
    "'503', 'default'], contract ['200', '400', '401', '403', '429', '500', '502', 'default']": (
        "501 webrtc.unavailable when the server's media is turned off, 503 webrtc.media_unavailable "
        "when no media worker can take the call"
    ),
}


@pytest.fixture(scope="module")
def contract() -> Contract:
    path = spec_path()
    if path is None:
        pytest.skip("shared/specs/serviceai-openapi-excerpt.yaml is not beside the checkout")
    return parse_excerpt(path)


@pytest.fixture(scope="module")
async def served() -> dict[str, Any]:
    return await merged_openapi()


def test_the_reader_reads_the_excerpt(contract: Contract) -> None:
    assert sorted(contract.paths) == [
        "/api/chatty-voice/ai-context",
        "/api/chatty-voice/tools",
        "/api/chatty-voice/tools/execute",
        "/api/csrf-token",
        "/api/realtime-token",
        "/api/realtime/webrtc",
    ]
    assert sorted(contract.schemas) == sorted(
        [
            "ChattyToolDefinition",
            "ChattyExecuteRequest",
            "ChattyExecuteResponse",
            "ChattyAiContextResponse",
            "RealtimeTokenRequest",
            "RealtimeTokenResponse",
            "CsrfTokenResponse",
            "RealtimeWebrtcRequest",
        ]
    )
    tool = contract.schemas["ChattyToolDefinition"]
    assert tool["required"] == ["type", "function"]
    function = tool["properties"]["function"]
    assert function["required"] == ["name", "description", "parameters"]
    parameters = function["properties"]["parameters"]
    # Property names that are also keywords are read as properties where the grammar says so.
    assert sorted(parameters["properties"]) == ["additionalProperties", "properties", "required", "type"]
    assert parameters["required"] == ["type", "properties"]
    member = parameters["properties"]["properties"]["additionalProperties"]["allOf"][1]
    assert member["required"] == ["type"] and len(member["properties"]["type"]["anyOf"]) == 2
    token = contract.schemas["RealtimeTokenResponse"]
    assert token["required"] == ["fallback"] and token["properties"]["metadata"]["required"] == [
        "organizationId"
    ]
    webrtc = contract.paths["/api/realtime/webrtc"]["post"]
    assert {"$alias": "*ref_2"} in webrtc["parameters"]
    csrf = next(p for p in webrtc["parameters"] if p.get("name") == "X-CSRF-Token")
    assert csrf["in"] == "header" and csrf["required"] is True
    assert list(webrtc["responses"]["200"]["content"]) == ["application/sdp"]
    assert sorted(webrtc["responses"]["default"]["content"]) == ["application/json", "text/plain"]
    assert contract.paths["/api/realtime-token"]["post"]["requestBody"]["required"] is False
    assert sorted(contract.version_fragment["properties"]) == ["apiVersion", "minClientVersion"]

    # Every `required` names properties of its own schema, all the way down.
    def check(schema: Any) -> None:
        if isinstance(schema, dict):
            if isinstance(schema.get("required"), list) and "properties" in schema:
                assert set(schema["required"]) <= set(schema["properties"]), schema
            for value in schema.values():
                check(value)
        elif isinstance(schema, list):
            for value in schema:
                check(value)

    check(contract.schemas)
    check(contract.paths)


def test_the_tokenizer_skips_folded_text_only() -> None:
    tokens = tokenize(
        [
            (1, "description: >-"),
            (2, "Body: `{ directWebRTC?: boolean }`. More"),
            (3, "tags:"),
            (4, "- chatty"),
        ]
    )
    assert [(t.key, t.value) for t in tokens] == [("description", None), ("tags", None), (None, "chatty")]


def test_the_served_document_matches_the_contract(contract: Contract, served: dict[str, Any]) -> None:
    differences = contract_differences(contract, served)
    assert sorted(differences) == sorted(EXTENSIONS), "\n".join(d for d in differences if d not in EXTENSIONS)


def _csrf_parameter(document: dict[str, Any]) -> dict[str, Any]:
    parameters = document["paths"]["/api/realtime/webrtc"]["post"]["parameters"]
    found: dict[str, Any] = next(p for p in parameters if p["name"] == "X-CSRF-Token")
    return found


EXECUTE = "/api/chatty-voice/tools/execute"


def _op(document: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    op: dict[str, Any] = document["paths"][path][method]
    return op


def _schema(document: dict[str, Any], name: str) -> dict[str, Any]:
    schema: dict[str, Any] = document["components"]["schemas"][name]
    return schema


@pytest.mark.parametrize(
    ("change", "found"),
    [
        (
            lambda d: _schema(d, "RealtimeTokenResponse")["required"].append("clientSecret"),
            "POST /api/realtime-token 200: required ['clientSecret', 'fallback'], contract ['fallback']",
        ),
        (
            lambda d: _schema(d, "ChattyToolDefinition")["properties"].pop("type"),
            "GET /api/chatty-voice/tools 200[].type: missing",
        ),
        (
            lambda d: _schema(d, "ChattyParameterProperty")["allOf"][1]["required"].clear(),
            "GET /api/chatty-voice/tools 200[].function.parameters.properties{*}.allOf[1]: required []",
        ),
        (
            lambda d: _schema(d, "ChattyToolParameters")["properties"]["type"].__setitem__("const", "array"),
            "GET /api/chatty-voice/tools 200[].function.parameters.type: contract enum ['object']",
        ),
        (
            lambda d: _csrf_parameter(d).__setitem__("required", False),
            "POST /api/realtime/webrtc: header parameter x-csrf-token required=False, contract True",
        ),
        (
            lambda d: d["paths"]["/api/realtime-token"]["post"]["responses"].pop("429"),
            "POST /api/realtime-token: response codes",
        ),
        (
            lambda d: d["paths"]["/api/realtime/webrtc"]["post"]["responses"]["200"].__setitem__(
                "content", {"text/plain": {"schema": {"type": "string"}}}
            ),
            "POST /api/realtime/webrtc 200: no application/sdp body",
        ),
        (
            lambda d: _op(d, EXECUTE, "post")["requestBody"].__setitem__("required", True),
            "POST /api/chatty-voice/tools/execute: request body required=True, contract False",
        ),
        (
            lambda d: _schema(d, "CsrfTokenResponse")["properties"]["token"].pop("minLength"),
            "GET /api/csrf-token 200.token: contract minLength 1, served None",
        ),
        (
            lambda d: d["paths"]["/api/chatty-voice/tools"]["get"]["responses"]["403"]["content"][
                "application/json"
            ].__setitem__("schema", {"$ref": "#/components/schemas/Error"}),
            "GET /api/chatty-voice/tools 403: contract type ErrorEnvelope, served Error",
        ),
        (
            lambda d: _op(d, "/api/version", "get")["responses"]["200"].__setitem__(
                "content", {"application/json": {"schema": {"properties": {"apiVersion": {}}}}}
            ),
            "GET /api/version 200.minClientVersion: missing",
        ),
        (lambda d: d["paths"].pop("/api/csrf-token"), "/api/csrf-token: path missing"),
    ],
    ids=[
        "required", "property", "nested-required", "enum", "header", "codes", "media", "body-required",
        "constraint", "envelope-name", "version", "path",
    ],
)  # fmt: skip
def test_the_comparison_sees_what_a_generated_client_would(
    contract: Contract, served: dict[str, Any], change: Any, found: str
) -> None:
    document = copy.deepcopy(served)
    change(document)
    differences = contract_differences(contract, document)
    assert any(d.startswith(found) for d in differences), differences

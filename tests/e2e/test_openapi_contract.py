"""The merged `/openapi.json` the edge serves matches the Kivox contract (specs/kivox-client.d.ts) in
everything a generated client sees: operations and their ids, parameters, request bodies, response
codes and schema names, and every contract schema's properties, required flags and enums.

The document is the one edge-meta serves, merged from the real service apps (each answering its
own /openapi.json in process); tests/e2e/test_devstack.py checks the one a `parley run` edge serves.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from .kivox_contract import (
    EXTENSIONS,
    Contract,
    Obj,
    Ref,
    contract_differences,
    load_contract,
    spec_path,
)
from .merged_openapi import merged_openapi

NULL = {"type": "null"}


@pytest.fixture(scope="module")
def contract() -> Contract:
    path = spec_path()
    if path is None:
        pytest.skip("shared/specs/kivox-client.d.ts is not beside the checkout")
    return load_contract(path)


@pytest.fixture(scope="module")
async def served() -> dict[str, Any]:
    return await merged_openapi()


def test_the_parser_reads_the_whole_contract(contract: Contract) -> None:
    assert len(contract.paths) == 24 and sum(len(m) for m in contract.paths.values()) == 42
    assert contract.paths["/agents/{agentID}/lint"] == {"post": "lintAgent"}
    assert len(contract.operations) == 42 and len(contract.schema_names) == 45
    blueprint = contract.schema("Blueprint")
    assert isinstance(blueprint, Obj) and blueprint.members["version"][1] is False  # required
    node = contract.schema("BlueprintNode")
    assert not isinstance(node, Obj)  # `{...} & {[key: string]: unknown}`
    lint = contract.operations["lintAgent"].members["requestBody"]
    assert lint[1] is False  # required
    error = contract.schema("Error")
    assert isinstance(error, Obj) and error.members["params"][1] is True
    assert isinstance(contract.schema("Agent"), Obj)
    tier = contract.schema("Org")
    assert isinstance(tier, Obj) and tier.members["tier"][0] == Ref("components", ("schemas", "OrgTier"))


def test_the_served_document_matches_the_contract(contract: Contract, served: dict[str, Any]) -> None:
    differences = contract_differences(contract, served)
    assert sorted(differences) == sorted(EXTENSIONS), "\n".join(d for d in differences if d not in EXTENSIONS)


@pytest.mark.parametrize(
    ("change", "found"),
    [
        (
            lambda d: d["components"]["schemas"].__setitem__(
                "ErrorEnvelope", d["components"]["schemas"].pop("Error")
            ),
            "schema Error: missing",
        ),
        (
            lambda d: d["components"]["schemas"]["Blueprint"]["required"].remove("version"),
            "schema Blueprint.version: contract required, served optional",
        ),
        (
            lambda d: d["components"]["schemas"]["BlueprintNode"]["required"].remove("data"),
            "schema BlueprintNode.data: contract required, served optional",
        ),
        (
            lambda d: d["paths"]["/agents/{agentID}/lint"]["post"]["requestBody"].__setitem__(
                "content",
                {
                    "application/json": {
                        "schema": {"anyOf": [{"$ref": "#/x/LintAgentRequest"}, {"type": "null"}]}
                    }
                },
            ),
            "POST /agents/{agentID}/lint request body: contract type LintAgentRequest, served an inline",
        ),
        (
            lambda d: d["paths"]["/auth/signup"]["post"]["parameters"][0].__setitem__("required", False),
            "POST /auth/signup: header parameter X-Turnstile-Token required=False, contract True",
        ),
        (
            lambda d: d["components"]["schemas"]["MemberRole"]["enum"].remove("viewer"),
            "schema MemberRole: contract enum",
        ),
        (
            lambda d: d["paths"]["/users/me/agents"]["get"].__setitem__("operationId", "listAgents"),
            "GET /users/me/agents: operationId 'listAgents', contract 'listUserAgents'",
        ),
        (
            lambda d: d["paths"]["/orgs"]["post"]["responses"].__setitem__(
                "200", d["paths"]["/orgs"]["post"]["responses"].pop("201")
            ),
            "POST /orgs: response codes",
        ),
    ],
    ids=["error-name", "blueprint-version", "node-data", "lint-body", "turnstile", "enum", "op-id", "status"],
)
def test_the_comparison_sees_what_a_generated_client_would(
    contract: Contract, served: dict[str, Any], change: Any, found: str
) -> None:
    document = copy.deepcopy(served)
    change(document)
    differences = contract_differences(contract, document)
    assert any(d.startswith(found) for d in differences), differences

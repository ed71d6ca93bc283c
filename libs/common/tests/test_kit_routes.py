"""ContractRoute leaves `None` fields out of every response of its router."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from parley_common.kit.routes import ContractRoute


class Item(BaseModel):
    id: str
    note: str | None = None


def test_none_fields_are_left_out_and_the_model_comes_from_the_annotation() -> None:
    contract = APIRouter(route_class=ContractRoute)
    plain = APIRouter()

    @contract.get("/contract")
    async def contract_item() -> Item:
        return Item(id="a")

    @plain.get("/plain")
    async def plain_item() -> Item:
        return Item(id="a")

    app = FastAPI()
    app.include_router(contract)
    app.include_router(plain)
    client = TestClient(app)
    assert client.get("/contract").json() == {"id": "a"}
    assert client.get("/plain").json() == {"id": "a", "note": None}
    schema = app.openapi()["paths"]["/contract"]["get"]["responses"]["200"]
    assert schema["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Item"}

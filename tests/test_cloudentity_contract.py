"""The Cloudentity simulator against Cloudentity's published contract: every request the adapter
sent and every answer the simulator gave, validated with openapi-core against
shared/specs/cloudentity/identitysystem.swagger.yaml.

openapi-core validates OpenAPI 3.0/3.1 only, and the file is Swagger 2.0; ``openapi3`` converts
the operations we use mechanically (definitions to components, body parameters to request bodies,
response schemas and headers to content), changing nothing of their schemas, so the adapter is
checked against the vendor's own definitions.

DEVIATIONS of the file (``DEVIATIONS``) are listed and checked to still be there, so a newer file
that fixes one makes this test say so.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters

from activities.errors import ConcurrentModification, InvalidRequest, TooManyAttempts
from activities.providers.cloudentity import CloudentityClient
from tests.simulators.cloudentity import POOL, TENANT, CloudentitySimulator, Recorded, running
from tests.test_cloudentity_adapter import PASSWORD, new_principal, settings_for

yaml: Any = importlib.import_module("yaml")
"""PyYAML (an openapi-core dependency, through jsonschema-path); its stubs are not installed."""
SPEC = Path(__file__).resolve().parents[2] / "shared/specs/cloudentity/identitysystem.swagger.yaml"
if not SPEC.exists():  # a worktree beside the shared folder, or inside the project
    SPEC = Path("/work/shared/specs/cloudentity/identitysystem.swagger.yaml")
OPERATIONS = {
    ("post", "/system/pools/{ipID}/users"): "systemCreateUser",
    ("post", "/system/pools/{ipID}/users/by_key"): "systemGetUserByKey",
    ("get", "/system/pools/{ipID}/users/{userID}"): "systemGetUser",
    ("put", "/system/pools/{ipID}/users/{userID}"): "systemUpdateUser",
    ("delete", "/system/pools/{ipID}/users/{userID}"): "systemDeleteUser",
    ("post", "/system/pools/{ipID}/user/code/generate"): "generateCodeForUser",
    ("post", "/system/pools/{ipID}/users/{userID}/activate"): "activateSelfRegisteredUser",
    ("post", "/system/pools/{ipID}/users/{userID}/addresses/update"): (
        "systemUpdateVerifiableAddress"
    ),
}
DEVIATIONS: dict[str, Callable[[dict[str, Any]], bool]] = {
    "412 responses are described as 'Payload too large' (payloadTooLargeHTTPError), though the"
    " API's description says 412 answers an If-Match mismatch": lambda s: (
        s["responses"]["payloadTooLargeHTTPError"]["description"] == "Payload too large"
    ),
    "X-Idempotency-Key is described in info.description only, as no operation's parameter": (
        lambda s: all(
            p.get("name", "").lower() != "x-idempotency-key"
            for path in s["paths"].values()
            for op in path.values()
            for p in op.get("parameters", [])
        )
    ),
    "payload and metadata values are typed 'object' (additionalProperties: {type: object}, a"
    " Go map[string]interface{}), though the tutorial sends strings (given_name: John); read"
    " as any value": lambda s: (
        s["definitions"]["NewUser"]["properties"]["payload"]["additionalProperties"]
        == {"type": "object"}
    ),
    "basePath names the tenant 'default'; the real one is ours (/api/identity/{tenant})": (
        lambda s: s["basePath"] == "/api/identity/default"
    ),
    "the token endpoint is not an operation of the file (only securityDefinitions.tokenUrl)": (
        lambda s: "/default/system/oauth2/token" == s["securityDefinitions"]["system"]["tokenUrl"]
    ),
}
"""Also not in the file, and ASSUMED by simulator and adapter alike: how a wrong code is
answered (400 ``invalid_code``; the file lists 400, 401, 404, 412, 422, 429) and the
brute-force limit (5)."""


ANY_VALUE = {"additionalProperties": {"type": "object"}}
"""go-swagger's rendering of a Go ``map[string]interface{}`` (payload, metadata): read as any
value, as the tutorial's own example sends strings (DEVIATIONS)."""


def _refs(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _refs(v) for k, v in node.items() if not k.startswith("x-")}
        if out.get("additionalProperties") == ANY_VALUE["additionalProperties"]:
            out["additionalProperties"] = {}
        ref = out.get("$ref")
        if isinstance(ref, str):
            out["$ref"] = ref.replace("#/definitions/", "#/components/schemas/")
        return out
    if isinstance(node, list):
        return [_refs(v) for v in node]
    return node


def _response(swagger: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in answer:
        answer = swagger["responses"][answer["$ref"].rsplit("/", 1)[-1]]
    converted: dict[str, Any] = {"description": answer.get("description", "")}
    if "schema" in answer:
        converted["content"] = {"application/json": {"schema": _refs(answer["schema"])}}
    if "headers" in answer:
        converted["headers"] = {
            name: {"schema": {"type": h.get("type", "string")}}
            for name, h in answer["headers"].items()
        }
    return converted


def openapi3(swagger: dict[str, Any]) -> dict[str, Any]:
    """The operations in ``OPERATIONS`` as an OpenAPI 3.0 document (security left out: the
    simulator's own tests check the scopes)."""
    paths: dict[str, Any] = {}
    for (method, path), operation_id in OPERATIONS.items():
        operation = swagger["paths"][path][method]
        assert operation["operationId"] == operation_id
        converted: dict[str, Any] = {"operationId": operation_id, "parameters": []}
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "body":
                converted["requestBody"] = {
                    "content": {"application/json": {"schema": _refs(parameter["schema"])}}
                }
            else:
                converted["parameters"].append(
                    {
                        "name": parameter["name"],
                        "in": parameter["in"],
                        "required": parameter.get("required", False),
                        "schema": {"type": parameter.get("type", "string")},
                    }
                )
        converted["responses"] = {
            str(status): _response(swagger, answer)
            for status, answer in operation["responses"].items()
        }
        paths.setdefault(path, {})[method] = converted
    return {
        "openapi": "3.0.3",
        "info": {"title": swagger["info"]["title"], "version": "converted"},
        "servers": [{"url": f"http://sim/api/identity/{TENANT}"}],
        "paths": paths,
        "components": {"schemas": _refs(swagger["definitions"])},
    }


@pytest.fixture(scope="module")
def swagger() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(SPEC.read_text())
    return loaded


@pytest.fixture(scope="module")
def api(swagger: dict[str, Any]) -> OpenAPI:
    return OpenAPI.from_dict(openapi3(swagger))


class _Request:
    def __init__(self, recorded: Recorded) -> None:
        self.host_url = "http://sim"
        self.path = recorded.path
        self.full_url_pattern = f"http://sim{recorded.path}"
        self.method = recorded.method.lower()
        self.parameters = RequestParameters(header=recorded.headers)
        self.content_type = "application/json"
        self.body = None if recorded.body is None else json.dumps(recorded.body).encode()


class _Response:
    def __init__(self, recorded: Recorded) -> None:
        self.status_code = recorded.status
        self.content_type = recorded.response_headers.get("content-type", "application/json")
        self.headers = recorded.response_headers
        self.data = b"" if recorded.response is None else json.dumps(recorded.response).encode()


def test_the_files_known_deviations_are_still_there(swagger: dict[str, Any]) -> None:
    for deviation, holds in DEVIATIONS.items():
        assert holds(swagger), f"fixed in the file now? {deviation}"


@pytest.fixture
async def sim() -> AsyncIterator[CloudentitySimulator]:
    async with running() as simulator:
        yield simulator


async def test_every_exchange_fits_the_contract(sim: CloudentitySimulator, api: OpenAPI) -> None:
    client = CloudentityClient(settings_for(sim))
    identity = client.identity
    try:
        # Every operation, with its success and its documented errors.
        assert await identity.find_principal("alice@example.com") is None  # 404
        await identity.create_principal(new_principal(), PASSWORD)  # 201
        sim.idempotency.clear()
        await identity.create_principal(new_principal(), PASSWORD)  # 409, then GET 200
        assert await identity.find_principal("alice@example.com") is not None  # 200
        code = await identity.new_code("u-alice")  # 201
        assert not await identity.confirm_code("u-alice", "00000000" if code != "0" * 8 else "1")
        assert await identity.confirm_code("u-alice", code)  # 201
        current = await identity.get_principal("u-alice")
        assert current is not None
        await identity.activate_principal("u-alice", "c-1", "CUST1", current.version)  # PUT 200
        with pytest.raises(ConcurrentModification):  # 412: a stale If-Match
            await client.call(
                "PUT",
                client.path("users", "u-alice"),
                json={"status": "active"},
                headers={"If-Match": current.version},
            )
        sim.set_faults(reject_metadata=True)
        await identity.create_principal(new_principal("bob@example.com", "u-bob"), PASSWORD)
        bob = await identity.get_principal("u-bob")
        assert bob is not None
        # Staff approval: the address verified (systemUpdateVerifiableAddress), then a 422.
        with pytest.raises(InvalidRequest):
            await identity.activate_principal("u-bob", "c-3", "CUST3", bob.version)
        sim.reset_faults()
        for _ in range(5):
            await identity.confirm_code("u-bob", "12345678")
        with pytest.raises(TooManyAttempts):
            await identity.confirm_code("u-bob", "12345678")
        assert await identity.undo_principal("u-alice")  # 204
        assert not await identity.undo_principal("u-alice")  # 404
    finally:
        await client.aclose()

    exchanges = [r for r in sim.requests if r.path.startswith(f"/api/identity/{TENANT}/")]
    seen = {(r.method, r.status) for r in exchanges}
    assert {("POST", 201), ("POST", 409), ("POST", 404), ("PUT", 200), ("PUT", 412)} <= seen
    assert {("PUT", 422), ("POST", 429), ("POST", 400), ("DELETE", 204)} <= seen
    assert {("DELETE", 404), ("GET", 200)} <= seen
    for recorded in exchanges:
        assert POOL in recorded.path
        request, response = _Request(recorded), _Response(recorded)
        api.validate_request(request)
        api.validate_response(request, response)
        if 200 <= recorded.status < 300 and recorded.status != 204:
            assert "etag" in recorded.response_headers, recorded.path
        if recorded.status >= 400:
            assert recorded.response["status_code"] == recorded.status

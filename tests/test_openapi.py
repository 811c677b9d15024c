"""The served OpenAPI document keeps the seed specs' paths and schemas and tells the truth about errors."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from tests.spec import PLATFORM, SDG, SPEC_DIR, load

# Seed paths not served yet (none now). The test fails when a listed path is served or an
# unlisted one is missing.
PENDING: set[str] = set()


def _served(client: TestClient) -> dict:  # type: ignore[type-arg]
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def test_vendored_specs_match_shared_originals() -> None:
    shared = Path(__file__).resolve().parents[2] / "shared" / "spec"
    for name in (PLATFORM, SDG):
        original = shared / name
        if original.exists():
            assert (SPEC_DIR / name).read_text() == original.read_text(), name


def test_every_seed_path_is_served_or_pending(client: TestClient) -> None:
    served = set(_served(client)["paths"])
    seed = {f"/api/v1{p}" for spec in (PLATFORM, SDG) for p in load(spec)["paths"]}
    assert seed - served == PENDING
    assert not (PENDING & served)


def test_every_seed_schema_is_present(client: TestClient) -> None:
    schemas = _served(client)["components"]["schemas"]
    for spec in (PLATFORM, SDG):
        for name in load(spec)["components"]["schemas"]:
            assert name in schemas, name
    for name, definition in load(PLATFORM)["components"]["schemas"].items():
        for field in definition.get("required", []):
            assert field in schemas[name]["properties"], (name, field)


def test_operations_document_errors_and_security(client: TestClient) -> None:
    doc = _served(client)
    assert doc["components"]["securitySchemes"]["ApiKeyAuth"]["name"] == "Authorization"
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            assert "422" not in op["responses"], (method, path)
            assert "500" in op["responses"]
            if path in ("/api/v1/health", "/api/v1/ready", "/metrics"):
                assert op["security"] == []
            else:
                assert op["security"] == [{"ApiKeyAuth": []}]
                assert {"401", "429"} <= set(op["responses"]), (method, path)

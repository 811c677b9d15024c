"""The served OpenAPI document keeps the seed specs' paths and schemas and tells the truth about errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import ROOT
from tests.spec import PLATFORM, SDG, SPEC_DIR, load

# Seed paths not served yet (none now). The test fails when a listed path is served or an
# unlisted one is missing.
PENDING: set[str] = set()


def _served(client: TestClient) -> dict:  # type: ignore[type-arg]
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_vendored_specs_are_the_recorded_seed_specs() -> None:
    """spec/SHA256SUMS records the seed specs as they were vendored: an edit of spec/ fails here."""
    recorded = dict(reversed(line.split()) for line in (SPEC_DIR / "SHA256SUMS").read_text().splitlines())
    assert set(recorded) == {PLATFORM, SDG}
    for name, digest in recorded.items():
        assert _sha256(SPEC_DIR / name) == digest, f"spec/{name} differs from the vendored seed spec"


def test_vendored_specs_match_shared_originals() -> None:
    """The team's copy in ../shared/spec (beside the clone in CI) is the same; a clone without it skips."""
    shared = ROOT.parent / "shared" / "spec"
    if not shared.is_dir():
        pytest.skip(f"no shared specs at {shared}: checked against spec/SHA256SUMS only")
    for name in (PLATFORM, SDG):
        assert _sha256(SPEC_DIR / name) == _sha256(shared / name), f"spec/{name} differs from shared/spec/{name}"


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


def test_no_docs_page_loads_from_a_cdn(client: TestClient) -> None:
    """Winnow runs offline: FastAPI's ReDoc page (a CDN script) is not served; the console's API docs
    page (vendored Swagger UI) is, with no script or style from another origin."""
    assert client.get("/api/v1/redoc").status_code == 404
    page = client.get("/api/v1/docs")
    assert page.status_code == 200
    assert "cdn." not in page.text and 'src="http' not in page.text and 'href="http' not in page.text

"""Property-based fuzzing of the served OpenAPI document: no 5xx, no response off its schema."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from tests.spec import PLATFORM, SDG, SPEC_DIR
from winnow.api import create_app
from winnow.config import RateLimits, Settings

pytestmark = pytest.mark.slow  # property-based fuzzing of the whole API

_unlimited = "100000/minute"
# schemathesis needs the app at import, before any fixture runs: build its settings from the
# embedded defaults alone (a developer's WINNOW_DATABASE_URL or WINNOW_REDIS_URL must not leak in),
# in a data dir removed when the module's tests end.
_data_dir = tempfile.TemporaryDirectory(prefix="winnow-fuzz-")
with pytest.MonkeyPatch.context() as _env:
    for _name in [n for n in os.environ if n.startswith("WINNOW_") and not n.startswith("WINNOW_TEST_")]:
        _env.delenv(_name)
    _settings = Settings(
        data_dir=_data_dir.name,
        workers=0,
        rate_limits=RateLimits(generation=_unlimited, batch=_unlimited, other=_unlimited),
    )
app = create_app(_settings)
schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", app)
_keys: dict[str, str] = {}
# Operations that check more than a schema can say (a file's content, that a named model exists,
# that two lists pair up, that exactly one training source is named, that a model takes the tools,
# that a model is a fine-tuned one):
# a schema-valid body may rightly be a 400 there. Every other check still runs on them.
SEMANTIC = {
    "/api/v1/synthetic_data_generation/submit_job",
    "/api/v1/evaluations",
    "/api/v1/files",
    "/v1/score",
    "/api/v1/fine_tuning/jobs",
    "/v1/files",
    "/v1/fine_tuning/jobs",
    "/v1/responses",
    "/v1/embeddings",
    "/api/v1/prompts",  # a template's placeholders
    "/api/v1/prompts/{name}/versions",
    "/v1/batches",  # a batch file of the key's, each line a request for the endpoint
    "/api/v1/models/{model_id}",  # only a fine-tuned model can be deleted (a configured one: 400)
}


@pytest.fixture(scope="module", autouse=True)
def _running_app() -> Iterator[None]:
    """Run the app's lifespan (database, keys) around the fuzzing; schemathesis sends the requests."""
    with _data_dir, TestClient(app):
        _keys["admin"] = app.state.runtime.keys.create("fuzzer", admin=True).key
        yield


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi(case) -> None:  # type: ignore[no-untyped-def]
    # negative_data_rejection is left out: like OpenAI's API, Winnow ignores unknown query
    # parameters and headers on purpose. Strict body typing is tested in test_errors.py.
    excluded = [schemathesis.checks.negative_data_rejection]
    # A list's ``after`` cursor must name a row of that list (a 400 otherwise), which no schema says.
    if case.operation.path in SEMANTIC or (case.query or {}).get("after") is not None:
        excluded.append(schemathesis.checks.positive_data_acceptance)
    case.call_and_validate(headers={"Authorization": f"Bearer {_keys['admin']}"}, excluded_checks=excluded)


# The seed specs themselves, as an outside auditor runs them: every operation of both, answered
# with no server error and on the spec's own response schemas.
def _seed_schema(name: str) -> Any:
    loaded = schemathesis.openapi.from_path(SPEC_DIR / name)
    loaded.app = app
    return loaded


platform_spec = _seed_schema(PLATFORM)
sdg_spec = _seed_schema(SDG)
SEED_BASE = "http://testserver/api/v1"
SEED_CHECKS = [schemathesis.checks.not_a_server_error, schemathesis.checks.response_schema_conformance]


@platform_spec.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_platform_seed_spec_holds(case) -> None:  # type: ignore[no-untyped-def]
    case.call_and_validate(
        headers={"Authorization": f"Bearer {_keys['admin']}"}, checks=SEED_CHECKS, base_url=SEED_BASE
    )


@sdg_spec.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_sdg_seed_spec_holds(case) -> None:  # type: ignore[no-untyped-def]
    case.call_and_validate(
        headers={"Authorization": f"Bearer {_keys['admin']}"}, checks=SEED_CHECKS, base_url=SEED_BASE
    )

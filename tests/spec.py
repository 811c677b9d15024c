"""Validate bodies against the seed specs' component schemas (OpenAPI 3.0 semantics)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import FormatChecker
from openapi_schema_validator import OAS30Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

SPEC_DIR = Path(__file__).resolve().parents[1] / "spec"
PLATFORM = "llm_platform.yaml"
SDG = "synthetic_data_generation.yaml"


@cache
def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((SPEC_DIR / name).read_text())


def assert_valid(schema_name: str, body: Any, spec: str = PLATFORM) -> None:
    """Raise jsonschema.ValidationError unless ``body`` is a valid ``schema_name`` of ``spec``."""
    document = load(spec)
    uri = f"urn:winnow-spec:{spec}"
    registry: Registry[Any] = Registry().with_resource(uri, Resource.from_contents(document, DRAFT4))
    validator = OAS30Validator(
        {"$ref": f"{uri}#/components/schemas/{schema_name}"},
        registry=registry,
        format_checker=FormatChecker(),
    )
    validator.validate(body)


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """The response is ``status`` with a spec-valid ErrorResponse (and ``code`` when given)."""
    assert response.status_code == status, (response.status_code, response.text)
    body: dict[str, Any] = response.json()
    assert_valid("ErrorResponse", body)
    if code is not None:
        assert body["error"] == code, body
    return body

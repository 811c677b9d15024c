"""Winnow's OpenAPI document: FastAPI's, made to tell the truth about errors and keys.

- FastAPI's 422 is never sent (validation errors are the spec's 400), so it is dropped.
- Every operation documents the ``ErrorResponse`` statuses it can return.
- The seed specs' ``ApiKeyAuth`` scheme, on every operation but the probes.
- Every component schema of both seed specs is present under its seed name.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from winnow import __version__
from winnow.schemas import platform, sdg
from winnow.schemas.common import ErrorResponse, OpenAIErrorResponse

API_PREFIX = "/api/v1"
PUBLIC_PATHS = {f"{API_PREFIX}/health", f"{API_PREFIX}/ready", "/metrics"}

SEED_SCHEMAS: tuple[type[BaseModel], ...] = (
    ErrorResponse,
    platform.HealthResponse,
    platform.DetailedStatusResponse,
    platform.ReadinessResponse,
    platform.Model,
    platform.ModelsListResponse,
    platform.ModelInfoResponse,
    platform.GenerateRequest,
    platform.GenerateResponse,
    platform.BatchGenerateRequest,
    platform.BatchGenerateResponse,
    sdg.PromptResponseScore,
    sdg.SyntheticDataGeneration,
    sdg.Message,
    sdg.Completion,
    OpenAIErrorResponse,
)

_ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
_OPENAI_ERROR_REF = {"$ref": "#/components/schemas/OpenAIErrorResponse"}
_DESCRIPTIONS = {
    "400": "Invalid request parameters",
    "401": "Missing, malformed, unknown or revoked API key",
    "413": "Request body too large",
    "429": "Rate limit exceeded (see Retry-After)",
    "500": "Internal error",
}
_RATE_HEADERS = {
    "Retry-After": {"schema": {"type": "integer"}, "description": "Seconds until a retry may succeed"},
    "X-RateLimit-Limit": {"schema": {"type": "integer"}},
    "X-RateLimit-Remaining": {"schema": {"type": "integer"}},
    "X-RateLimit-Reset": {"schema": {"type": "integer"}, "description": "Unix time the window resets"},
}


# On /v1 a spent budget is OpenAI's 429 insufficient_quota, not the platform API's 402.
_OPENAI_DESCRIPTIONS = {
    **_DESCRIPTIONS,
    "429": "Rate limit exceeded (rate_limit_exceeded, see Retry-After) or the key's budget is spent (insufficient_quota)",
}


def _error(status: str, openai_surface: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "description": (_OPENAI_DESCRIPTIONS if openai_surface else _DESCRIPTIONS)[status],
        "content": {"application/json": {"schema": _OPENAI_ERROR_REF if openai_surface else _ERROR_REF}},
    }
    if status == "429":
        body["headers"] = _RATE_HEADERS
    return body


def _add_seed_schemas(schemas: dict[str, Any]) -> None:
    for model in SEED_SCHEMAS:
        if model.__name__ in schemas:
            continue
        generated = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in generated.pop("$defs", {}).items():
            schemas.setdefault(name, definition)
        schemas[model.__name__] = generated


def build_openapi(app: FastAPI) -> dict[str, Any]:
    doc = get_openapi(
        title="Winnow — LLM Optimization Platform API",
        version=__version__,
        description=(
            "Winnow serves local and commercial LLMs behind one API and generates synthetic "
            "training data. Implements the LLM Optimization Platform API and the Synthetic Data "
            "Generation API; every route lives under /api/v1. Authenticate with "
            "`Authorization: Bearer <key>`."
        ),
        routes=app.routes,
    )
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    _add_seed_schemas(schemas)
    components["securitySchemes"] = {
        "ApiKeyAuth": {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": 'API key authentication. Use "Bearer YOUR_API_KEY"',
        }
    }
    for path, operations in doc.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            wanted = ["500"]
            if operation.get("parameters") or operation.get("requestBody"):
                wanted.append("400")
            if operation.get("requestBody"):
                wanted.append("413")
            if path in PUBLIC_PATHS:
                operation["security"] = []
            else:
                operation["security"] = [{"ApiKeyAuth": []}]
                wanted += ["401", "429"]
            openai_surface = path.startswith("/v1/")
            for status, response in responses.items():
                if openai_surface and status[0] in "45":  # declared via ErrorResponse models
                    for media in response.get("content", {}).values():
                        media["schema"] = _OPENAI_ERROR_REF
            for status in wanted:
                responses.setdefault(status, _error(status, openai_surface))
    return doc


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

"""Turns every error into the spec's ``ErrorResponse`` (one place, one shape)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import iter_route_contexts
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from winnow.errors import CODE_BY_STATUS, WinnowError
from winnow.schemas.common import ErrorResponse

log = logging.getLogger("winnow.api")

_MESSAGES = {
    400: "Invalid request",
    401: "Missing or invalid API key",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    413: "Request body too large",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}


OPENAI_PREFIX = "/v1/"


@dataclass(frozen=True)
class OpenAIError:
    """How one Winnow error reads on ``/v1``: the status, ``type`` and ``code`` OpenAI sends for it."""

    status: int
    type: str
    code: str | None


# Winnow's codes that OpenAI names otherwise; any other 4xx is an ``invalid_request_error`` and
# any 5xx a ``server_error``, with Winnow's own code (OpenAI's schema allows any string).
_OPENAI_BY_CODE = {
    "unauthorized": OpenAIError(401, "invalid_request_error", "invalid_api_key"),
    "rate_limit_exceeded": OpenAIError(429, "requests", "rate_limit_exceeded"),
    # OpenAI answers a spent balance with 429 insufficient_quota, which its SDK raises as RateLimitError.
    "budget_exceeded": OpenAIError(429, "insufficient_quota", "insufficient_quota"),
}


def openai_error(status: int, code: str | None) -> OpenAIError:
    """The OpenAI status, type and code of Winnow's ``status`` and ``code``."""
    known = _OPENAI_BY_CODE.get(code or "")
    if known is not None:
        return known
    return OpenAIError(status, "server_error" if status >= 500 else "invalid_request_error", code)


def openai_error_payload(
    message: str,
    status: int,
    code: str | None,
    param: str | None = None,
    upstream: Mapping[str, object] | None = None,
) -> dict[str, object]:
    """OpenAI's error object ``{"error": {message, type, param, code}}``, as a body or a stream's event.
    An ``upstream``'s own error object (a forwarded request's 400 or 429) gives its type, code and param."""
    error = openai_error(status, code)
    kind, code = error.type, error.code
    if upstream:
        kind = _text(upstream.get("type")) or kind
        code, param = _text(upstream.get("code")), _text(upstream.get("param"))
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _text(value: object) -> str | None:
    return None if value is None or isinstance(value, dict | list) else str(value)


def error_body(
    code: str,
    message: str,
    details: str | None = None,
    *,
    path: str = "",
    status: int = 500,
    param: str | None = None,
    upstream: Mapping[str, object] | None = None,
) -> bytes:
    """The JSON bytes of an error: the spec's ErrorResponse (``details`` left out when empty, as the
    spec types it), or OpenAI's ``{"error": {...}}`` on the OpenAI-compatible ``/v1`` surface."""
    if path.startswith(OPENAI_PREFIX):
        text = f"{message}: {details}" if details else message
        return json.dumps(openai_error_payload(text, status, code, param, upstream)).encode()
    return ErrorResponse(error=code, message=message, details=details).model_dump_json(exclude_none=True).encode()


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    details: str | None = None,
    headers: dict[str, str] | None = None,
    param: str | None = None,
    upstream: Mapping[str, object] | None = None,
) -> Response:
    path = request.url.path
    body = error_body(code, message, details, path=path, status=status, param=param, upstream=upstream)
    headers = dict(headers or {})
    if path.startswith(OPENAI_PREFIX):
        openai = openai_error(status, code)
        if openai.code == "insufficient_quota":
            headers["x-should-retry"] = "false"  # the SDKs retry a 429 unless told not to
        status = openai.status
    return Response(body, status_code=status, headers=headers or None, media_type="application/json")


def _field(loc: tuple[object, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in {"body", "query", "path", "header"}:
        where, rest = parts[0], parts[1:]
        return f"{'.'.join(rest) or where}" + ("" if where == "body" else f" ({where})")
    return ".".join(parts)


def describe_validation(exc: RequestValidationError) -> str:
    """'max_tokens: Input should be less than or equal to 2048; prompt: Field required'."""
    items = []
    for err in exc.errors()[:10]:
        msg = err.get("msg", "invalid")
        if err.get("type") == "json_invalid":
            items.append(f"body: invalid JSON ({err.get('ctx', {}).get('error', 'parse error')})")
            continue
        items.append(f"{_field(tuple(err.get('loc', ())))}: {msg}")
    return "; ".join(items)


async def _winnow_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, WinnowError)
    if exc.status_code >= 500:
        log.warning("%s: %s (%s)", exc.code, exc.message, exc.details)
    code = exc.code
    if exc.openai_code is not None and request.url.path.startswith(OPENAI_PREFIX):
        code = exc.openai_code
    return error_response(
        request, exc.status_code, code, exc.message, exc.details, exc.headers, exc.param, exc.upstream
    )


# The pydantic error types of a request body and the codes OpenAI gives the same mistakes.
_OPENAI_VALIDATION_CODES = {
    "missing": "missing_required_parameter",
    "greater_than": "{number}_below_min_value",
    "greater_than_equal": "{number}_below_min_value",
    "less_than": "{number}_above_max_value",
    "less_than_equal": "{number}_above_max_value",
    "too_short": "array_below_min_length",
    "too_long": "array_above_max_length",
    "string_too_long": "string_above_max_length",
    "literal_error": "invalid_value",
    "enum": "invalid_value",
}
# A field name in an error's location; anything else there (``str``, ``list[str]``, ``ContentPart``)
# names the member of a union that was tried, not a field.
_FIELD = re.compile(r"[a-z_][a-z0-9_]*")
_UNION_MEMBERS = {"str", "int", "float", "bool"}


def openai_validation_error(error: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """OpenAI's ``code`` and ``param`` for one validation error of a request body: ``param`` is the
    field as OpenAI writes it (``messages[0].role``); an unparsable body has neither."""
    kind = str(error.get("type", ""))
    loc = list(error.get("loc", ()))
    if kind == "json_invalid" or loc[:1] != ["body"] or len(loc) < 2:
        return None, None
    param = ""
    for part in loc[1:]:
        if isinstance(part, int):
            param += f"[{part}]"
        elif _FIELD.fullmatch(str(part)) and part not in _UNION_MEMBERS:
            param += f".{part}" if param else str(part)
        else:
            break
    value = error.get("input")
    if kind == "too_short" and value == []:
        code: str | None = "empty_array"
    elif kind.endswith("_type") or kind == "int_from_float":
        code = "invalid_type"
    else:
        limits = [v for v in (error.get("ctx") or {}).values() if isinstance(v, int | float)]
        number = "integer" if limits and all(isinstance(v, int) for v in limits) else "decimal"  # the field's kind
        code = _OPENAI_VALIDATION_CODES.get(kind, "invalid_value").format(number=number)
    return code, param or None


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    message, details = "Invalid request parameters", describe_validation(exc)
    if request.url.path.startswith(OPENAI_PREFIX):
        code, param = openai_validation_error(exc.errors()[0]) if exc.errors() else (None, None)
        payload = openai_error_payload(f"{message}: {details}", 400, code, param)
        return Response(json.dumps(payload), status_code=400, media_type="application/json")
    return error_response(request, 400, "validation_error", message, details)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    code = CODE_BY_STATUS.get(status, "http_error")
    message = _MESSAGES.get(status, "Request failed")
    if status in (404, 405) and str(exc.detail).lower() == message.lower():
        detail: str | None = f"{request.method} {request.url.path}"
    else:
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail != message else None
    headers = dict(exc.headers or {})
    if status == 405:
        headers["Allow"] = ", ".join(_allowed_methods(request))
    return error_response(request, status, code, message, detail, headers)


def _allowed_methods(request: Request) -> list[str]:
    """Every method any route serves at this path (Starlette names only the first route's).

    ``app.routes`` holds one wrapper per ``include_router`` (FastAPI >= 0.137), which has no
    ``methods``; ``iter_route_contexts`` yields each endpoint with its prefixed path instead."""
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):
        match, _ = route.matches(request.scope)  # the effective (prefixed) route's matcher
        if match != Match.NONE:
            methods |= route.methods or set()
    return sorted(methods)


async def _database_error(request: Request, exc: Exception) -> Response:
    """A database that dropped the connection (restart, failover, a killed backend) or cannot be
    reached is a 503 the client may retry; the pool pre-pings, so the retry gets a fresh connection.
    Any other database error is a bug: the last-resort 500."""
    assert isinstance(exc, DBAPIError)
    if not (exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError)):
        raise exc
    log.warning("database unavailable: %s", exc.orig)
    return error_response(
        request, 503, "service_unavailable", "The database is unavailable", "retry shortly", {"Retry-After": "1"}
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(WinnowError, _winnow_error)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)

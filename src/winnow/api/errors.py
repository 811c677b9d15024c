"""Turns every error into the spec's ``ErrorResponse`` (one place, one shape)."""

from __future__ import annotations

import json
import logging

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
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def error_body(code: str, message: str, details: str | None = None, *, path: str = "", status: int = 500) -> bytes:
    """The JSON bytes of an error: the spec's ErrorResponse (``details`` left out when empty, as the
    spec types it), or OpenAI's ``{"error": {...}}`` on the OpenAI-compatible ``/v1`` surface."""
    if path.startswith(OPENAI_PREFIX):
        body: dict[str, object] = {
            "error": {
                "message": f"{message}: {details}" if details else message,
                "type": _OPENAI_TYPES.get(status, "api_error"),
                "param": None,
                "code": code,
            }
        }
        return json.dumps(body).encode()
    return ErrorResponse(error=code, message=message, details=details).model_dump_json(exclude_none=True).encode()


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    details: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = error_body(code, message, details, path=request.url.path, status=status)
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
    return error_response(request, exc.status_code, exc.code, exc.message, exc.details, exc.headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return error_response(request, 400, "validation_error", "Invalid request parameters", describe_validation(exc))


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

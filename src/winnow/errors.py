"""Winnow's exception tree. Each class maps to one HTTP status and one ``ErrorResponse.error`` code.

    WinnowError (500 internal_error)
    ├── InvalidRequest (400 validation_error)
    │   ├── UnsupportedParameter (400 unsupported_parameter)
    │   ├── UnsupportedValue (400 unsupported_value)
    │   └── ContextLengthExceeded (400 validation_error; on /v1 OpenAI's context_length_exceeded)
    ├── AuthenticationFailed (401 unauthorized)
    ├── PermissionDenied (403 forbidden)
    ├── NotFound (404 not_found)
    │   └── ModelNotFound (404 model_not_found)
    ├── MethodNotAllowed (405 method_not_allowed)
    ├── Conflict (409 conflict)
    ├── PayloadTooLarge (413 payload_too_large)
    ├── RateLimitExceeded (429 rate_limit_exceeded)
    ├── BudgetExceeded (402 budget_exceeded)
    ├── SystemUnhealthy (500 system_unhealthy)
    ├── ServiceUnavailable (503 service_unavailable)
    ├── UpstreamError (502 upstream_error)
    └── UpstreamTimeout (504 upstream_timeout)

Raise them anywhere; the HTTP edge (``winnow.api.errors``) renders them once.
"""

from __future__ import annotations

from typing import ClassVar


class WinnowError(Exception):
    """Base of every error Winnow raises on purpose."""

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    openai_code: ClassVar[str | None] = None  # the code /v1 gives it, where OpenAI has its own

    def __init__(
        self,
        message: str,
        details: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        param: str | None = None,
        upstream: dict[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}
        self.param = param  # the request field at fault (OpenAI's ``param``), when one is
        self.upstream = upstream  # an upstream's own OpenAI error object, passed on by /v1 as it said it


class InvalidRequest(WinnowError):
    status_code = 400
    code = "validation_error"


class UnsupportedParameter(InvalidRequest):
    """A parameter that would change the answer, which this model cannot honour (refused, not ignored)."""

    code = "unsupported_parameter"

    def __init__(self, param: str, model: str, details: str | None = None) -> None:
        message = f"Unsupported parameter: {param!r} is not supported with model {model!r}"
        super().__init__(message, details, param=param)


class UnsupportedValue(InvalidRequest):
    """A parameter this model supports, with a value it cannot honour."""

    code = "unsupported_value"

    def __init__(self, param: str, value: object, model: str) -> None:
        message = f"Unsupported value: {param!r} does not support {value!r} with model {model!r}"
        super().__init__(message, param=param)


class ContextLengthExceeded(InvalidRequest):
    """A prompt that leaves no room in the model's context (``/api/v1`` keeps its validation_error;
    ``/v1`` answers OpenAI's ``context_length_exceeded`` with ``param`` messages or prompt)."""

    openai_code = "context_length_exceeded"


class AuthenticationFailed(WinnowError):
    status_code = 401
    code = "unauthorized"

    def __init__(self, message: str = "Missing or invalid API key", details: str | None = None) -> None:
        super().__init__(message, details, headers={"WWW-Authenticate": "Bearer"})


class PermissionDenied(WinnowError):
    status_code = 403
    code = "forbidden"


class NotFound(WinnowError):
    status_code = 404
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class MethodNotAllowed(WinnowError):
    status_code = 405
    code = "method_not_allowed"


class Conflict(WinnowError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(WinnowError):
    status_code = 413
    code = "payload_too_large"


class RateLimitExceeded(WinnowError):
    status_code = 429
    code = "rate_limit_exceeded"


class BudgetExceeded(WinnowError):
    status_code = 402
    code = "budget_exceeded"


class SystemUnhealthy(WinnowError):
    code = "system_unhealthy"


class ServiceUnavailable(WinnowError):
    status_code = 503
    code = "service_unavailable"


class UpstreamError(WinnowError):
    status_code = 502
    code = "upstream_error"


class UpstreamTimeout(WinnowError):
    status_code = 504
    code = "upstream_timeout"


# Error codes for statuses that arrive from the framework rather than from our own raises.
CODE_BY_STATUS: dict[int, str] = {
    cls.status_code: cls.code
    for cls in (
        InvalidRequest,
        AuthenticationFailed,
        PermissionDenied,
        NotFound,
        MethodNotAllowed,
        Conflict,
        PayloadTooLarge,
        RateLimitExceeded,
        BudgetExceeded,
        ServiceUnavailable,
        UpstreamError,
        UpstreamTimeout,
        WinnowError,
    )
}

__all__ = [
    "CODE_BY_STATUS",
    "AuthenticationFailed",
    "BudgetExceeded",
    "Conflict",
    "InvalidRequest",
    "MethodNotAllowed",
    "ModelNotFound",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "RateLimitExceeded",
    "ServiceUnavailable",
    "SystemUnhealthy",
    "UnsupportedParameter",
    "UnsupportedValue",
    "UpstreamError",
    "UpstreamTimeout",
    "WinnowError",
]

"""The SDK's exceptions: one class per status Winnow answers, each carrying the server's
``ErrorResponse`` (error code, message, details) and the request id it logged.

    WinnowAPIError                  status, error (ErrorResponse or None), request_id, response
    ├── MissingAPIKey               no key given and WINNOW_API_KEY unset (nothing was sent)
    ├── APIConnectionError          no answer: refused, unknown host, dropped connection
    │   └── APITimeoutError         no answer in time
    ├── UnexpectedResponse          an answer that is not Winnow's (a proxy's page, another server)
    ├── ValidationFailed            400, 422
    ├── AuthenticationError         401
    ├── BudgetExceeded              402
    ├── PermissionDenied            403
    ├── NotFound                    404
    ├── Conflict                    409
    ├── PayloadTooLarge             413
    ├── RateLimited                 429 (retry_after)
    └── ServerError                 5xx

Any other status raises ``WinnowAPIError`` itself. An error answer whose body is not an
``ErrorResponse`` (a proxy's 502 page) raises the class of its status with ``error`` None.
"""

from __future__ import annotations

import errno
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx
from pydantic import ValidationError

from winnow.schemas.common import ErrorResponse


class WinnowAPIError(Exception):
    """Base of every error the SDK raises."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error: ErrorResponse | None = None,
        response: httpx.Response | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.error = error
        self.response = response
        self.url = url or (str(response.request.url) if response is not None else None)
        self.request_id = response.headers.get("x-request-id") if response is not None else None

    @property
    def code(self) -> str | None:
        """The ``ErrorResponse.error`` code (``not_found``, ``rate_limit_exceeded``, ...)."""
        return self.error.error if self.error else None

    @property
    def details(self) -> str | None:
        return self.error.details if self.error else None


class MissingAPIKey(WinnowAPIError):
    pass


class APIConnectionError(WinnowAPIError):
    pass


class APITimeoutError(APIConnectionError):
    pass


class UnexpectedResponse(WinnowAPIError):
    pass


class ValidationFailed(WinnowAPIError):
    pass


class AuthenticationError(WinnowAPIError):
    pass


class BudgetExceeded(WinnowAPIError):
    pass


class PermissionDenied(WinnowAPIError):
    pass


class NotFound(WinnowAPIError):
    pass


class Conflict(WinnowAPIError):
    pass


class PayloadTooLarge(WinnowAPIError):
    pass


class RateLimited(WinnowAPIError):
    @property
    def retry_after(self) -> float | None:
        """Seconds the server asked to wait (``Retry-After``), if it said."""
        return retry_after(self.response.headers.get("retry-after")) if self.response is not None else None


class ServerError(WinnowAPIError):
    pass


def retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds: a number of seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


_BY_STATUS: dict[int, type[WinnowAPIError]] = {
    400: ValidationFailed,
    401: AuthenticationError,
    402: BudgetExceeded,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationFailed,
    429: RateLimited,
}


def status_error(response: httpx.Response) -> WinnowAPIError:
    """The exception for an error answer (its body already read)."""
    status = response.status_code
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else WinnowAPIError)
    try:
        error: ErrorResponse | None = ErrorResponse.model_validate_json(response.content)
    except ValidationError:
        error = None
    if error is not None:
        message = f"HTTP {status} {error.error}: {error.message}" + (f" ({error.details})" if error.details else "")
    else:
        message = f"HTTP {status} {response.reason_phrase}: the answer is not Winnow's JSON"
    return cls(message, status=status, error=error, response=response)


def _reason(exc: httpx.TransportError) -> str:
    """Why a connection failed, in a few words: the OS error's text (``connection refused``)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno is not None:
            if cause.errno == errno.ECONNREFUSED:
                return "connection refused"
            return (cause.strerror or str(cause)).lower()
        cause = cause.__cause__ or cause.__context__
    text = str(exc).rstrip(".") or type(exc).__name__
    return text[0].lower() + text[1:]


def transport_error(exc: httpx.TransportError, base_url: str, timeout: httpx.Timeout) -> APIConnectionError:
    """The exception for a request that got no answer, naming the server's URL."""
    url = str(exc.request.url) if _has_request(exc) else base_url
    if isinstance(exc, httpx.TimeoutException):
        kind, seconds = (
            ("connect", timeout.connect)
            if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout)
            else ("write", timeout.write)
            if isinstance(exc, httpx.WriteTimeout)
            else ("read", timeout.read)
        )
        limit = f"{seconds:g} s" if seconds is not None else "the time allowed"
        return APITimeoutError(
            f"The Winnow server at {base_url} did not answer within {limit} ({kind} timeout)", url=url
        )
    return APIConnectionError(f"Cannot reach the Winnow server at {base_url} ({_reason(exc)})", url=url)


def _has_request(exc: httpx.TransportError) -> bool:
    try:
        exc.request  # noqa: B018 (httpx raises RuntimeError when the error has no request)
    except RuntimeError:
        return False
    return True

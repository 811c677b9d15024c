"""The /v1 pass-through's HTTP client: one pooled aiohttp session per deployment, JSON bytes in and out.

Forwarding needs none of the ``openai`` SDK's request machinery (request options, httpx, typed
responses), which costs about half a millisecond of Python per round trip; a raw keep-alive
session costs a fraction of it. Each call is one attempt: a failure raises ``UpstreamFailure``
with what the router (``winnow.models.router``) decides retries, failover and cooldowns by.
``timeout_s`` bounds each connect and each read, as the SDK's does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import orjson

from winnow.errors import InvalidRequest, RateLimitExceeded, UpstreamError, UpstreamTimeout, WinnowError

_RETRY_STATUSES = frozenset({408, 409, 429})


def status_error(
    model_id: str, status: int, message: str, retry_after: str | None = None, error: dict[str, object] | None = None
) -> WinnowError:
    """An upstream's error status as Winnow's error: 400/422 pass as 400 and 429 as 429 with the
    upstream's wait (both carry its OpenAI ``error`` object, whose type, code and param /v1 passes
    on), anything else is a 502 ``upstream_error``."""
    detail = f"upstream status {status}: {message}"
    if status in (400, 422):
        return InvalidRequest("The upstream model rejected the request", detail, upstream=error)
    if status == 429:
        return RateLimitExceeded(
            f"Upstream for {model_id!r} is rate limiting",
            detail,
            headers={"Retry-After": retry_after or "1"},
            upstream=error,
        )
    return UpstreamError(f"Upstream for {model_id!r} failed", detail)


class UpstreamFailure(Exception):
    """One upstream call that failed: the error a client would get, and the facts the router reads.

    ``status`` is None for a connection error or a timeout; ``retryable`` says whether the same
    upstream may be asked again (408/409/429/5xx, connection errors and timeouts, unless the
    upstream said ``x-should-retry``); ``retry_after`` is the upstream's wait in seconds."""

    def __init__(
        self,
        error: WinnowError,
        status: int | None = None,
        retry_after: float | None = None,
        *,
        retryable: bool,
        connect: bool = False,
        code: str | None = None,
    ) -> None:
        super().__init__(error.message)
        self.error, self.status, self.retry_after = error, status, retry_after
        self.retryable, self.connect, self.code = retryable, connect, code


def retry_after_s(headers: Mapping[str, str] | None) -> float | None:
    """The upstream's ``retry-after-ms`` or ``retry-after`` (seconds), when it names a positive wait."""
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            wait = float(headers.get(name, "")) * scale
        except ValueError:
            continue
        if wait > 0:
            return wait
    return None


def status_failure(model_id: str, status: int, payload: bytes, headers: Mapping[str, str]) -> UpstreamFailure:
    """An error status as the router's ``UpstreamFailure`` (the SDK's retry rule, ``x-should-retry`` first)."""
    message, code = _message(payload)
    error = status_error(model_id, status, message, headers.get("retry-after"), _error_object(payload))
    return UpstreamFailure(
        error, status, retry_after_s(headers), retryable=retryable_status(status, headers), code=code
    )


def retryable_status(status: int, headers: Mapping[str, str]) -> bool:
    """Whether the same upstream may be asked again after ``status`` (the SDK's rule)."""
    should = headers.get("x-should-retry")
    return should == "true" or (should != "false" and (status in _RETRY_STATUSES or status >= 500))


def _error_field(payload: bytes) -> object:
    """The ``error`` field of an upstream's JSON body (OpenAI's error object), if it has one."""
    try:
        return orjson.loads(payload).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return None


def _message(payload: bytes) -> tuple[str, str | None]:
    """The upstream's own error message and code (OpenAI's ``{"error": {"message", "code"}}``), else its body."""
    error = _error_field(payload)
    message = error.get("message") if isinstance(error, dict) else error
    code = error.get("code") if isinstance(error, dict) else None
    if isinstance(message, str) and message:
        return message, code if isinstance(code, str) else None
    return payload.decode("utf-8", "replace")[:1000] or "(no body)", None


def _error_object(payload: bytes) -> dict[str, object] | None:
    """The upstream's OpenAI ``error`` object, when its body is one."""
    error = _error_field(payload)
    return error if isinstance(error, dict) else None


class UpstreamHTTP:
    """POSTs JSON bodies to one OpenAI-compatible base URL over a pooled keep-alive session."""

    def __init__(
        self, model_id: str, upstream_model: str, base_url: str | None, api_key: str, timeout_s: float
    ) -> None:
        self.model_id = model_id
        self.upstream_model = upstream_model
        self.base_url = (base_url or "https://api.openai.com/v1").rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout_s, sock_read=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        # Made on first use, inside the server's event loop, which the session is bound to.
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=1000, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector, headers=self.headers, timeout=self.timeout, skip_auto_headers=("User-Agent",)
            )
        return self._session

    def _timed_out(self, exc: BaseException) -> UpstreamTimeout:
        return UpstreamTimeout(f"Upstream for {self.model_id!r} timed out", f"{type(exc).__name__}: {exc}")

    def _unreachable(self, exc: BaseException) -> UpstreamError:
        return UpstreamError(f"Upstream for {self.model_id!r} is unreachable", f"{type(exc).__name__}: {exc}")

    async def post(self, path: str, body: bytes) -> aiohttp.ClientResponse:
        """The upstream's successful response, its body unread (the caller reads or streams it and
        releases it); a failure raises ``UpstreamFailure``."""
        try:
            response = await self._open().post(self.base_url + path, data=body)
        except TimeoutError as exc:
            raise UpstreamFailure(self._timed_out(exc), retryable=True) from exc
        except aiohttp.ClientConnectorError as exc:  # nothing listens, or the host is unknown
            raise UpstreamFailure(self._unreachable(exc), retryable=True, connect=True) from exc
        except aiohttp.ClientError as exc:
            raise UpstreamFailure(self._unreachable(exc), retryable=True) from exc
        if response.status < 400:
            return response
        try:
            payload = await response.read()
        except (TimeoutError, aiohttp.ClientError):
            payload = b""
        finally:
            response.release()
        raise status_failure(self.model_id, response.status, payload, response.headers)

    async def json(self, path: str, body: bytes) -> dict[str, Any]:
        """POST and return the upstream's JSON object."""
        response = await self.post(path, body)
        try:
            payload = await response.read()
        except TimeoutError as exc:
            raise UpstreamFailure(self._timed_out(exc), retryable=True) from exc
        except aiohttp.ClientError as exc:
            raise UpstreamFailure(self._unreachable(exc), retryable=True) from exc
        finally:
            response.release()
        try:
            result = orjson.loads(payload)
        except orjson.JSONDecodeError:
            result = None
        if not isinstance(result, dict):
            error = UpstreamError(f"Upstream for {self.model_id!r} failed", "its answer is not a JSON object")
            raise UpstreamFailure(error, response.status, retryable=True)
        return result

    async def events(self, response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
        """A server-sent event stream's JSON objects as they arrive, up to ``[DONE]``; an ``error``
        event raises, as the SDK's stream does."""
        data: list[bytes] = []
        finished = False  # a choice had its finish_reason
        try:
            async for raw in response.content:
                line = raw.rstrip(b"\r\n")
                if line.startswith(b"data:"):
                    data.append(line[6:] if line[5:6] == b" " else line[5:])
                    continue
                if line or not data:
                    continue  # other fields (event:, id:, comments) or blank lines between events
                joined, data = b"\n".join(data), []
                if joined == b"[DONE]":
                    return
                chunk = orjson.loads(joined)
                if isinstance(chunk, dict) and chunk.get("error"):
                    raise UpstreamError(f"Upstream for {self.model_id!r} failed", _message(joined)[0])
                finished = finished or _finishes(chunk)
                yield chunk
            if data and data != [b"[DONE]"]:  # a last event the upstream did not end with a blank line
                chunk = orjson.loads(b"\n".join(data))
                finished = finished or _finishes(chunk)
                yield chunk
            if not finished and data != [b"[DONE]"]:  # cut off: the connection ended mid-answer
                raise UpstreamError(f"Upstream for {self.model_id!r} failed", "its stream ended before [DONE]")
        except TimeoutError as exc:
            raise self._timed_out(exc) from exc
        except (aiohttp.ClientError, orjson.JSONDecodeError) as exc:
            raise self._unreachable(exc) from exc
        finally:
            response.release()

    async def forward(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Send an OpenAI-format request upstream as the client sent it (our model id swapped for
        the upstream's) and return the upstream's JSON untouched, unknown fields included."""
        result = await self.json(path, orjson.dumps({**body, "model": self.upstream_model}))
        result["model"] = self.model_id  # the id the client asked for, not the upstream's
        return result

    async def forward_stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Like ``forward`` with ``stream: true``. The upstream is called and its first chunk read
        here, so that a failure before the first chunk raises ``UpstreamFailure`` (another deployment
        may still answer, or it is an HTTP status); the chunks follow as they arrive, and a failure
        after the first raises Winnow's error from the iterator."""
        response = await self.post(path, orjson.dumps({**body, "model": self.upstream_model}))
        chunks = self._renamed(self.events(response))
        try:
            first = await anext(chunks)
        except StopAsyncIteration:
            return chunks  # an empty stream: nothing but [DONE]
        except WinnowError as exc:
            raise UpstreamFailure(exc, retryable=True) from exc
        return _after(first, chunks)

    async def _renamed(self, chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        async for chunk in chunks:
            chunk["model"] = self.model_id
            yield chunk

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


async def _after(first: dict[str, Any], rest: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    yield first
    async for chunk in rest:
        yield chunk


def _finishes(chunk: Any) -> bool:
    return isinstance(chunk, dict) and any(
        isinstance(c, dict) and c.get("finish_reason") for c in chunk.get("choices") or ()
    )

"""The /v1 pass-through's HTTP client: one pooled aiohttp session per deployment, JSON bytes in and out.

Forwarding needs none of the ``openai`` SDK's request machinery (request options, httpx, typed
responses), which costs about half a millisecond of Python per round trip; a raw keep-alive
session costs a fraction of it. Each call is one attempt: a failure raises ``UpstreamFailure``
with what the router (``winnow.models.router``) decides retries, failover and cooldowns by.
``timeout_s`` bounds the whole call (connect to last byte; a stream: connect to its first chunk,
then each gap between chunks), and ``max_bytes`` the answer, read in pieces and dropped past it.
What an upstream says in an error is redacted (``winnow.redact``) before it goes anywhere.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, TypeVar

import aiohttp
import orjson
from aiohttp.http_exceptions import LineTooLong

from winnow import telemetry
from winnow.config import DEFAULT_MAX_UPSTREAM_RESPONSE_BYTES
from winnow.errors import InvalidRequest, RateLimitExceeded, UpstreamError, UpstreamTimeout, WinnowError
from winnow.redact import redact, redact_json

T = TypeVar("T")
_RETRY_STATUSES = frozenset({408, 409, 429})
_ERROR_BODY_BYTES = 64 * 1024  # of an error status's body: enough for any message, the rest unread


def status_error(
    model_id: str, status: int, message: str, retry_after: str | None = None, error: dict[str, object] | None = None
) -> WinnowError:
    """An upstream's error status as Winnow's error: 400/422 pass as 400 and 429 as 429 with the
    upstream's wait (both carry its OpenAI ``error`` object, whose type, code and param /v1 passes
    on), anything else is a 502 ``upstream_error``. The upstream's words are redacted first."""
    detail = f"upstream status {status}: {redact(message)}"
    error = redact_json(error)
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


def too_large(model_id: str, max_bytes: int) -> UpstreamError:
    """An answer past the cap (``max_upstream_response_bytes``): a 502, which fails over first."""
    return UpstreamError(
        f"Upstream for {model_id!r} answered more than max_upstream_response_bytes ({max_bytes} bytes)",
        "the rest of its answer was not read",
    )


def timed_out(model_id: str, timeout_s: float) -> UpstreamTimeout:
    return UpstreamTimeout(
        f"Upstream for {model_id!r} timed out", f"no whole answer within timeout_s ({timeout_s:g} s)"
    )


def authorization(api_key: str, basic: tuple[str, str] | None) -> str:
    """The Authorization header for an upstream: HTTP basic auth when its base_url had userinfo
    (as httpx, and so the openai SDK, sends it), else the api key as a bearer token."""
    if basic is not None:
        return "Basic " + base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
    return f"Bearer {api_key}"


async def idle_bounded(
    chunks: AsyncIterator[T], idle_s: float, timed_out: Callable[[], WinnowError]
) -> AsyncIterator[T]:
    """``chunks``, each of which must come within ``idle_s`` of the last (else ``timed_out()`` is
    raised): a stream that trickles is cut as surely as one that stops."""
    while True:
        try:
            async with asyncio.timeout(idle_s):
                chunk = await anext(chunks)
        except StopAsyncIteration:
            return
        except TimeoutError as exc:
            raise timed_out() from exc
        yield chunk


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
        self,
        model_id: str,
        upstream_model: str,
        base_url: str | None,
        api_key: str,
        timeout_s: float,
        *,
        basic: tuple[str, str] | None = None,
        max_bytes: int = DEFAULT_MAX_UPSTREAM_RESPONSE_BYTES,
    ) -> None:
        self.model_id = model_id
        self.upstream_model = upstream_model
        self.base_url = (base_url or "https://api.openai.com/v1").rstrip("/")  # without userinfo: see ``basic``
        self.headers = {"Authorization": authorization(api_key, basic), "Content-Type": "application/json"}
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.span_attributes = {"url.full": self.base_url, "gen_ai.request.model": upstream_model}
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

    def _timed_out(self) -> UpstreamTimeout:
        return timed_out(self.model_id, self.timeout_s)

    def _unreachable(self, exc: BaseException) -> UpstreamError:
        return UpstreamError(f"Upstream for {self.model_id!r} is unreachable", redact(f"{type(exc).__name__}: {exc}"))

    def _failure(self, exc: Exception) -> UpstreamFailure:
        """Any exception of the HTTP client as a failure of the deployment (never a 500)."""
        if isinstance(exc, TimeoutError):
            return UpstreamFailure(self._timed_out(), retryable=True)
        connect = isinstance(exc, aiohttp.ClientConnectorError)  # nothing listens, or the host is unknown
        return UpstreamFailure(self._unreachable(exc), retryable=True, connect=connect)

    async def post(self, path: str, body: bytes) -> aiohttp.ClientResponse:
        """The upstream's successful response, its body unread (the caller reads or streams it and
        releases it); a failure raises ``UpstreamFailure``. The caller bounds the time it takes."""
        try:
            with telemetry.span("upstream.request", self.span_attributes, client=True):
                headers = telemetry.inject()  # traceparent, while tracing is on
                response = await self._open().post(self.base_url + path, data=body, headers=headers)
        except Exception as exc:  # aiohttp's, and its ValueErrors (a URL it cannot use)
            raise self._failure(exc) from exc
        if response.status < 400:
            return response
        try:
            payload = await _head(response.content, _ERROR_BODY_BYTES)
        except Exception:
            payload = b""
        finally:
            response.release()
        raise status_failure(self.model_id, response.status, payload, response.headers)

    async def json(self, path: str, body: bytes) -> dict[str, Any]:
        """POST and return the upstream's JSON object, all of it within ``timeout_s``."""
        try:
            async with asyncio.timeout(self.timeout_s):
                response = await self.post(path, body)
                try:
                    if (response.content_length or 0) > self.max_bytes:
                        raise UpstreamFailure(too_large(self.model_id, self.max_bytes), retryable=True)
                    payload = await _read(response.content, self.max_bytes)
                finally:
                    response.release()
        except UpstreamFailure:
            raise
        except Exception as exc:
            raise self._failure(exc) from exc
        if payload is None:
            raise UpstreamFailure(too_large(self.model_id, self.max_bytes), retryable=True)
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
        event raises, as the SDK's stream does. More than ``max_bytes`` in all raises too."""
        data: list[bytes] = []
        finished = False  # a choice had its finish_reason
        left = self.max_bytes
        content = response.content
        try:
            while raw := await content.readline(max_line_length=left + 1):
                left -= len(raw)
                if left < 0:
                    raise too_large(self.model_id, self.max_bytes)
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
                    raise UpstreamError(f"Upstream for {self.model_id!r} failed", redact(_message(joined)[0]))
                finished = finished or _finishes(chunk)
                yield chunk
            if data and data != [b"[DONE]"]:  # a last event the upstream did not end with a blank line
                chunk = orjson.loads(b"\n".join(data))
                finished = finished or _finishes(chunk)
                yield chunk
            if not finished and data != [b"[DONE]"]:  # cut off: the connection ended mid-answer
                raise UpstreamError(f"Upstream for {self.model_id!r} failed", "its stream ended before [DONE]")
        except LineTooLong as exc:
            raise too_large(self.model_id, self.max_bytes) from exc
        except TimeoutError as exc:
            raise self._timed_out() from exc
        except (aiohttp.ClientError, orjson.JSONDecodeError, ValueError) as exc:
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
        here, within ``timeout_s``, so that a failure before the first chunk raises
        ``UpstreamFailure`` (another deployment may still answer, or it is an HTTP status); the
        chunks follow as they arrive, each within ``timeout_s`` of the last, and a failure after
        the first raises Winnow's error from the iterator."""
        try:
            async with asyncio.timeout(self.timeout_s):
                response = await self.post(path, orjson.dumps({**body, "model": self.upstream_model}))
                chunks = idle_bounded(self._renamed(self.events(response)), self.timeout_s, self._timed_out)
                first = await anext(chunks)
        except StopAsyncIteration:
            return chunks  # an empty stream: nothing but [DONE]
        except WinnowError as exc:
            raise UpstreamFailure(exc, retryable=True) from exc
        except UpstreamFailure:
            raise
        except Exception as exc:
            raise self._failure(exc) from exc
        return prepend(first, chunks)

    async def _renamed(self, chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        async for chunk in chunks:
            chunk["model"] = self.model_id
            yield chunk

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


async def _read(content: aiohttp.StreamReader, max_bytes: int) -> bytes | None:
    """The body, read in pieces; None as soon as it passes ``max_bytes`` (the rest never read)."""
    pieces: list[bytes] = []
    size = 0
    while piece := await content.readany():
        size += len(piece)
        if size > max_bytes:
            return None
        pieces.append(piece)
    return b"".join(pieces)


async def _head(content: aiohttp.StreamReader, max_bytes: int) -> bytes:
    """At most the first ``max_bytes`` of the body (an error's text; the rest never read)."""
    pieces: list[bytes] = []
    size = 0
    while size < max_bytes and (piece := await content.readany()):
        pieces.append(piece)
        size += len(piece)
    return b"".join(pieces)[:max_bytes]


async def prepend(first: T, rest: AsyncIterator[T]) -> AsyncIterator[T]:
    """``first``, then ``rest``: a stream whose first chunk was read ahead."""
    yield first
    async for chunk in rest:
        yield chunk


# The events that end a streamed Response (``/responses`` sends no [DONE]).
RESPONSE_ENDS = ("response.completed", "response.incomplete", "response.failed")


def _finishes(chunk: Any) -> bool:
    """Whether an event ends the answer: a choice's finish_reason, or a Response's last event."""
    return isinstance(chunk, dict) and (
        chunk.get("type") in RESPONSE_ENDS
        or any(isinstance(c, dict) and c.get("finish_reason") for c in chunk.get("choices") or ())
    )

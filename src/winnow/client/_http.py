"""The SDK's HTTP core: one pooled httpx client, timeouts, and retries with exponential backoff and
jitter on 429 (honouring ``Retry-After``), 502/503/504 and connection errors.

Each API call is described once as a ``Call`` (method, path, query, JSON body, upload, the model its
answer parses into); the sync and async clients only differ in how they send it."""

from __future__ import annotations

import os
import random
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import anyio
import httpx
from pydantic import BaseModel, RootModel, ValidationError
from pydantic_core import to_jsonable_python

from winnow import __version__
from winnow.client.errors import (
    MissingAPIKey,
    UnexpectedResponse,
    WinnowAPIError,
    retry_after,
    status_error,
    transport_error,
)

M = TypeVar("M", bound=BaseModel)
H = TypeVar("H", httpx.Client, httpx.AsyncClient)

DEFAULT_URL = "http://127.0.0.1:8000"
API_PREFIX = "/api/v1"
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MAX_RETRIES = 2
RETRY_STATUSES = frozenset({429, 502, 503, 504})
INITIAL_DELAY_S = 0.5
MAX_DELAY_S = 8.0
MAX_RETRY_AFTER_S = 60.0  # a longer Retry-After is no retry: the error goes to the caller
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
# Failures before the request reached the server: safe to retry whatever the method.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Failures after it may have: retried only for idempotent methods (a submit is never sent twice).
MAYBE_SENT = (httpx.ReadTimeout, httpx.WriteTimeout, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)


class JSONObject(RootModel[dict[str, Any]]):
    """An answer that is a JSON object without a schema of its own (a job's summary)."""


@dataclass(frozen=True)
class Call(Generic[M]):
    """One request to ``/api/v1``: what to send and what model its answer is."""

    method: str
    path: str
    model: type[M]
    params: Mapping[str, Any] | None = None
    body: Any = None
    upload: Path | None = None
    form: Mapping[str, str] | None = None  # form fields sent beside ``upload``


def backoff(attempt: int) -> float:
    """Exponential backoff with jitter: 0.5 s, 1 s, 2 s ... up to 8 s, each less up to a quarter."""
    return min(INITIAL_DELAY_S * 2.0**attempt, MAX_DELAY_S) * (1 - 0.25 * random.random())


def parse(response: httpx.Response, model: type[M]) -> M:
    """The answer as ``model``; an answer that is not it (HTML, another server's JSON) is an error."""
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        raise UnexpectedResponse(
            f"HTTP {response.status_code}: the answer is not Winnow's {model.__name__} ({exc.error_count()} errors)",
            status=response.status_code,
            response=response,
        ) from exc


class BaseClient(Generic[H]):
    """What the sync and async clients share: where, who, how long, how often, when to retry, and
    the connection pool (``http_client``, else one of its own)."""

    _pool: type[H]

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT_S,
        max_retries: int = DEFAULT_MAX_RETRIES,
        http_client: H | None = None,
    ) -> None:
        root = (base_url or os.environ.get("WINNOW_URL") or DEFAULT_URL).rstrip("/")
        self.base_url = root.removesuffix(API_PREFIX)
        self.api_key = api_key or os.environ.get("WINNOW_API_KEY")
        if not self.api_key:
            raise MissingAPIKey("No API key: pass api_key= or set WINNOW_API_KEY")
        self.timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self.max_retries = max_retries
        self.headers = {"Authorization": f"Bearer {self.api_key}", "User-Agent": f"winnow-python/{__version__}"}
        self._owns_http = http_client is None
        self._http: H = http_client or self._pool(timeout=self.timeout)
        self._attach()

    def _attach(self) -> None:
        """Make the client's resources (``files``, ``sdg``, ...)."""

    def _request(self, call: Call[Any], files: ExitStack) -> httpx.Request:
        upload = None
        if call.upload is not None:
            upload = {"file": (call.upload.name, files.enter_context(call.upload.open("rb")), "application/jsonl")}
        params = {k: v for k, v in (call.params or {}).items() if v is not None}
        return self._http.build_request(
            call.method,
            self.base_url + API_PREFIX + call.path,
            params=to_jsonable_python(params),
            json=to_jsonable_python(call.body, exclude_none=True) if call.body is not None else None,
            files=upload,
            data=call.form,
            headers=self.headers,
            timeout=self.timeout,
        )

    def _retry_after_error(self, call: Call[Any], attempt: int, exc: httpx.TransportError) -> float:
        """How long to wait before retrying a request that got no answer; raises when it is not retried."""
        retryable = isinstance(exc, NOT_SENT) or (isinstance(exc, MAYBE_SENT) and call.method in IDEMPOTENT)
        if not retryable or attempt >= self.max_retries:
            raise transport_error(exc, self.base_url, self.timeout) from exc
        return backoff(attempt)

    def _retry_delay(self, attempt: int, response: httpx.Response) -> float | None:
        """How long to wait before retrying this answer, or None to take it as it is."""
        if response.status_code not in RETRY_STATUSES or attempt >= self.max_retries:
            return None
        asked = retry_after(response.headers.get("retry-after"))
        if asked is None:
            return backoff(attempt)
        return asked if asked <= MAX_RETRY_AFTER_S else None


class SyncAPIClient(BaseClient[httpx.Client]):
    _pool = httpx.Client

    def close(self) -> None:
        """Close the connection pool (a pool passed in as ``http_client`` is its owner's to close)."""
        if self._owns_http:
            self._http.close()

    def fetch(self, call: Call[M]) -> M:
        """Send ``call`` and parse its answer."""
        with self.stream(call) as response:
            response.read()
        return parse(response, call.model)

    def lines(self, call: Call[Any]) -> Iterator[str]:
        """The answer's non-empty lines (JSONL), streamed."""
        with self.stream(call) as response:
            for line in response.iter_lines():
                if line.strip():
                    yield line

    @contextmanager
    def stream(self, call: Call[Any]) -> Iterator[httpx.Response]:
        """Send ``call`` (retrying as it may) and yield the successful answer, its body unread."""
        for attempt in range(self.max_retries + 1):
            try:
                with ExitStack() as files:
                    response = self._http.send(self._request(call, files), stream=True)
            except httpx.TransportError as exc:
                time.sleep(self._retry_after_error(call, attempt, exc))
                continue
            delay = self._retry_delay(attempt, response)
            if delay is not None:
                response.close()
                time.sleep(delay)
                continue
            try:
                if response.is_error:
                    response.read()
                    raise status_error(response)
                yield response
            except httpx.TransportError as exc:  # the body broke off
                raise transport_error(exc, self.base_url, self.timeout) from exc
            finally:
                response.close()
            return
        raise WinnowAPIError("unreachable")  # pragma: no cover (the last attempt returns or raises)


class AsyncAPIClient(BaseClient[httpx.AsyncClient]):
    _pool = httpx.AsyncClient

    async def close(self) -> None:
        """Close the connection pool (a pool passed in as ``http_client`` is its owner's to close)."""
        if self._owns_http:
            await self._http.aclose()

    async def fetch(self, call: Call[M]) -> M:
        """Send ``call`` and parse its answer."""
        async with self.stream(call) as response:
            await response.aread()
        return parse(response, call.model)

    async def lines(self, call: Call[Any]) -> AsyncIterator[str]:
        """The answer's non-empty lines (JSONL), streamed."""
        async with self.stream(call) as response:
            async for line in response.aiter_lines():
                if line.strip():
                    yield line

    @asynccontextmanager
    async def stream(self, call: Call[Any]) -> AsyncIterator[httpx.Response]:
        """Send ``call`` (retrying as it may) and yield the successful answer, its body unread."""
        for attempt in range(self.max_retries + 1):
            try:
                with ExitStack() as files:
                    response = await self._http.send(self._request(call, files), stream=True)
            except httpx.TransportError as exc:
                await anyio.sleep(self._retry_after_error(call, attempt, exc))
                continue
            delay = self._retry_delay(attempt, response)
            if delay is not None:
                await response.aclose()
                await anyio.sleep(delay)
                continue
            try:
                if response.is_error:
                    await response.aread()
                    raise status_error(response)
                yield response
            except httpx.TransportError as exc:
                raise transport_error(exc, self.base_url, self.timeout) from exc
            finally:
                await response.aclose()
            return
        raise WinnowAPIError("unreachable")  # pragma: no cover

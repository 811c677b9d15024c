"""The /v1 pass-through's HTTP client: one pooled aiohttp session per upstream, JSON bytes in and out.

Forwarding needs none of the ``openai`` SDK's request machinery (request options, httpx, typed
responses), which costs about half a millisecond of Python per round trip; a raw keep-alive
session costs a fraction of it. Retries are the SDK's: 408/409/429/5xx (unless the upstream says
``x-should-retry: false``) and connection errors or timeouts, ``max_retries`` times, after the
upstream's ``retry-after-ms``/``retry-after`` when it names a wait of up to 60 s, else 0.5 s
doubling to 8 s with jitter. ``timeout_s`` bounds each connect and each read, as the SDK's does.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import orjson

from winnow.errors import InvalidRequest, RateLimitExceeded, UpstreamError, UpstreamTimeout, WinnowError

_RETRY_STATUSES = frozenset({408, 409, 429})
_MAX_DELAY_S = 8.0


def status_error(model_id: str, status: int, message: str, retry_after: str | None = None) -> WinnowError:
    """An upstream's error status as Winnow's error: 400/422 pass as 400, 429 as 429 with the
    upstream's wait, anything else is a 502 ``upstream_error``."""
    detail = f"upstream status {status}: {message}"
    if status in (400, 422):
        return InvalidRequest("The upstream model rejected the request", detail)
    if status == 429:
        return RateLimitExceeded(
            f"Upstream for {model_id!r} is rate limiting", detail, headers={"Retry-After": retry_after or "1"}
        )
    return UpstreamError(f"Upstream for {model_id!r} failed", detail)


def _message(payload: bytes) -> str:
    """The upstream's own error message (OpenAI's ``{"error": {"message": ...}}``), else its body."""
    try:
        error = orjson.loads(payload).get("error")
        message = error.get("message") if isinstance(error, dict) else error
        if isinstance(message, str) and message:
            return message
    except (orjson.JSONDecodeError, AttributeError):
        pass
    return payload.decode("utf-8", "replace")[:1000] or "(no body)"


def _retry_delay(attempt: int, headers: Mapping[str, str] | None) -> float:
    if headers is not None:
        for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
            try:
                wait = float(headers.get(name, "")) * scale
            except ValueError:
                continue
            if 0 < wait <= 60:
                return wait
    return float(min(0.5 * 2**attempt, _MAX_DELAY_S) * (1 - 0.25 * random.random()))


class UpstreamHTTP:
    """POSTs JSON bodies to one OpenAI-compatible base URL over a pooled keep-alive session."""

    def __init__(
        self, model_id: str, upstream_model: str, base_url: str | None, api_key: str, timeout_s: float, max_retries: int
    ) -> None:
        self.model_id = model_id
        self.upstream_model = upstream_model
        self.base_url = (base_url or "https://api.openai.com/v1").rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout_s, sock_read=timeout_s)
        self.max_retries = max_retries
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
        releases it); a failure that outlasts the retries raises Winnow's error for it."""
        attempt = 0
        while True:
            headers: Mapping[str, str] | None = None
            try:
                response = await self._open().post(self.base_url + path, data=body)
            except TimeoutError as exc:
                error: WinnowError = self._timed_out(exc)
                retry = True
            except aiohttp.ClientError as exc:
                error, retry = self._unreachable(exc), True
            else:
                if response.status < 400:
                    return response
                headers = response.headers
                try:
                    payload = await response.read()
                except (TimeoutError, aiohttp.ClientError):
                    payload = b""
                finally:
                    response.release()
                error = status_error(self.model_id, response.status, _message(payload), headers.get("retry-after"))
                should = headers.get("x-should-retry")
                retry = should == "true" or (
                    should != "false" and (response.status in _RETRY_STATUSES or response.status >= 500)
                )
            if not retry or attempt >= self.max_retries:
                raise error
            await asyncio.sleep(_retry_delay(attempt, headers))
            attempt += 1

    async def json(self, path: str, body: bytes) -> dict[str, Any]:
        """POST and return the upstream's JSON object."""
        response = await self.post(path, body)
        try:
            payload = await response.read()
        except TimeoutError as exc:
            raise self._timed_out(exc) from exc
        except aiohttp.ClientError as exc:
            raise self._unreachable(exc) from exc
        finally:
            response.release()
        try:
            result = orjson.loads(payload)
        except orjson.JSONDecodeError:
            result = None
        if not isinstance(result, dict):
            raise UpstreamError(f"Upstream for {self.model_id!r} failed", "its answer is not a JSON object")
        return result

    async def events(self, response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
        """A server-sent event stream's JSON objects as they arrive, up to ``[DONE]``; an ``error``
        event raises, as the SDK's stream does."""
        data: list[bytes] = []
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
                    raise UpstreamError(f"Upstream for {self.model_id!r} failed", _message(joined))
                yield chunk
            if data and data != [b"[DONE]"]:  # a last event the upstream did not end with a blank line
                yield orjson.loads(b"\n".join(data))
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
        """Like ``forward`` with ``stream: true``. The upstream is called here, so that a failure
        before its first chunk raises (and can still be an HTTP status); the chunks follow as they arrive."""
        response = await self.post(path, orjson.dumps({**body, "model": self.upstream_model}))
        return self._renamed(self.events(response))

    async def _renamed(self, chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        async for chunk in chunks:
            chunk["model"] = self.model_id
            yield chunk

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

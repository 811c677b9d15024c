"""The hot routes, answered before FastAPI's routing: /v1 completions for upstream models, /generate.

``LeanRoutes`` is pure ASGI and sits inside the request middleware (request id, body cap, access
log, metrics). For ``POST /v1/chat/completions``, ``/v1/completions`` (upstream models) and
``/api/v1/generate`` it reads the body once, decodes it with orjson, validates it with the route's
own schema, authenticates, counts the rate limit and calls the same service the route calls,
skipping FastAPI's routing and dependency resolution (about a third of a forwarded request's
Python). A body it would refuse (invalid JSON or fields) or does not serve (a local model on /v1)
goes on to the FastAPI routes whole, before anything a client could see happened, so every error
keeps its one shape and the OpenAPI document is the routes'. Errors raised on the way are answered
by the app's own exception handlers. Upstream forwarding itself is ``forward``, one code path for
both ways in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from winnow import telemetry
from winnow.api.deps import authenticate
from winnow.api.errors import openai_error_payload
from winnow.api.openapi import API_PREFIX
from winnow.auth import Principal
from winnow.errors import InvalidRequest, WinnowError
from winnow.models.cache import CACHE_HEADER, cache_key
from winnow.models.embedding import refuse_generation
from winnow.models.openai_bodies import prompt_of
from winnow.models.providers.openai import OpenAIProvider
from winnow.models.router import ATTEMPTS_HEADER, PIN_HEADER, Routed
from winnow.runtime import Runtime
from winnow.schemas.openai import ChatCompletionRequest, CompletionRequest
from winnow.schemas.platform import GenerateRequest
from winnow.usage.service import estimate_tokens

log = logging.getLogger("winnow.api")


def sse(payload: dict[str, Any] | str) -> bytes:
    """One server-sent event: ``data: <json>``."""
    data = payload.encode() if isinstance(payload, str) else orjson.dumps(payload)
    return b"data: " + data + b"\n\n"


# Fields of a /v1 body that are Winnow's, not the upstream's: read, then taken out before forwarding.
WINNOW_FIELDS = ("disable_fallbacks",)


def _overrides(sent: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The body to forward, without Winnow's own fields, and whether fallbacks may answer."""
    if "disable_fallbacks" not in sent:
        return sent, True
    disable = sent["disable_fallbacks"]
    if not isinstance(disable, bool):
        raise InvalidRequest("disable_fallbacks must be true or false", f"got {orjson.dumps(disable).decode()}")
    return {k: v for k, v in sent.items() if k not in WINNOW_FIELDS}, not disable


def _routing_headers(routed: Routed[Any]) -> dict[str, str]:
    return {PIN_HEADER: routed.deployment.id, ATTEMPTS_HEADER: str(routed.attempts)}


async def forward(
    runtime: Runtime,
    key_id: int,
    provider: OpenAIProvider,
    path: str,
    body: ChatCompletionRequest | CompletionRequest,
    sent: dict[str, Any],
    pin: str | None = None,
) -> Response:
    """An upstream model's request, forwarded as the client ``sent`` it (unknown fields included,
    Winnow's own taken out) through the model's router; ``pin`` names a deployment to use. The
    budget is checked before the call; usage comes from the upstream's own ``usage`` block."""
    refuse_generation(provider.config)
    prompt = prompt_of(body)
    runtime.usage.check(key_id, body.model, [prompt])
    sent, fallbacks = _overrides(sent)
    started = time.perf_counter()
    if body.stream:
        # Usage is always asked of the upstream (to bill the stream) and passed on only if the client asked.
        wanted = bool(body.stream_options and body.stream_options.include_usage)
        sent = {**sent, "stream_options": {**(sent.get("stream_options") or {}), "include_usage": True}}
        # A failure before the first chunk tries another deployment, or is an HTTP error.
        opened = await provider.router.call(
            lambda d: d.http.forward_stream(path, sent), pin=pin, fallbacks=fallbacks, hold=True
        )
        events = _forward_stream(runtime, key_id, prompt, opened, started, wanted)
        return StreamingResponse(events, media_type="text/event-stream", headers=_routing_headers(opened))
    cache, key = provider.cache, None
    if cache is not None and pin is None and (key := cache_key(body.model, path, sent)) is not None:
        with telemetry.span("cache.lookup") as lookup:
            hit = await cache.get(key)
            if lookup is not None:
                lookup.set_attribute("winnow.cache.hit", hit is not None)
        if hit is not None:
            return _from_cache(runtime, key_id, prompt, hit, started)
    routed = await provider.router.call(lambda d: d.http.forward(path, sent), pin=pin, fallbacks=fallbacks)
    response, deployment = routed.value, routed.deployment
    tokens = _record(runtime, key_id, prompt, response, started, deployment.model_id, deployment.id, routed.attempts)
    deployment.count_tokens(sum(tokens))
    headers = _routing_headers(routed)
    if cache is not None and key is not None:
        kept = {"model": deployment.model_id, "deployment": deployment.id, "response": response}
        await cache.put(key, orjson.dumps(kept))
        headers[CACHE_HEADER] = "miss"
    return Response(orjson.dumps(response), media_type="application/json", headers=headers)


def _from_cache(runtime: Runtime, key_id: int, prompt: Any, hit: bytes, started: float) -> Response:
    """A cached answer: billed as cached (no upstream cost), marked in the headers."""
    kept = orjson.loads(hit)
    response = kept["response"]
    _record(runtime, key_id, prompt, response, started, kept["model"], kept["deployment"], 0, cached=True)
    headers = {CACHE_HEADER: "hit", PIN_HEADER: kept["deployment"], ATTEMPTS_HEADER: "0"}
    return Response(orjson.dumps(response), media_type="application/json", headers=headers)


def _record(
    runtime: Runtime,
    key_id: int,
    prompt: Any,
    response: dict[str, Any],
    started: float,
    model_id: str,
    deployment: str,
    attempts: int,
    cached: bool = False,
) -> tuple[int, int]:
    """One usage row for a forwarded answer, under the model that answered (a fallback bills at its
    own prices); returns its tokens in and out."""
    used = response.get("usage") or {}
    texts = [str((c.get("message") or {}).get("content") or c.get("text") or "") for c in response.get("choices") or []]
    tokens = int(used.get("prompt_tokens") or 0), int(used.get("completion_tokens") or 0)
    runtime.usage.record(
        key_id,
        model_id,
        "v1",
        *tokens,
        (time.perf_counter() - started) * 1000,
        generation_id=str(response.get("id") or "") or None,
        prompt=prompt,
        responses=texts,
        deployment=deployment,
        attempts=attempts,
        cached=cached,
    )
    return tokens


async def _forward_stream(
    runtime: Runtime,
    key_id: int,
    prompt: Any,
    opened: Routed[AsyncIterator[dict[str, Any]]],
    started: float,
    client_wants_usage: bool,
) -> AsyncIterator[bytes]:
    texts: dict[int, str] = {}
    ident, used = None, None
    try:
        async for chunk in opened.value:
            ident = ident or chunk.get("id")
            used = chunk.get("usage") or used
            for choice in chunk.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content") or choice.get("text") or ""
                texts[choice.get("index", 0)] = texts.get(choice.get("index", 0), "") + piece
            if not client_wants_usage and "usage" in chunk:
                if not chunk.get("choices"):
                    continue  # the usage chunk we asked for, not the client
                chunk = {k: v for k, v in chunk.items() if k != "usage"}
            yield sse(chunk)
    except WinnowError as exc:  # after the first chunk: the client's stream ends with the error
        opened.failed(exc)
        yield sse(openai_error_payload(exc.message, exc.status_code, exc.code, exc.param))
    finally:  # billed even when the client goes away mid-stream
        opened.release()
        if used is None:  # an upstream that sends no usage, or a stream cut short: estimate
            out = sum(estimate_tokens(t) for t in texts.values())
            used = {"prompt_tokens": estimate_tokens(prompt), "completion_tokens": out}
        response = {"id": ident, "usage": used, "choices": [{"text": texts[i]} for i in sorted(texts)]}
        deployment = opened.deployment
        tokens = _record(
            runtime, key_id, prompt, response, started, deployment.model_id, deployment.id, opened.attempts
        )
        deployment.count_tokens(sum(tokens))
    yield sse("[DONE]")


@dataclass(frozen=True)
class _Matched:
    """What the access log and metrics read from ``scope["route"]``: the route's path."""

    path: str


# A lean route's handler: the response, or None to leave the request to the FastAPI routes. It
# must decide before doing anything a client could see (a rate-limit hit, a usage row).
Handler = Callable[[Runtime, Scope, Any, dict[str, Any]], Awaitable[Response | None]]


async def _principal(runtime: Runtime, scope: Scope) -> Principal:
    """Authenticate and count a generation, as the routes' ``GenerationKey`` does."""
    principal = await authenticate(runtime, _header(scope, b"authorization"))
    state: dict[str, Any] = scope.setdefault("state", {})
    state["key_name"] = principal.name
    state["rate_limit_headers"] = (await runtime.limiter.hit(principal, "generation")).headers()
    return principal


def _upstream(path: str) -> Handler:
    async def handle(
        runtime: Runtime, scope: Scope, body: ChatCompletionRequest | CompletionRequest, sent: dict[str, Any]
    ) -> Response | None:
        if body.prompt_ref is not None:
            return None  # a registered prompt: the route renders it
        try:
            provider = runtime.models.provider(body.model)
        except WinnowError:
            return None  # an unknown model: the route answers it, after authenticating
        if not isinstance(provider, OpenAIProvider):
            return None  # a local model: the route serves it
        principal = await _principal(runtime, scope)
        return await forward(runtime, principal.id, provider, path, body, sent, _header(scope, _PIN))

    return handle


async def _generate(runtime: Runtime, scope: Scope, body: GenerateRequest, _sent: dict[str, Any]) -> Response | None:
    if not isinstance(body.prompt, str):
        return None  # a registered prompt: the route renders it
    principal = await _principal(runtime, scope)
    answer = await runtime.generation.generate(body, principal.id)
    return Response(answer.model_dump_json(), media_type="application/json")


_ROUTES: dict[str, tuple[type[BaseModel], Handler, _Matched]] = {
    path: (schema, handler, _Matched(path))
    for path, schema, handler in (
        ("/v1/chat/completions", ChatCompletionRequest, _upstream("/chat/completions")),
        ("/v1/completions", CompletionRequest, _upstream("/completions")),
        (f"{API_PREFIX}/generate", GenerateRequest, _generate),
    )
}


_PIN = PIN_HEADER.encode()


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _is_json(scope: Scope) -> bool:
    """The body is JSON by its Content-Type, as FastAPI decides it (application/json or */*+json)."""
    kind = (_header(scope, b"content-type") or "").partition(";")[0].strip().lower()
    return kind.startswith("application/") and (kind == "application/json" or kind.endswith("+json"))


class LeanRoutes:
    """Answers the hot routes itself (see the module's docstring); everything else goes to ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = _ROUTES.get(scope.get("path", "")) if scope.get("method") == "POST" else None
        # Only JSON bodies of a declared length: a chunked one is left to FastAPI, which reads it
        # capped, and so is any other content type (FastAPI does not decode it: a 400).
        if route is None or _header(scope, b"content-length") is None or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        raw, more = [], True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            raw.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(raw)
        schema, handler, matched = route
        runtime: Runtime = scope["app"].state.runtime
        try:
            sent = orjson.loads(body)
            request = schema.model_validate(sent)
        except (orjson.JSONDecodeError, ValidationError):
            await self.app(scope, _replay(body, receive), send)  # the route's own 400
            return
        try:
            response = await handler(runtime, scope, request, sent)
        except Exception as exc:
            scope["route"] = matched
            response = await _handled(scope, receive, exc)
        if response is None:
            await self.app(scope, _replay(body, receive), send)
            return
        scope["route"] = matched
        await response(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the body already read, then whatever the client sends next."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _handled(scope: Scope, receive: Receive, exc: Exception) -> Response:
    """The response the app's own exception handler gives ``exc`` (the routes' error shapes);
    an exception no handler takes goes on up, to the middleware's last-resort 500."""
    handlers = scope["app"].exception_handlers
    for cls in type(exc).__mro__:
        if cls in handlers:
            response: Response = await handlers[cls](Request(scope, receive), exc)
            return response
    raise exc

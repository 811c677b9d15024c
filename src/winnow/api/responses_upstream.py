"""``POST /v1/responses`` for an upstream model that serves ``/responses`` itself (its config says
``options.serves_responses: true``): the request is forwarded as the client sent it through the
model's router and the upstream's Response (or its stream of events) comes back as it is (the model
renamed to ours), billed from its own ``usage``. The upstream keeps what it stores
(``previous_response_id`` is its own)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi.responses import Response, StreamingResponse

from winnow.api.passthrough import _routing_headers
from winnow.errors import WinnowError
from winnow.models.base import Provider
from winnow.models.embedding import refuse_generation
from winnow.models.providers.openai import OpenAIProvider
from winnow.models.router import Routed
from winnow.runtime import Runtime
from winnow.usage.service import estimate_tokens


def serves_responses(provider: Provider) -> bool:
    """Whether ``/v1/responses`` passes through to this model."""
    return isinstance(provider, OpenAIProvider) and bool(provider.config.options.get("serves_responses"))


async def forward_response(
    runtime: Runtime, key_id: int, provider: OpenAIProvider, sent: dict[str, Any], pin: str | None
) -> Response:
    refuse_generation(provider.config)
    runtime.usage.check(key_id, provider.config.id, [sent.get("instructions"), sent.get("input")])
    started = time.perf_counter()
    if sent.get("stream"):
        opened = await provider.router.call(lambda d: d.http.forward_stream("/responses", sent), pin=pin, hold=True)
        events = _stream(runtime, key_id, sent, opened, started)
        return StreamingResponse(events, media_type="text/event-stream", headers=_routing_headers(opened))
    routed = await provider.router.call(lambda d: d.http.forward("/responses", sent), pin=pin)
    answer: dict[str, Any] = routed.value
    _bill(runtime, key_id, routed, answer, started)
    return Response(orjson.dumps(answer), media_type="application/json", headers=_routing_headers(routed))


def _bill(runtime: Runtime, key_id: int, routed: Routed[Any], answer: dict[str, Any], started: float) -> None:
    """One usage row from a Response's ``usage``, under the model that answered."""
    used = answer.get("usage") or {}
    tokens = int(used.get("input_tokens") or 0), int(used.get("output_tokens") or 0)
    deployment = routed.deployment
    runtime.usage.record(
        key_id,
        deployment.model_id,
        "v1",
        *tokens,
        (time.perf_counter() - started) * 1000,
        generation_id=str(answer.get("id") or "") or None,
        deployment=deployment.id,
        attempts=routed.attempts,
    )
    deployment.count_tokens(sum(tokens))


def _frame(event: dict[str, Any]) -> bytes:
    return b"event: " + str(event.get("type")).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


async def _stream(
    runtime: Runtime,
    key_id: int,
    sent: dict[str, Any],
    opened: Routed[AsyncIterator[dict[str, Any]]],
    started: float,
) -> AsyncIterator[bytes]:
    """The upstream's events as it sent them (its Response's model renamed to ours); billed once from
    the last event's usage, or estimated when the stream was cut short."""
    model, text, last = opened.deployment.model_id, "", None
    try:
        async for event in opened.value:
            event.pop("model", None)  # (the provider names the model on every chunk; events have none)
            if isinstance(event.get("response"), dict):
                event["response"]["model"] = model
                last = event["response"]
            text += str(event.get("delta") or "") if event.get("type") == "response.output_text.delta" else ""
            yield _frame(event)
    except WinnowError as exc:  # after the first event: the stream ends with OpenAI's error event
        opened.failed(exc)
        yield _frame({"type": "error", "code": exc.openai_code or exc.code, "message": exc.message, "param": exc.param})
    finally:  # billed even when the client goes away mid-stream
        opened.release()
        if last is None or not last.get("usage"):
            estimate = {"input_tokens": estimate_tokens(sent.get("input")), "output_tokens": estimate_tokens(text)}
            last = {**(last or {}), "usage": estimate}
        _bill(runtime, key_id, opened, last, started)

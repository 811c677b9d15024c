"""The OpenAI-compatible surface: /v1/models[/{id}], /v1/chat/completions, /v1/completions (SSE streaming too).

Local models are served through the generation service, and refuse the request fields they cannot
honour (``refuse_unsupported``); models behind an OpenAI-compatible upstream are forwarded as-is
(one pooled client, no re-validation), so upstream-only fields such as tools or logprobs pass
through untouched. Bodies follow OpenAI's schemas (``refusal: null`` on every message); errors
use OpenAI's error shape, types and codes (``winnow.api.errors``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from winnow.api.deps import GenerationKey, OtherKey, RuntimeDep
from winnow.api.errors import openai_error_payload
from winnow.api.passthrough import forward, sse
from winnow.api.routing import Router
from winnow.config import ModelConfig
from winnow.errors import ContextLengthExceeded, InvalidRequest, ModelNotFound, WinnowError
from winnow.ids import hex_id
from winnow.models.base import Prompt, SamplingParams, StreamDelta
from winnow.models.embedding import task_of
from winnow.models.openai_bodies import chat_request, chat_response, completion_request, completion_response
from winnow.models.providers.openai import OpenAIProvider
from winnow.models.router import PIN_HEADER
from winnow.prompts import use
from winnow.runtime import Runtime
from winnow.schemas.common import OpenAIErrorResponse
from winnow.schemas.openai import (
    ChatCompletionRequest,
    CompletionRequest,
    ModelCard,
    ModelList,
    ScoreRequest,
    usage,
)
from winnow.schemas.tool_calls import stream_deltas
from winnow.sdg.rows import Candidate, PromptRow, user_prompt
from winnow.usage.service import estimate_tokens


def generation_errors(not_found: str) -> dict[int | str, dict[str, Any]]:
    """The error answers a /v1 route that generates documents, ``not_found`` describing its 404."""
    return {
        status: {"model": OpenAIErrorResponse, "description": description}
        for status, description in (
            (404, not_found),
            (502, "The upstream provider failed"),
            (503, "The model cannot be loaded"),
            (504, "The upstream provider timed out"),
        )
    }


router = Router(
    prefix="/v1", tags=["OpenAI-compatible"], responses=generation_errors("Model not found (model_not_found)")
)


async def _stream_response(
    runtime: Runtime,
    key_id: int,
    model: str,
    prompt: Prompt,
    params: SamplingParams,
    include_usage: bool,
    chat: bool,
) -> StreamingResponse:
    provider = runtime.models.provider(model)
    deltas = aiter(provider.stream(prompt, params))
    started = time.perf_counter()
    try:
        runtime.usage.check(key_id, model, [prompt])
        first = await deltas.__anext__()  # errors before the first token still become HTTP errors
    except ContextLengthExceeded as exc:
        raise _naming(exc, "messages" if chat else "prompt") from None
    runtime.metrics.first_token.labels(model).observe(time.perf_counter() - started)
    ident = f"{'chatcmpl' if chat else 'cmpl'}-{hex_id()}"
    created = int(time.time())
    kind = "chat.completion.chunk" if chat else "text_completion"

    def chunk(delta: StreamDelta | None, role: bool = False) -> dict[str, Any]:
        text = delta.text if delta else ""
        finish = delta.finish_reason if delta else None
        if chat:
            content: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None} if role else {}
            if text and not role:
                content["content"] = text
            choice: dict[str, Any] = {"index": 0, "delta": content, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        return {"id": ident, "object": kind, "created": created, "model": model, "choices": [choice]}

    async def events() -> AsyncIterator[bytes]:
        if chat:
            yield sse(chunk(None, role=True))
        delta: StreamDelta | None = first
        text: list[str] = []
        recorded = False
        try:
            while delta is not None:
                if delta.text or delta.finish_reason:
                    text.append(delta.text)
                    yield sse(chunk(delta))
                if delta.finish_reason:
                    runtime.generation.record_tokens(model, delta.input_tokens, delta.output_tokens)
                    runtime.usage.record(
                        key_id,
                        model,
                        "v1",
                        delta.input_tokens,
                        delta.output_tokens,
                        (time.perf_counter() - started) * 1000,
                        generation_id=ident,
                        prompt=prompt,
                        responses=["".join(text)],
                    )
                    recorded = True
                    if include_usage:
                        body = {"id": ident, "object": kind, "created": created, "model": model, "choices": []}
                        yield sse({**body, "usage": usage(delta.input_tokens, delta.output_tokens)})
                    break
                delta = await anext(deltas, None)
        except WinnowError as exc:
            yield sse(openai_error_payload(exc.message, exc.status_code, exc.code, exc.param))
        finally:
            if not recorded:  # the client went away mid-stream: bill what was generated, estimated
                runtime.usage.record(
                    key_id,
                    model,
                    "v1",
                    estimate_tokens(prompt),
                    estimate_tokens("".join(text)),
                    (time.perf_counter() - started) * 1000,
                    generation_id=ident,
                    prompt=prompt,
                    responses=["".join(text)],
                )
            aclose = getattr(deltas, "aclose", None)
            if aclose is not None:
                await aclose()
        yield sse("[DONE]")

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _naming(exc: Exception, param: str) -> Exception:
    """A prompt over the context names the field that holds it (OpenAI's ``param``)."""
    if isinstance(exc, ContextLengthExceeded) and exc.param is None:
        exc.param = param
    return exc


def _card(runtime: Runtime, config: ModelConfig) -> ModelCard:
    owner = "winnow" if config.provider == "transformers" else config.provider
    return ModelCard(id=config.id, created=int(runtime.started_at), owned_by=owner, task=task_of(config))


@router.get("/models", summary="List models (OpenAI format)", response_model=ModelList)
async def list_models(runtime: RuntimeDep, _key: OtherKey) -> ModelList:
    return ModelList(data=[_card(runtime, runtime.models.config(m)) for m in runtime.models.ids()])


@router.get("/models/{model_id:path}", summary="Retrieve a model (OpenAI format)", response_model=ModelCard)
async def retrieve_model(model_id: str, runtime: RuntimeDep, _key: OtherKey) -> ModelCard:
    return _card(runtime, runtime.models.config(model_id))


@router.post("/chat/completions", summary="Chat completion (OpenAI format)")
async def chat_completions(
    body: ChatCompletionRequest, request: Request, runtime: RuntimeDep, key: GenerationKey
) -> Any:
    return await chat_completion(runtime, key.id, body, await request.json(), request.headers.get(PIN_HEADER))


async def chat_completion(
    runtime: Runtime, key_id: int, body: ChatCompletionRequest, sent: dict[str, Any], pin: str | None = None
) -> Response:
    """A chat completion (JSON, or an SSE stream of chunks) for a local or an upstream model, billed
    once; ``sent`` is the body as the client sent it (forwarded as-is to an upstream). /v1/responses
    calls this too."""
    if body.prompt_ref is not None:  # a registered prompt (Winnow's extension)
        body, sent = await use.for_openai(runtime.prompts, key_id, body, sent)
    provider = runtime.models.provider(body.model)
    if isinstance(provider, OpenAIProvider):  # usually answered before routing (api/passthrough.py)
        return await forward(runtime, key_id, provider, "/chat/completions", body, sent, pin)
    prompt, params, tools = chat_request(body)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    parsed = tools is not None and tools.choice != "none"  # calls are read from the whole text
    if body.stream and body.n == 1 and params.logprobs is None and not parsed:  # else sent whole, as n > 1
        return await _stream_response(runtime, key_id, body.model, prompt, params, include_usage, chat=True)
    ident = f"chatcmpl-{hex_id()}"
    try:
        (result,), _ = await runtime.generation.run(body.model, [prompt], params, key_id, "v1", ident)
    except ContextLengthExceeded as exc:
        raise _naming(exc, "messages") from None
    if result.error is not None:
        raise _naming(result.error, "messages")
    response = chat_response(ident, body.model, result, tools)
    choices: list[dict[str, Any]] = response["choices"]
    if body.stream:  # n > 1, logprobs or tools: each choice arrives whole (its calls as OpenAI's deltas)
        head = {k: response[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
        deltas = []
        for c in choices:
            parts = stream_deltas(c["message"])
            for k, part in enumerate(parts):
                last = k == len(parts) - 1
                deltas.append(
                    {
                        "index": c["index"],
                        "delta": part,
                        "logprobs": c["logprobs"] if k == 0 else None,
                        "finish_reason": c["finish_reason"] if last else None,
                    }
                )
        events = _whole_as_stream(head, deltas, response["usage"] if include_usage else None)
        return StreamingResponse(events, media_type="text/event-stream")
    return JSONResponse(response)


async def _whole_as_stream(
    head: dict[str, Any], choices: list[dict[str, Any]], usage_block: dict[str, Any] | None
) -> AsyncIterator[bytes]:
    """A finished response as SSE (n > 1, or several prompts): one chunk per choice, then usage."""
    for choice in choices:
        yield sse({**head, "choices": [choice]})
    if usage_block is not None:
        yield sse({**head, "choices": [], "usage": usage_block})
    yield sse("[DONE]")


@router.post("/completions", summary="Text completion (OpenAI format)")
async def completions(body: CompletionRequest, request: Request, runtime: RuntimeDep, key: GenerationKey) -> Any:
    sent: dict[str, Any] | None = None
    if body.prompt_ref is not None:  # a registered prompt (Winnow's extension)
        body, sent = await use.for_openai(runtime.prompts, key.id, body, await request.json())
    provider = runtime.models.provider(body.model)
    if isinstance(provider, OpenAIProvider):  # usually answered before routing (api/passthrough.py)
        sent, pin = sent or await request.json(), request.headers.get(PIN_HEADER)
        return await forward(runtime, key.id, provider, "/completions", body, sent, pin)
    prompts, params = completion_request(body)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    whole = params.logprobs is not None or body.echo  # streamed as one chunk per choice, as n > 1
    if body.stream and body.n == 1 and len(prompts) == 1 and not whole:
        return await _stream_response(runtime, key.id, body.model, prompts[0], params, include_usage, chat=False)
    ident = f"cmpl-{hex_id()}"
    try:
        results, _ = await runtime.generation.run(body.model, list(prompts), params, key.id, "v1", ident)
    except ContextLengthExceeded as exc:
        raise _naming(exc, "prompt") from None
    for result in results:
        if result.error is not None:
            raise _naming(result.error, "prompt")
    response = completion_response(ident, body, prompts, results, params)
    choices = response["choices"]
    if body.stream:
        head = {k: response[k] for k in ("id", "object", "created", "model")}
        events = _whole_as_stream(head, choices, response["usage"] if include_usage else None)
        return StreamingResponse(events, media_type="text/event-stream")
    return JSONResponse(response)


@router.post("/score", summary="Score (prompt, response) pairs with a reward model (vLLM's score API)")
async def score(body: ScoreRequest, runtime: RuntimeDep, _key: GenerationKey) -> JSONResponse:
    firsts = [body.text_1] if isinstance(body.text_1, str) else body.text_1
    seconds = [body.text_2] if isinstance(body.text_2, str) else body.text_2
    if len(firsts) == 1:
        firsts = firsts * len(seconds)
    if len(firsts) != len(seconds) or not seconds:
        raise InvalidRequest("text_1 and text_2 must pair up", f"{len(firsts)} vs {len(seconds)} texts")
    if body.model not in runtime.rewards.ids():
        raise ModelNotFound(f"Reward model {body.model!r} not found", f"available: {', '.join(runtime.rewards.ids())}")
    reward = runtime.rewards.get(body.model)
    candidates = [
        Candidate(PromptRow(str(i), user_prompt(first)), 0, second, "end_of_turn")
        for i, (first, second) in enumerate(zip(firsts, seconds, strict=True))
    ]
    scores = await reward.score(candidates)
    return JSONResponse(
        {
            "id": f"score-{hex_id()}",
            "object": "list",
            "created": int(time.time()),
            "model": body.model,
            "data": [{"index": i, "object": "score", "score": s} for i, s in enumerate(scores)],
        }
    )

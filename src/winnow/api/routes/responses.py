"""OpenAI's Responses API on /v1: ``POST /v1/responses``, ``GET`` and ``DELETE /v1/responses/{id}``.

Every model, local or upstream, is answered through the chat-completions path (``chat_completion``,
the same call ``/v1/chat/completions`` makes, so it is billed once, as a chat is, and refuses what a
chat to that model would refuse); ``winnow.responses`` translates the request and the answer. An
upstream model that serves ``/responses`` itself gets the request passed through
(``winnow.api.responses_upstream``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from fastapi import Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from winnow.api.deps import GenerationKey, OtherKey, RuntimeDep
from winnow.api.responses_upstream import forward_response, serves_responses
from winnow.api.routes.openai import chat_completion, generation_errors
from winnow.api.routing import Router
from winnow.errors import InvalidRequest
from winnow.ids import hex_id
from winnow.models.cache import CACHE_HEADER
from winnow.models.providers.openai import OpenAIProvider
from winnow.models.router import ATTEMPTS_HEADER, PIN_HEADER
from winnow.responses import ResponseStore, Turn, chat_turn
from winnow.responses.stream import chat_chunks, response_events
from winnow.responses.translate import finished, now, rename_param
from winnow.schemas.openai import ChatCompletionRequest
from winnow.schemas.responses import ResponseCreateRequest

router = Router(prefix="/v1", tags=["OpenAI-compatible"], responses=generation_errors("Model or response not found"))

_PASSED_HEADERS = (PIN_HEADER, ATTEMPTS_HEADER, CACHE_HEADER)


def _json(payload: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), media_type="application/json", headers=headers)


@router.post("/responses", summary="Create a model response (OpenAI's Responses API, over chat completions)")
async def create_response(
    body: ResponseCreateRequest, request: Request, runtime: RuntimeDep, key: GenerationKey
) -> Response:
    provider = runtime.models.provider(body.model)
    if serves_responses(provider):
        assert isinstance(provider, OpenAIProvider)
        return await forward_response(runtime, key.id, provider, await request.json(), request.headers.get(PIN_HEADER))
    store = ResponseStore(runtime.db)
    history: list[dict[str, Any]] = []
    if body.previous_response_id is not None:
        history = await run_in_threadpool(store.conversation, key.id, body.previous_response_id)
    turn = chat_turn(body, history)
    if not turn.body["messages"]:
        raise InvalidRequest("input must hold at least one item", param="input")
    chat = ChatCompletionRequest.model_validate(turn.body)
    try:
        answer = await chat_completion(runtime, key.id, chat, turn.body, request.headers.get(PIN_HEADER))
    except InvalidRequest as exc:  # a field the chat path refuses, named as this request names it
        raise rename_param(exc) from None
    ident, created_at = f"resp_{hex_id()}", now()
    headers = {name: answer.headers[name] for name in _PASSED_HEADERS if name in answer.headers}

    async def keep(response: dict[str, Any], answered: Turn) -> None:
        if body.store:
            conversation = [*history, *turn.messages, answered.assistant_message()]
            await run_in_threadpool(store.save, key.id, response, turn.input_items, conversation)

    if isinstance(answer, StreamingResponse):
        chunks = chat_chunks(answer.body_iterator)

        async def close() -> None:
            await chunks.aclose()
            aclose = getattr(answer.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()  # the chat stream bills what it generated, also when the client went away

        events = response_events(ident, body, created_at, chunks, close, keep)
        return StreamingResponse(
            events, media_type="text/event-stream", headers={**headers, "Cache-Control": "no-cache"}
        )
    answered = Turn.of_completion(orjson.loads(bytes(answer.body)))
    response = finished(ident, body, created_at, answered)
    await keep(response, answered)
    return _json(response, headers)


@router.get("/responses/{response_id}", summary="Retrieve a stored response (OpenAI's Responses API)")
async def retrieve_response(response_id: str, runtime: RuntimeDep, key: OtherKey) -> Response:
    return _json(await run_in_threadpool(ResponseStore(runtime.db).response, key.id, response_id))


@router.get("/responses/{response_id}/input_items", summary="List a stored response's input items")
async def list_input_items(
    response_id: str,
    runtime: RuntimeDep,
    key: OtherKey,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Annotated[Literal["asc", "desc"], Query()] = "desc",
    after: str | None = None,
) -> Response:
    """OpenAI's item list, ``order`` desc (newest first) by default; ``after`` an item id of the list."""
    items = await run_in_threadpool(ResponseStore(runtime.db).input_items, key.id, response_id)
    items = items[::-1] if order == "desc" else items
    if after is not None:
        ids = [item.get("id") for item in items]
        if after not in ids:
            raise InvalidRequest(f"No input item {after!r} in response {response_id!r}", param="after")
        items = items[ids.index(after) + 1 :]
    page = items[:limit]
    first, last = (page[0]["id"], page[-1]["id"]) if page else (None, None)
    return _json({"object": "list", "data": page, "first_id": first, "last_id": last, "has_more": len(items) > limit})


@router.delete("/responses/{response_id}", summary="Delete a stored response (OpenAI's Responses API)")
async def delete_response(response_id: str, runtime: RuntimeDep, key: OtherKey) -> Response:
    await run_in_threadpool(ResponseStore(runtime.db).delete, key.id, response_id)
    return _json({"id": response_id, "object": "response", "deleted": True})

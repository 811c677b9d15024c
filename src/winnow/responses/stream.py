"""A streamed chat completion (its SSE chunks) as the Responses API's semantic events.

Events, each with its ``sequence_number``: response.created, response.in_progress,
response.output_item.added, response.content_part.added, response.output_text.delta (one per
chunk), response.output_text.done, response.content_part.done, response.output_item.done, then one
function_call item per tool call (added, arguments delta and done, done), and response.completed
(response.incomplete when the token limit cut it short, response.failed on an error mid-stream).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any

import orjson

from winnow.responses.translate import (
    Turn,
    function_call_item,
    item_id,
    message_item,
    output_text,
    response_object,
    status_of,
    usage_block,
)
from winnow.schemas.responses import ResponseCreateRequest


async def chat_chunks(body: AsyncIterable[str | bytes | memoryview]) -> AsyncGenerator[dict[str, Any]]:
    """The JSON chunks of a chat SSE stream, up to ``[DONE]``."""
    pending = b""
    async for piece in body:
        pending += piece.encode() if isinstance(piece, str) else bytes(piece)
        *events, pending = pending.split(b"\n\n")
        for event in events:
            for line in event.splitlines():
                if line.startswith(b"data: "):
                    data = line[len(b"data: ") :]
                    if data == b"[DONE]":
                        return
                    yield orjson.loads(data)


class ResponseEvents:
    """Numbers and frames the events of one streamed Response."""

    def __init__(self) -> None:
        self.sequence = 0

    def __call__(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def _gather(turn: Turn, chunk: dict[str, Any], calls: dict[int, dict[str, Any]]) -> str:
    """Adds ``chunk`` to ``turn`` (tool calls by index into ``calls``); returns its text."""
    turn.usage = chunk.get("usage") or turn.usage
    text = ""
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        text += delta.get("content") or ""
        for call in delta.get("tool_calls") or []:
            gathered = calls.setdefault(call.get("index", 0), {"id": None, "type": "function", "function": {}})
            gathered["id"] = gathered["id"] or call.get("id")
            function = call.get("function") or {}
            if function.get("name"):
                gathered["function"]["name"] = function["name"]
            arguments = gathered["function"].get("arguments", "") + (function.get("arguments") or "")
            gathered["function"]["arguments"] = arguments
        turn.finish_reason = choice.get("finish_reason") or turn.finish_reason
    turn.text += text
    return text


def _failure(error: dict[str, Any]) -> dict[str, str]:
    """A chat stream's error as a Response's: OpenAI's codes are few (rate_limit_exceeded, else
    server_error); the chat error's own code goes into the message."""
    code = str(error.get("code") or "")
    kept = "rate_limit_exceeded" if code == "rate_limit_exceeded" else "server_error"
    message = str(error.get("message") or "The model failed")
    return {"code": kept, "message": f"{message} ({code})" if code and code != kept else message}


async def response_events(
    ident: str,
    request: ResponseCreateRequest,
    created_at: int,
    chunks: AsyncIterator[dict[str, Any]],
    close: Callable[[], Awaitable[None]],
    done: Callable[[dict[str, Any], Turn], Awaitable[None]],
) -> AsyncIterator[bytes]:
    """The events of a Response streamed from chat ``chunks``; ``close`` ends the chat stream
    (which bills it, also when the client goes away); ``done`` gets the finished Response."""
    event = ResponseEvents()
    message = item_id("msg")
    at = {"item_id": message, "output_index": 0, "content_index": 0}
    turn, calls = Turn(), dict[int, dict[str, Any]]()
    try:
        yield event("response.created", response=response_object(ident, request, created_at))
        yield event("response.in_progress", response=response_object(ident, request, created_at))
        yield event("response.output_item.added", output_index=0, item=message_item(message, "", "in_progress"))
        yield event("response.content_part.added", **at, part=output_text(""))
        async for chunk in chunks:
            if "error" in chunk:
                failure = _failure(chunk["error"] or {})
                failed = response_object(ident, request, created_at, "failed", error=failure)
                yield event("response.failed", response=failed)
                return
            text = _gather(turn, chunk, calls)
            if text:
                yield event("response.output_text.delta", **at, delta=text, logprobs=[])
        turn.tool_calls = [calls[i] for i in sorted(calls)]
        status, incomplete = status_of(turn)
        yield event("response.output_text.done", **at, text=turn.text, logprobs=[])
        yield event("response.content_part.done", **at, part=output_text(turn.text))
        output = [message_item(message, turn.text, status)]
        yield event("response.output_item.done", output_index=0, item=output[0])
        for call in turn.tool_calls:
            index, item = len(output), function_call_item(item_id("fc"), call)
            yield event(
                "response.output_item.added",
                output_index=index,
                item={**item, "arguments": "", "status": "in_progress"},
            )
            where = {"item_id": item["id"], "output_index": index}
            yield event("response.function_call_arguments.delta", **where, delta=item["arguments"])
            yield event(
                "response.function_call_arguments.done", **where, name=item["name"], arguments=item["arguments"]
            )
            yield event("response.output_item.done", output_index=index, item=item)
            output.append(item)
        final = response_object(ident, request, created_at, status, output, usage_block(turn.usage), incomplete)
        await done(final, turn)
        yield event(f"response.{status}", response=final)
    finally:
        await close()

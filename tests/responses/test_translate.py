"""A chat answer with tool calls as a Response: whole (function_call items after the message) and
streamed (function_call items with their argument events), valid by OpenAI's schemas."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from tests.api.test_openai_responses import EVENT_SCHEMAS, assert_responses_schema
from winnow.responses import Turn
from winnow.responses.stream import chat_chunks, response_events
from winnow.responses.translate import finished
from winnow.schemas.responses import ResponseCreateRequest

REQUEST = ResponseCreateRequest.model_validate(
    {"model": "m", "input": "17+25?", "tools": [{"type": "function", "name": "add", "parameters": {}}]}
)
CALL = {"id": "call_9", "type": "function", "function": {"name": "add", "arguments": '{"a": 17, "b": 25}'}}
USAGE = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}


def test_tool_calls_of_a_chat_answer_are_function_call_items() -> None:
    completion = {
        "choices": [
            {"message": {"role": "assistant", "content": None, "tool_calls": [CALL]}, "finish_reason": "tool_calls"}
        ],
        "usage": USAGE,
    }
    response = finished("resp_1", REQUEST, 1, Turn.of_completion(completion))
    assert_responses_schema("Response", response)
    (item,) = response["output"]  # no empty message before the call
    assert item["type"] == "function_call" and item["id"].startswith("fc_")
    assert (item["call_id"], item["name"], item["arguments"]) == ("call_9", "add", '{"a": 17, "b": 25}')
    assert response["status"] == "completed" and response["usage"]["total_tokens"] == 13


def _sse(chunks: list[dict[str, Any]]) -> AsyncIterator[bytes]:
    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            data = f"data: {json.dumps(chunk)}\n\n".encode()
            yield data[:7]  # frames split anywhere still parse
            yield data[7:]
        yield b"data: [DONE]\n\n"

    return body()


def _collect(chunks: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    kept: list[dict[str, Any]] = []
    closed: list[bool] = []

    async def close() -> None:
        closed.append(True)

    async def done(response: dict[str, Any], _turn: Turn) -> None:
        kept.append(response)

    async def run() -> list[bytes]:
        stream = response_events("resp_2", REQUEST, 1, chat_chunks(_sse(chunks)), close, done)
        return [frame async for frame in stream]

    frames = asyncio.run(run())
    assert closed == [True]
    events = [json.loads(frame.split(b"\ndata: ", 1)[1]) for frame in frames]
    return events, kept


def test_streamed_tool_calls_are_function_call_items_with_their_argument_events() -> None:
    head = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    deltas = [
        {"role": "assistant", "content": "Adding"},
        {
            "tool_calls": [
                {"index": 0, "id": "call_9", "type": "function", "function": {"name": "add", "arguments": ""}}
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"a": 17, '}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '"b": 25}'}}]},
    ]
    chunks = [{**head, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    chunks += [
        {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {**head, "choices": [], "usage": USAGE},
    ]
    events, kept = _collect(chunks)
    for event in events:
        assert_responses_schema(EVENT_SCHEMAS.get(event["type"]) or _ARGUMENTS[event["type"]], event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events][-6:] == [
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    final = events[-1]["response"]
    assert kept == [final]
    message, call = final["output"]
    assert message["content"][0]["text"] == "Adding"
    assert (call["call_id"], call["name"], call["arguments"]) == ("call_9", "add", '{"a": 17, "b": 25}')
    assert final["usage"]["input_tokens"] == 9


_ARGUMENTS = {
    "response.function_call_arguments.delta": "ResponseFunctionCallArgumentsDeltaEvent",
    "response.function_call_arguments.done": "ResponseFunctionCallArgumentsDoneEvent",
}


def test_an_error_mid_stream_is_response_failed_and_nothing_kept() -> None:
    head = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    chunks = [
        {**head, "choices": [{"index": 0, "delta": {"content": "4"}, "finish_reason": None}]},
        {"error": {"message": "upstream went away", "type": "server_error", "param": None, "code": "upstream_error"}},
    ]
    events, kept = _collect(chunks)
    assert [e["type"] for e in events][-2:] == ["response.output_text.delta", "response.failed"]
    failed = events[-1]
    assert_responses_schema("ResponseFailedEvent", failed)
    assert failed["response"]["error"] == {"code": "server_error", "message": "upstream went away (upstream_error)"}
    assert kept == []

"""The fake upstream's answer to ``/responses`` (``tests.api.test_passthrough.FakeUpstream``)."""

from __future__ import annotations

import json
from typing import Any


def fake_response(body: dict[str, Any], used: dict[str, int]) -> dict[str, Any]:
    """OpenAI's answer to /responses: a completed Response whose text is the request as received."""
    text = {"type": "output_text", "text": json.dumps(body, sort_keys=True), "annotations": [], "logprobs": []}
    message = {"type": "message", "id": "msg_fake_1", "status": "completed", "role": "assistant", "content": [text]}
    usage = {
        "input_tokens": used["prompt_tokens"],
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": used["completion_tokens"],
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": used["total_tokens"],
    }
    return {
        "id": "resp_fake_1",
        "object": "response",
        "created_at": 1,
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": body.get("model"),
        "output": [message],
        "parallel_tool_calls": True,
        "previous_response_id": body.get("previous_response_id"),
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "metadata": {},
        "usage": usage,
    }


def fake_response_stream(body: dict[str, Any], used: dict[str, int], pieces: list[str]) -> bytes:
    """OpenAI's stream for /responses: created, one text delta a piece, completed (no [DONE])."""
    final = fake_response(body, used)
    final["output"][0]["content"][0]["text"] = "".join(pieces)
    started = {**{k: v for k, v in final.items() if k != "usage"}, "status": "in_progress", "output": []}
    where = {"item_id": "msg_fake_1", "output_index": 0, "content_index": 0, "logprobs": []}
    events = [
        {"type": "response.created", "response": started},
        *({"type": "response.output_text.delta", **where, "delta": piece} for piece in pieces),
        {"type": "response.completed", "response": final},
    ]
    frames = []
    for number, event in enumerate(events):
        frames.append(f"event: {event['type']}\ndata: {json.dumps({**event, 'sequence_number': number})}\n\n")
    return "".join(frames).encode()

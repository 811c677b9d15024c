"""Tool calls on local models: OpenAI's ``tools`` and ``tool_choice`` in, Hermes-style blocks out.

A model whose chat template renders ``tools`` gets them in its prompt (``ToolChat``) and answers a
call as ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, which ``parse`` reads back
into OpenAI's ``tool_calls`` as vLLM's hermes tool parser does. ``tool_choice`` ``required`` and a
named function are enforced while decoding: a ``tool_call`` guide whose JSON schema is built from
the tools' ``parameters``; ``auto`` lets the model choose; ``none`` only shows it the tools.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from winnow.errors import InvalidRequest
from winnow.ids import hex_id
from winnow.models.base import Guide

_BLOCK = re.compile(r"<tool_call>(.*?)</tool_call>|<tool_call>(.*)$", re.DOTALL)


@dataclass(frozen=True)
class ToolUse:
    """A request's tools (OpenAI's list, checked) and its choice: auto, none, required or a name."""

    tools: list[dict[str, Any]]
    choice: str
    named: str | None = None

    def guide(self) -> Guide | None:
        """What ``required`` or a named function forces the model to write (None for auto and none)."""
        if self.choice not in ("required", "named"):
            return None
        functions = [t["function"] for t in self.tools if self.named in (None, t["function"]["name"])]
        calls = [_call_schema(f) for f in functions]
        schema = calls[0] if len(calls) == 1 else {"anyOf": calls}
        return Guide("tool_call", json.dumps(schema), "tool_choice")


def _call_schema(function: dict[str, Any]) -> dict[str, Any]:
    parameters = function.get("parameters") or {"type": "object", "properties": {}}
    return {
        "type": "object",
        "properties": {"name": {"const": function["name"]}, "arguments": parameters},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def _checked_tools(tools: object) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise InvalidRequest("tools must be a list of function tools", param="tools")
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
            raise InvalidRequest("Each tool is {type: function, function: {...}}", param=f"tools[{i}]")
        if not isinstance(function.get("name"), str) or not function["name"]:
            raise InvalidRequest("A function tool needs a name", param=f"tools[{i}].function.name")
        if not isinstance(function.get("parameters", {}), dict):
            raise InvalidRequest("A function's parameters are a JSON schema", param=f"tools[{i}].function.parameters")
    return tools


def tool_use(fields: dict[str, Any]) -> ToolUse | None:
    """The tools a chat request sends and how it lets the model use them (None: no tools)."""
    tools, choice = fields.get("tools"), fields.get("tool_choice")
    if not tools:
        if choice not in (None, "none", "auto"):
            raise InvalidRequest("tool_choice needs tools", param="tool_choice")
        return None
    checked = _checked_tools(tools)
    if choice is None or choice in ("auto", "none", "required"):
        return ToolUse(checked, choice or "auto")
    name = ((choice.get("function") or {}).get("name")) if isinstance(choice, dict) else None
    if not isinstance(choice, dict) or choice.get("type") != "function" or not isinstance(name, str):
        raise InvalidRequest(
            "tool_choice is none, auto, required or {type: function, function: {name}}", param="tool_choice"
        )
    if name not in {t["function"]["name"] for t in checked}:
        raise InvalidRequest(f"tool_choice names {name!r}, which is not in tools", param="tool_choice")
    return ToolUse(checked, "named", name)


def parse(text: str) -> tuple[str | None, list[dict[str, Any]]]:
    """A model's answer as (content, OpenAI tool_calls): the text before the first ``<tool_call>`` and
    each block's call. A block that is not a call's JSON (cut short, malformed) leaves the whole text
    as content and no calls."""
    calls = []
    for match in _BLOCK.finditer(text):
        body = match.group(1) if match.group(1) is not None else match.group(2)
        try:
            call = json.loads(body)
        except ValueError:
            return text, []
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            return text, []
        arguments = call.get("arguments", {})
        calls.append(
            {
                "id": f"call_{hex_id()[:24]}",
                "type": "function",
                "function": {"name": call["name"], "arguments": json.dumps(arguments)},
            }
        )
    if not calls:
        return text, []
    return text[: text.index("<tool_call>")].strip() or None, calls


def stream_deltas(message: dict[str, Any]) -> list[dict[str, Any]]:
    """A finished message as a stream's deltas, as OpenAI sends them: the role (and any content), then
    per call a delta with its id, type and name (arguments empty) and one with its arguments."""
    first = {"role": "assistant", "content": message["content"], "refusal": None}
    calls = message.get("tool_calls") or []
    deltas: list[dict[str, Any]] = [first]
    for index, call in enumerate(calls):
        head = {"name": call["function"]["name"], "arguments": ""}
        deltas.append({"tool_calls": [{"index": index, "id": call["id"], "type": "function", "function": head}]})
        deltas.append({"tool_calls": [{"index": index, "function": {"arguments": call["function"]["arguments"]}}]})
    return deltas


def chat_message(text: str, finish: str, use: ToolUse | None) -> tuple[dict[str, Any], str]:
    """A chat choice's message and finish reason: with tools (not ``none``), its calls parsed out and
    ``tool_calls`` as the reason when it ended on one."""
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if use is None or use.choice == "none":
        return message, finish
    content, calls = parse(text)
    if not calls:
        return message, finish
    return message | {"content": content, "tool_calls": calls}, ("tool_calls" if finish == "stop" else finish)


def with_tools(guide: Guide | None, use: ToolUse) -> Guide | None:
    """The guide a request decodes with: its tool choice's, or its structured output's (not both)."""
    forced = use.guide()
    if forced is not None and guide is not None:
        raise InvalidRequest(
            "tool_choice required or named cannot be combined with a structured output", param="tool_choice"
        )
    return forced or guide

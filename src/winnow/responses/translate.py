"""A Responses request as a chat-completions body, and a chat answer as a Response object.

``instructions`` become the first system message (not kept in the stored conversation, so a
``previous_response_id`` continuation does not carry them over, as OpenAI does); input items become
chat messages (function calls and their outputs as ``tool_calls`` and ``tool`` messages);
``text.format`` becomes ``response_format`` and function ``tools`` become chat tools.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from winnow.errors import InvalidRequest, UnsupportedParameter, UnsupportedValue
from winnow.ids import hex_id
from winnow.schemas.responses import InputItem, ResponseCreateRequest, ResponseTool

# Responses fields that would change the answer and that the chat path cannot honour, each with
# the values that ask for nothing.
_UNSUPPORTED: dict[str, tuple[object, ...]] = {
    "background": (None, False),
    "conversation": (None,),
    "prompt": (None,),
    "include": (None, []),
    "max_tool_calls": (None,),
    "top_logprobs": (None, 0),
}
# Chat fields as the Responses request names them (for a refusal's ``param``).
_PARAM_NAMES = {
    "response_format": "text.format",
    "max_completion_tokens": "max_output_tokens",
    "reasoning_effort": "reasoning",
    "messages": "input",
}
_TEXT_PARTS = ("input_text", "output_text")


def item_id(prefix: str) -> str:
    return f"{prefix}_{hex_id()}"


@dataclass
class ChatTurn:
    """One Responses request as a chat request: the body, the stored input items, and the messages
    this turn adds to the conversation (its input; its output is added once answered)."""

    body: dict[str, Any]
    input_items: list[dict[str, Any]]
    messages: list[dict[str, Any]]


@dataclass
class Turn:
    """A chat answer, read from a completion or gathered from a stream."""

    text: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # chat tool_calls
    finish_reason: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)  # chat usage block

    @classmethod
    def of_completion(cls, completion: dict[str, Any]) -> Turn:
        choice = (completion.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        return cls(
            text=message.get("content") or "",
            tool_calls=list(message.get("tool_calls") or []),
            finish_reason=choice.get("finish_reason"),
            usage=completion.get("usage") or {},
        )

    def assistant_message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.text}
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        return message


def rename_param(exc: InvalidRequest) -> InvalidRequest:
    """A chat refusal as the Responses request names the field (``response_format`` is ``text.format``)."""
    param = exc.param or ""
    head, dot, rest = param.partition("[")
    name = _PARAM_NAMES.get(head)
    if name is not None:
        renamed = name + (dot + rest if head != "messages" else "")
        exc.message = exc.message.replace(repr(param), repr(renamed))
        exc.param = renamed
    return exc


def _refuse(request: ResponseCreateRequest) -> None:
    for name, value in (request.model_extra or {}).items():
        if name in _UNSUPPORTED and value not in _UNSUPPORTED[name]:
            raise UnsupportedParameter(name, request.model)


def _part_text(request: ResponseCreateRequest, i: int, item: InputItem) -> str:
    if isinstance(item.content, str):
        return item.content
    texts = []
    for j, part in enumerate(item.content or []):
        if part.type not in _TEXT_PARTS:
            raise UnsupportedValue(f"input[{i}].content[{j}].type", part.type, request.model)
        texts.append(part.text or "")
    return "".join(texts)


def _required(i: int, item: InputItem, *names: str) -> None:
    for name in names:
        if getattr(item, name) is None:
            raise InvalidRequest(f"input[{i}].{name} is required for a {item.type} item", param=f"input[{i}].{name}")


def _input(request: ResponseCreateRequest) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(stored input items, chat messages) of ``request.input``."""
    if isinstance(request.input, str):
        part: dict[str, Any] = {"type": "input_text", "text": request.input}
        message = {"id": item_id("msg"), "type": "message", "role": "user", "status": "completed", "content": [part]}
        return [message], [{"role": "user", "content": request.input}]
    items: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for i, item in enumerate(request.input):
        if item.type == "message":
            _required(i, item, "role")
            assert item.role is not None
            text = _part_text(request, i, item)
            kind = "output_text" if item.role == "assistant" else "input_text"
            part = {"type": kind, "text": text} | ({"annotations": []} if kind == "output_text" else {})
            items.append(
                {"id": item_id("msg"), "type": "message", "role": item.role, "status": "completed", "content": [part]}
            )
            messages.append({"role": item.role, "content": text})
        elif item.type == "function_call":
            _required(i, item, "call_id", "name", "arguments")
            items.append(item.model_dump(exclude_none=True) | {"id": item_id("fc"), "status": "completed"})
            call = {
                "id": item.call_id,
                "type": "function",
                "function": {"name": item.name, "arguments": item.arguments},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":  # the calls of one answer: one message
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif item.type == "function_call_output":
            _required(i, item, "call_id", "output")
            items.append(item.model_dump(exclude_none=True) | {"id": item_id("fco"), "status": "completed"})
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": item.output})
        else:
            raise UnsupportedValue(f"input[{i}].type", item.type, request.model)
    return items, messages


def _tools(request: ResponseCreateRequest) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if request.tools:
        tools = []
        for i, tool in enumerate(request.tools):
            if tool.type != "function":
                raise UnsupportedValue(f"tools[{i}].type", tool.type, request.model)
            if tool.name is None:
                raise InvalidRequest(f"tools[{i}].name is required", param=f"tools[{i}].name")
            function = tool.model_dump(exclude_none=True, exclude={"type"})
            tools.append({"type": "function", "function": function})
        fields["tools"] = tools
    choice = request.tool_choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        fields["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif choice is not None:
        fields["tool_choice"] = choice
    if request.parallel_tool_calls is not None and request.tools:
        fields["parallel_tool_calls"] = request.parallel_tool_calls
    return fields


def _response_format(request: ResponseCreateRequest) -> dict[str, Any] | None:
    form = request.text.format if request.text else None
    if form is None or form.type == "text":
        return None
    if form.type == "json_object":
        return {"type": "json_object"}
    if form.name is None or form.schema_ is None:
        raise InvalidRequest("text.format of type json_schema needs a name and a schema", param="text.format")
    schema: dict[str, Any] = {"name": form.name, "schema": form.schema_}
    schema |= {k: v for k, v in (("description", form.description), ("strict", form.strict)) if v is not None}
    return {"type": "json_schema", "json_schema": schema}


def chat_turn(request: ResponseCreateRequest, history: list[dict[str, Any]]) -> ChatTurn:
    """The chat request for ``request``, after the stored ``history`` of its previous response."""
    _refuse(request)
    items, messages = _input(request)
    system = [{"role": "system", "content": request.instructions}] if request.instructions else []
    body: dict[str, Any] = {"model": request.model, "messages": [*system, *history, *messages]}
    optional = {
        "max_completion_tokens": request.max_output_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "user": request.user,
        "response_format": _response_format(request),
        "reasoning_effort": ((request.model_extra or {}).get("reasoning") or {}).get("effort"),
    }
    body |= {k: v for k, v in optional.items() if v is not None} | _tools(request)
    if request.stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return ChatTurn(body, items, messages)


def usage_block(chat_usage: dict[str, Any]) -> dict[str, Any]:
    """A chat ``usage`` block as a Response's."""
    tokens_in = int(chat_usage.get("prompt_tokens") or 0)
    tokens_out = int(chat_usage.get("completion_tokens") or 0)
    cached = int((chat_usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    reasoning = int((chat_usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
    return {
        "input_tokens": tokens_in,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": tokens_out,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": tokens_in + tokens_out,
    }


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(ident: str, text: str, status: str) -> dict[str, Any]:
    content = [output_text(text)] if status != "in_progress" else []
    return {"id": ident, "type": "message", "role": "assistant", "status": status, "content": content}


def function_call_item(ident: str, call: dict[str, Any], status: str = "completed") -> dict[str, Any]:
    function = call.get("function") or {}
    return {
        "id": ident,
        "type": "function_call",
        "call_id": call.get("id") or item_id("call"),
        "name": function.get("name") or "",
        "arguments": function.get("arguments") or "",
        "status": status,
    }


def status_of(turn: Turn) -> tuple[str, dict[str, str] | None]:
    """A Response's status and incomplete_details for the chat answer's finish reason."""
    if turn.finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if turn.finish_reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def _function_fields(tool: ResponseTool) -> dict[str, Any]:
    """A function tool's fields as a Response echoes them (null where the request left them out)."""
    return {k: getattr(tool, k) for k in ("description", "parameters", "strict")} if tool.type == "function" else {}


def response_object(
    ident: str,
    request: ResponseCreateRequest,
    created_at: int,
    status: str = "in_progress",
    output: list[dict[str, Any]] | None = None,
    usage: dict[str, Any] | None = None,
    incomplete: dict[str, str] | None = None,
    error: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Response object, echoing the request's settings as OpenAI does."""
    form = (
        request.text.format.model_dump(by_alias=True, exclude_none=True)
        if request.text and request.text.format
        else None
    )
    return {
        "id": ident,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "error": error,
        "incomplete_details": incomplete,
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "max_tool_calls": None,
        "model": request.model,
        "output": output or [],
        "parallel_tool_calls": request.parallel_tool_calls if request.parallel_tool_calls is not None else True,
        "previous_response_id": request.previous_response_id,
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": request.store,
        "temperature": request.temperature if request.temperature is not None else 1.0,
        "text": {"format": form or {"type": "text"}},
        "tool_choice": request.tool_choice or "auto",
        "tools": [{**t.model_dump(exclude_none=True), **_function_fields(t)} for t in request.tools or []],
        "top_p": request.top_p if request.top_p is not None else 1.0,
        "truncation": request.truncation or "disabled",
        "metadata": request.metadata or {},
    } | {k: v for k, v in (("usage", usage), ("user", request.user)) if v is not None}


def finished(ident: str, request: ResponseCreateRequest, created_at: int, turn: Turn) -> dict[str, Any]:
    """The finished Response for a whole chat answer (a message item, then a function_call item per call)."""
    status, incomplete = status_of(turn)
    output = []
    if turn.text or not turn.tool_calls:
        output.append(message_item(item_id("msg"), turn.text, status))
    output += [function_call_item(item_id("fc"), call) for call in turn.tool_calls]
    return response_object(ident, request, created_at, status, output, usage_block(turn.usage), incomplete)


def now() -> int:
    return int(time.time())

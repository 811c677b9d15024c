"""OpenAI's Responses API request (``POST /v1/responses``), validated as OpenAI types it.

Winnow answers it through its chat-completions path (``winnow.responses``), so the fields here are
those that path can honour: each is translated into the chat request, and a field it cannot honour
is refused with a 400 naming it. Fields that do not change the answer (``metadata``, ``user``,
``store``, ``truncation``, ``service_tier``, ...) are accepted.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from winnow.schemas.common import integral
from winnow.schemas.openai import OpenAIModel


class InputPart(OpenAIModel):
    type: str
    text: str | None = None


class InputItem(OpenAIModel):
    """One item of ``input``: a message (``type`` absent or ``message``), or a tool call and its output."""

    type: str = "message"
    role: Literal["user", "system", "developer", "assistant"] | None = None
    content: str | list[InputPart] | None = None
    # function_call / function_call_output
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | None = None


class TextFormat(OpenAIModel):
    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    description: str | None = None
    strict: bool | None = None


class TextConfig(OpenAIModel):
    format: TextFormat | None = None


class ResponseTool(OpenAIModel):
    type: str
    name: str | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ResponseCreateRequest(OpenAIModel):
    model: str
    input: str | list[InputItem]
    instructions: str | None = None
    max_output_tokens: Annotated[int, Field(ge=1), integral] | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    text: TextConfig | None = None
    tools: list[ResponseTool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    stream: bool = False
    store: bool = True
    previous_response_id: str | None = None
    truncation: Literal["auto", "disabled"] | None = None

"""OpenAI wire format for Winnow's ``/v1`` surface (requests validated; unknown fields kept for upstreams).

Upstream models get every field as sent. Local models implement the sampling fields declared here
(OpenAI's, and vLLM's: ``top_k``, ``min_p``, ``repetition_penalty``, ``min_tokens``, ``ignore_eos``,
``stop_token_ids``) structured outputs (``response_format``, vLLM's ``guided_*``) and tools (on models whose chat
template renders them); a field of OpenAI's request that would change the answer and that they do not
implement (``functions``, audio, ...) is refused with a 400 naming it
(``refuse_unsupported``), never ignored. Fields that do not change the answer (``user``,
``metadata``, ``store``, ``service_tier``, ``prediction``, ``parallel_tool_calls`` without tools)
are accepted.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from winnow.errors import InvalidRequest, UnsupportedParameter, UnsupportedValue
from winnow.models.base import Guide, RawPrompt, TokenLogprob
from winnow.schemas.common import Int, integral
from winnow.schemas.prompts import EXTENSION, PromptRef
from winnow.schemas.structured_outputs import guide_of
from winnow.schemas.tool_calls import ToolUse, tool_use


class OpenAIModel(BaseModel):
    """Typed as OpenAI's API types them (no strings for numbers), unknown fields kept for upstreams."""

    model_config = ConfigDict(extra="allow", strict=True)


class ContentPart(OpenAIModel):
    type: str
    text: str | None = None


class ChatMessageIn(OpenAIModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    def tool_fields(self) -> tuple[str | None, str | None]:
        """An assistant's ``tool_calls`` (as JSON text) and a tool message's ``tool_call_id``."""
        extra = self.model_extra or {}
        calls = extra.get("tool_calls")
        call_id = extra.get("tool_call_id")
        calls_ok = isinstance(calls, list) and calls and all(isinstance(c, dict) for c in calls)
        return (json.dumps(calls) if calls_ok else None), (call_id if isinstance(call_id, str) else None)

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content if part.type == "text")


class StreamOptions(OpenAIModel):
    include_usage: bool = False


# OpenAI's (and vLLM's) request fields that change the answer and that local models do not
# implement, each with the values that ask for nothing (a client may send those).
_VLLM_UNSUPPORTED_LOCALLY: dict[str, tuple[object, ...]] = {
    "use_beam_search": (None, False),
    "length_penalty": (None, 1.0),
    "bad_words": (None, []),
    "allowed_token_ids": (None,),
    "truncate_prompt_tokens": (None,),
    "include_stop_str_in_output": (None, False),
    "skip_special_tokens": (None, True),
    "spaces_between_special_tokens": (None, True),
    "prompt_logprobs": (None,),
}
# vLLM's fields that change how a prompt is rendered or what comes back, on either route
_VLLM_RENDERING_UNSUPPORTED_LOCALLY: dict[str, tuple[object, ...]] = {
    "chat_template": (None,),
    "chat_template_kwargs": (None, {}),
    "add_generation_prompt": (None, True),
    "continue_final_message": (None, False),
    "documents": (None,),
    "mm_processor_kwargs": (None, {}),
    "logits_processors": (None, []),
    "return_tokens_as_token_ids": (None, False),
    "return_token_ids": (None, False),
    "prompt_embeds": (None,),
}
_CHAT_UNSUPPORTED_LOCALLY: dict[str, tuple[object, ...]] = {
    **_VLLM_UNSUPPORTED_LOCALLY,
    **_VLLM_RENDERING_UNSUPPORTED_LOCALLY,
    "echo": (None, False),  # vLLM's chat echo: the last message before the answer
    "add_special_tokens": (None, False),  # a chat template writes its own
    "functions": (None, []),
    "function_call": (None, "none", "auto"),
    "audio": (None,),
    "modalities": (None, ["text"]),
    "reasoning_effort": (None,),
    "verbosity": (None,),
    "web_search_options": (None,),
}
_COMPLETION_UNSUPPORTED_LOCALLY: dict[str, tuple[object, ...]] = {
    **_VLLM_UNSUPPORTED_LOCALLY,
    **_VLLM_RENDERING_UNSUPPORTED_LOCALLY,
    "add_special_tokens": (None, True),  # a prompt is sent as written, with the tokenizer's own
    "suffix": (None, ""),
}


def _refuse(model: str, extra: dict[str, Any] | None, unsupported: dict[str, tuple[object, ...]]) -> None:
    for name, value in (extra or {}).items():
        if name in unsupported and value not in unsupported[name]:
            raise UnsupportedParameter(name, model)


def _refuse_best_of(model: str, extra: dict[str, Any] | None, n: int) -> None:
    best_of = (extra or {}).get("best_of")
    if best_of is not None and best_of != n:  # best_of == n is n samples, as here
        raise UnsupportedParameter("best_of", model, "local models return n samples, none ranked")


# A field the body left out (told apart from an explicit null, for OpenAI's error codes).
_ABSENT = object()


def _absent_marked(data: Any, name: str) -> Any:
    """The raw body with ``name`` set to ``_ABSENT`` where the client did not send it."""
    if isinstance(data, dict) and name not in data and name not in (data.get("extra_body") or {}):
        return {**data, name: _ABSENT}
    return data


def _present(value: Any, null_type: str, null_message: str) -> Any:
    """``value`` of a field required unless ``prompt_ref`` is given: OpenAI's missing parameter
    when it was left out, an invalid type when it is null."""
    if value is _ABSENT:
        raise PydanticCustomError("missing", "Field required")
    if value is None:
        raise PydanticCustomError(null_type, null_message)
    return value


class _Sampling(OpenAIModel):
    model: str
    max_tokens: Annotated[int, Field(ge=1), integral] | None = None
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, ge=0.0, le=1.0)
    n: Int = Field(default=1, ge=1, le=128)
    stop: str | list[str] | None = None
    seed: Int | None = Field(default=None, description="Any integer; local engines use it modulo 2**63")
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]] | None = Field(
        default=None, description="Token id (as a string) -> bias added to its logit"
    )
    # vLLM's sampling fields (top level, or in an ``extra_body`` object)
    top_k: Annotated[int, Field(ge=-1), integral] | None = Field(default=None, description="vLLM: -1 or 0: all")
    min_p: float | None = Field(default=None, ge=0.0, le=1.0, description="vLLM")
    repetition_penalty: float | None = Field(default=None, gt=0.0, description="vLLM: 1 is none")
    min_tokens: Annotated[int, Field(ge=0), integral] | None = Field(default=None, description="vLLM")
    ignore_eos: bool | None = Field(default=None, description="vLLM")
    stop_token_ids: list[Annotated[int, Field(ge=0), integral]] | None = Field(default=None, description="vLLM")
    prompt_ref: PromptRef | None = Field(
        default=None,
        description=(
            "Winnow extension: a registered prompt {name, version|label, variables} rendered through that "
            "version (chat: its system and user messages before the request's; completions: instead of prompt); "
            "its sampling parameters apply unless the request sets its own"
        ),
        json_schema_extra=EXTENSION,
    )

    @model_validator(mode="before")
    @classmethod
    def _extra_body(cls, data: Any) -> Any:
        """Fields sent inside an ``extra_body`` object count as top-level ones (the openai SDK
        merges its ``extra_body`` into the top level; other clients send the object itself)."""
        if isinstance(data, dict) and isinstance(data.get("extra_body"), dict):
            data = {**data["extra_body"], **{k: v for k, v in data.items() if k != "extra_body"}}
        return data

    def bias(self) -> tuple[tuple[int, float], ...]:
        """``logit_bias`` as (token id, bias) pairs; a key that is not a token id is a 400 naming it."""
        pairs = []
        for key, value in (self.logit_bias or {}).items():
            if not key.isdigit():
                raise InvalidRequest("logit_bias keys are token ids", f"{key!r} is not one", param="logit_bias")
            pairs.append((int(key), value))
        return tuple(pairs)

    def guide(self) -> Guide | None:
        """The structured output asked for (``response_format``, vLLM's ``guided_*``, ``structured_outputs``)."""
        return guide_of(self.model_extra or {})

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop[:4])


class ChatCompletionRequest(_Sampling):
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["messages"], "properties": {"messages": {"minItems": 1}}},
                {"required": ["prompt_ref"], "properties": {"prompt_ref": {"type": "object"}}},
            ]
        }
    )

    messages: list[ChatMessageIn] = Field(
        default=None, validate_default=True, description="At least one message, unless prompt_ref gives them"
    )
    max_completion_tokens: Annotated[int, Field(ge=1), integral] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20), integral] | None = None

    @model_validator(mode="before")
    @classmethod
    def _mark_absent_messages(cls, data: Any) -> Any:
        return _absent_marked(data, "messages")

    @field_validator("messages", mode="before")
    @classmethod
    def _messages_unless_ref(cls, value: Any, info: ValidationInfo) -> Any:
        """Required and not empty (OpenAI's errors for each), unless ``prompt_ref`` gives them."""
        if info.data.get("prompt_ref") is not None:
            return [] if value is None or value is _ABSENT else value
        if value == []:
            raise PydanticCustomError(
                "too_short",
                "List should have at least 1 item after validation, not 0",
                {"field_type": "List", "min_length": 1, "actual_length": 0},
            )
        return _present(value, "list_type", "Input should be a valid list")

    def tool_use(self) -> ToolUse | None:
        """The tools sent and how the model may use them (``tool_choice``); None without tools."""
        return tool_use(self.model_extra or {})

    def logprobs_wanted(self) -> int | None:
        """How many top tokens each sampled token's log-probability comes with (None: no logprobs)."""
        if self.top_logprobs and not self.logprobs:
            raise InvalidRequest("top_logprobs needs logprobs: true", param="top_logprobs")
        return (self.top_logprobs or 0) if self.logprobs else None

    def refuse_unsupported(self) -> None:
        """Raise UnsupportedParameter (or UnsupportedValue) for the first field a local model cannot honour."""
        _refuse(self.model, self.model_extra, _CHAT_UNSUPPORTED_LOCALLY)
        _refuse_best_of(self.model, self.model_extra, self.n)
        for i, message in enumerate(self.messages):
            for j, part in enumerate(message.content if isinstance(message.content, list) else []):
                if part.type != "text":
                    raise UnsupportedValue(f"messages[{i}].content[{j}].type", part.type, self.model)


TokenIds = Annotated[list[Annotated[int, Field(ge=0), integral]], Field(min_length=1)]


class CompletionRequest(_Sampling):
    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {"required": ["prompt"], "properties": {"prompt": {"not": {"type": "null"}}}},
                {"required": ["prompt_ref"], "properties": {"prompt_ref": {"type": "object"}}},
            ]
        }
    )

    prompt: (
        str
        | Annotated[list[str], Field(min_length=1)]
        | TokenIds
        | Annotated[list[TokenIds], Field(min_length=1)]
        | None
    ) = Field(default=None, validate_default=True, description="Required, unless prompt_ref gives it")

    logprobs: Annotated[int, Field(ge=0, le=20), integral] | None = None
    echo: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _mark_absent_prompt(cls, data: Any) -> Any:
        return _absent_marked(data, "prompt")

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt_unless_ref(cls, value: Any, info: ValidationInfo) -> Any:
        """Required (OpenAI's errors), unless ``prompt_ref`` gives it; not both."""
        if info.data.get("prompt_ref") is not None:
            if value is not None and value is not _ABSENT:
                raise PydanticCustomError("prompt_and_prompt_ref", "give prompt or prompt_ref, not both")
            return None
        return _present(value, "string_type", "Input should be a valid string")

    def prompts(self) -> list[RawPrompt]:
        """Each prompt as written (local models send it without a chat template), or as token ids."""
        if self.prompt is None:  # prompt_ref: rendered into prompt before it is used
            return []
        if isinstance(self.prompt, str):
            return [RawPrompt(self.prompt)]
        out = []
        for item in self.prompt:
            if isinstance(item, int):  # one prompt of token ids
                return [RawPrompt(token_ids=[t for t in self.prompt if isinstance(t, int)])]
            out.append(RawPrompt(item) if isinstance(item, str) else RawPrompt(token_ids=item))
        return out

    def refuse_unsupported(self) -> None:
        """Raise UnsupportedParameter for the first field a local model cannot honour."""
        _refuse(self.model, self.model_extra, _COMPLETION_UNSUPPORTED_LOCALLY)
        _refuse_best_of(self.model, self.model_extra, self.n)


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    task: Literal["generation", "embedding"] = "generation"  # Winnow's extension, as on /api/v1/models


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


def _bytes(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def chat_logprobs(tokens: list[TokenLogprob] | None) -> dict[str, Any] | None:
    """A chat choice's ``logprobs`` in OpenAI's shape (content tokens with their top alternatives)."""
    if tokens is None:
        return None
    return {
        "content": [
            {
                "token": t.token,
                "logprob": t.logprob,
                "bytes": _bytes(t.token),
                "top_logprobs": [{"token": s, "logprob": v, "bytes": _bytes(s)} for s, v in t.top],
            }
            for t in tokens
        ],
        "refusal": None,
    }


def completion_logprobs(tokens: list[TokenLogprob]) -> dict[str, Any]:
    """A completion choice's ``logprobs`` in OpenAI's legacy shape; a prompt's first token (echo)
    has no log-probability (None), as in OpenAI's and vLLM's answers."""
    offsets, at = [], 0
    for t in tokens:
        offsets.append(at)
        at += len(t.token)
    return {
        "tokens": [t.token for t in tokens],
        "token_logprobs": [t.logprob for t in tokens],
        "top_logprobs": [None if t.logprob is None else dict(t.top) for t in tokens],
        "text_offset": offsets,
    }


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


class ScoreRequest(OpenAIModel):
    """vLLM's score API: one ``text_1`` against each ``text_2`` (or pairs of equal-length lists)."""

    model: str
    text_1: str | Annotated[list[str], Field(min_length=1)]
    text_2: str | Annotated[list[str], Field(min_length=1)]

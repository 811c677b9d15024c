"""OpenAI wire format for Winnow's ``/v1`` surface (requests validated; unknown fields kept for upstreams).

Upstream models get every field as sent. Local models implement the sampling fields declared here;
a field of OpenAI's request that would change the answer and that they do not implement (tools,
logprobs, a JSON response format, penalties, ...) is refused with a 400 naming it
(``refuse_unsupported``), never ignored. Fields that do not change the answer (``user``,
``metadata``, ``store``, ``service_tier``, ``prediction``, ``parallel_tool_calls`` without tools)
are accepted.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from winnow.errors import UnsupportedParameter, UnsupportedValue
from winnow.models.base import RawPrompt
from winnow.schemas.common import Int, integral


class OpenAIModel(BaseModel):
    """Typed as OpenAI's API types them (no strings for numbers), unknown fields kept for upstreams."""

    model_config = ConfigDict(extra="allow", strict=True)


class ContentPart(OpenAIModel):
    type: str
    text: str | None = None


class ChatMessageIn(OpenAIModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content if part.type == "text")


class StreamOptions(OpenAIModel):
    include_usage: bool = False


# OpenAI's request fields that change the answer and that local models do not implement, each with
# the values that ask for nothing (a client may send those).
_UNSUPPORTED_LOCALLY: dict[str, tuple[object, ...]] = {
    "logit_bias": (None, {}),
    "frequency_penalty": (None, 0),
    "presence_penalty": (None, 0),
}
_CHAT_UNSUPPORTED_LOCALLY: dict[str, tuple[object, ...]] = {
    **_UNSUPPORTED_LOCALLY,
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "tools": (None, []),
    "tool_choice": (None, "none", "auto"),
    "functions": (None, []),
    "function_call": (None, "none", "auto"),
    "audio": (None,),
    "modalities": (None, ["text"]),
    "reasoning_effort": (None,),
    "verbosity": (None,),
    "web_search_options": (None,),
}
_COMPLETION_UNSUPPORTED_LOCALLY: dict[str, tuple[object, ...]] = {
    **_UNSUPPORTED_LOCALLY,
    "logprobs": (None,),
    "echo": (None, False),
    "suffix": (None, ""),
}


def _refuse(model: str, extra: dict[str, Any] | None, unsupported: dict[str, tuple[object, ...]]) -> None:
    for name, value in (extra or {}).items():
        if name in unsupported and value not in unsupported[name]:
            raise UnsupportedParameter(name, model)


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

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop[:4])


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessageIn] = Field(min_length=1)
    max_completion_tokens: Annotated[int, Field(ge=1), integral] | None = None

    def refuse_unsupported(self) -> None:
        """Raise UnsupportedParameter (or UnsupportedValue) for the first field a local model cannot honour."""
        _refuse(self.model, self.model_extra, _CHAT_UNSUPPORTED_LOCALLY)
        response_format = (self.model_extra or {}).get("response_format")
        if response_format is not None:
            kind = response_format.get("type") if isinstance(response_format, dict) else response_format
            if kind != "text":
                raise UnsupportedValue("response_format", kind, self.model)
        for i, message in enumerate(self.messages):
            if (message.model_extra or {}).get("tool_calls"):
                raise UnsupportedParameter(f"messages[{i}].tool_calls", self.model)
            for j, part in enumerate(message.content if isinstance(message.content, list) else []):
                if part.type != "text":
                    raise UnsupportedValue(f"messages[{i}].content[{j}].type", part.type, self.model)


TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]


class CompletionRequest(_Sampling):
    prompt: str | Annotated[list[str], Field(min_length=1)] | TokenIds | Annotated[list[TokenIds], Field(min_length=1)]

    def prompts(self) -> list[RawPrompt]:
        """Each prompt as written (local models send it without a chat template), or as token ids."""
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
        best_of = (self.model_extra or {}).get("best_of")
        if best_of is not None and best_of != self.n:  # best_of == n is n samples, as here
            raise UnsupportedParameter("best_of", self.model, "local models return n samples, none ranked")


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


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

"""OpenAI wire format for Winnow's ``/v1`` surface (requests validated; unknown fields kept for upstreams)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

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


class CompletionRequest(_Sampling):
    prompt: str | list[str]


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

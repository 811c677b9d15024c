"""The rows that flow through an SDG pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from winnow.models.base import ChatMessage
from winnow.schemas.sdg import PromptResponseScore, SystemMessage, UserMessage


@dataclass(frozen=True)
class PromptRow:
    """One input line: its id, the messages to send, and every other field (e.g. ``answer``)."""

    id: str
    messages: list[dict[str, Any]]
    fields: dict[str, Any] = field(default_factory=dict)
    line: int = 0

    def chat(self) -> list[ChatMessage]:
        """The messages as a model takes them."""
        return [ChatMessage(str(m["role"]), str(m["content"])) for m in self.messages]


@dataclass
class Candidate:
    """One generated response to a prompt, on its way through scoring and filtering."""

    row: PromptRow
    index: int
    text: str
    stop_reason: str  # end_of_turn | out_of_tokens
    output_tokens: int = 0
    raw_score: float = 0.0
    score: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The spec's PromptResponseScore as JSON-ready data (``prompt`` as Messages, ``response``
        as a CompletionMessage)."""
        return {
            "id": self.row.id,
            "index": self.index,
            "prompt": self.row.messages,
            "response": {"role": "assistant", "content": self.text, "stop_reason": self.stop_reason, "tool_calls": []},
            "score": self.score,
            "raw_score": self.raw_score,
        }

    def to_output(self) -> PromptResponseScore:
        """The same row as a validated wire model."""
        return PromptResponseScore.model_validate(self.to_dict())


def user_prompt(text: str, system: str | None = None) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if system:
        messages.append(SystemMessage(content=system).model_dump())
    messages.append(UserMessage(content=text).model_dump())
    return messages

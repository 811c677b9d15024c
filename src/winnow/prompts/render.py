"""A prompt version rendered with a request's variables: what a generation route sends."""

from __future__ import annotations

from dataclasses import dataclass

from winnow.models.base import ChatMessage
from winnow.schemas.prompts import PromptParams


@dataclass(frozen=True)
class RenderedPrompt:
    """Version ``version`` of prompt ``name``: its user message ``text``, its ``system`` message,
    the sampling ``params`` it carries and the ``model`` it was made for."""

    name: str
    version: int
    text: str
    system: str | None
    params: PromptParams
    model: str | None

    def messages(self) -> list[ChatMessage]:
        """The chat it is: the system message (when it has one), then the user message."""
        head = [ChatMessage("system", self.system)] if self.system else []
        return [*head, ChatMessage("user", self.text)]

    def raw(self) -> str:
        """The prompt as one text, for a completion (no chat template): the system message, a blank
        line, then the user message."""
        return f"{self.system}\n\n{self.text}" if self.system else self.text

    def reference(self) -> dict[str, object]:
        """What a response's metadata says about the prompt it used."""
        return {"name": self.name, "version": self.version}

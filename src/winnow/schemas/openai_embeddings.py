"""OpenAI's ``POST /v1/embeddings`` request, as its API types it (the answer is built by the service)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from winnow.errors import InvalidRequest
from winnow.models.embedding import EmbedInput
from winnow.schemas.openai import OpenAIModel

MAX_INPUTS = 2048  # OpenAI's limit on the inputs of one request


class EmbeddingRequest(OpenAIModel):
    model: str
    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="A text, a list of texts, token ids, or a list of token-id lists (at most 2048 inputs)"
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1, description="Shorter embeddings, where the model supports them")
    user: str | None = None

    def inputs(self) -> list[EmbedInput]:
        """Every input in order: texts, or token-id tuples; a 400 naming ``input`` if there are none,
        more than MAX_INPUTS, or an empty one."""
        raw = self.input
        items: list[EmbedInput]
        if isinstance(raw, str):
            items = [raw]
        elif raw and all(isinstance(x, int) for x in raw):
            items = [tuple(x for x in raw if isinstance(x, int))]  # list[int]: one input as token ids
        else:
            items = [x if isinstance(x, str) else tuple(x) for x in raw if not isinstance(x, int)]
        if not items:
            raise InvalidRequest("input must not be empty", "give a text or a list of texts", param="input")
        if len(items) > MAX_INPUTS:
            raise InvalidRequest(
                f"input has {len(items)} items, more than the maximum of {MAX_INPUTS}",
                "split the request",
                param="input",
            )
        for index, item in enumerate(items):
            if not item:
                raise InvalidRequest(f"input[{index}] is empty", "every input needs text or tokens", param="input")
        return items

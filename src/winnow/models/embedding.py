"""Embedding models: what a provider that embeds offers, and what the generation routes say to one.

A model of ``type: embedding`` answers ``/v1/embeddings`` (and the SDG semantic filters); every
generation route refuses it with a 400, and ``/v1/embeddings`` refuses a generation model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from winnow.config import ModelConfig
from winnow.errors import InvalidRequest

# One input: a text, or token ids of the model's own tokenizer (taken as the whole sequence, special
# tokens included, as vLLM takes them).
EmbedInput = str | tuple[int, ...]
Vectors = npt.NDArray[np.float32]


@dataclass
class Embedded:
    """The embeddings of a list of inputs, in order (unit length rows), and their token counts."""

    vectors: Vectors
    tokens: list[int]


@runtime_checkable
class Embedder(Protocol):
    """A provider that embeds (local sentence-transformers models)."""

    def max_input_tokens(self) -> int: ...

    async def embed(self, inputs: Sequence[EmbedInput]) -> Embedded: ...

    def embed_blocking(self, texts: Sequence[str]) -> Vectors:
        """Embed on the calling thread (SDG filters run their chunks off the event loop's hot path)."""
        ...


def is_embedding(config: ModelConfig) -> bool:
    return config.type == "embedding"


def task_of(config: ModelConfig) -> Literal["generation", "embedding"]:
    """What /models says a model serves (Winnow's ``task`` field beside the spec's ``type``)."""
    return "embedding" if is_embedding(config) else "generation"


def refuse_generation(config: ModelConfig, param: str = "model") -> None:
    """A 400 for a generation request on an embedding model."""
    if is_embedding(config):
        raise InvalidRequest(
            f"Model {config.id!r} is an embedding model: it does not generate text",
            "use it with POST /v1/embeddings; generation needs a chat or completion model",
            param=param,
        )


def refuse_embedding(config: ModelConfig) -> None:
    """A 400 for an embeddings request on a generation model."""
    if not is_embedding(config):
        raise InvalidRequest(
            f"Model {config.id!r} is not an embedding model",
            "POST /v1/embeddings needs a model of type embedding (see GET /v1/models, task 'embedding')",
            param="model",
        )


def truncated(vectors: Vectors, dimensions: int) -> Vectors:
    """The first ``dimensions`` components of each row, renormalized to unit length (how OpenAI's
    v3 models shorten an embedding; meaningful for models trained for it, Matryoshka-style)."""
    head = vectors[:, :dimensions]
    norms = np.linalg.norm(head, axis=1, keepdims=True)
    out: Vectors = (head / np.where(norms == 0, 1, norms)).astype(np.float32)
    return out


def cosine_matrix(a: Vectors, b: Vectors) -> npt.NDArray[Any]:
    """Cosine similarity of every row of ``a`` with every row of ``b`` (rows of unit length)."""
    return a @ b.T

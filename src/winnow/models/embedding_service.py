"""Embeddings as OpenAI's ``/v1/embeddings`` answers them: local embedding models batched, upstream
ones passed through their router; each request billed once, per input token (no output tokens)."""

from __future__ import annotations

import base64
import time
from typing import Any

from winnow.errors import InvalidRequest
from winnow.ids import hex_id
from winnow.metrics import Metrics
from winnow.models.embedding import Embedded, Embedder, EmbedInput, Vectors, refuse_embedding, truncated
from winnow.models.providers.openai import OpenAIProvider
from winnow.models.registry import ModelRegistry
from winnow.schemas.openai_embeddings import EmbeddingRequest
from winnow.usage import UsageService


def _encoded(vector: Any, encoding: str) -> list[float] | str:
    """One embedding as OpenAI sends it: floats, or base64 of its little-endian float32 bytes."""
    if encoding == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode()
    floats: list[float] = vector.tolist()
    return floats


def embedding_response(model: str, vectors: Vectors, encoding: str, tokens: int) -> dict[str, Any]:
    """OpenAI's CreateEmbeddingResponse."""
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": _encoded(v, encoding)} for i, v in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def input_texts(inputs: list[EmbedInput]) -> list[str]:
    """The inputs as the budget check counts them (token ids as their numbers)."""
    return [x if isinstance(x, str) else " ".join(map(str, x)) for x in inputs]


def embedding_answer(body: EmbeddingRequest, options: dict[str, Any], embedded: Embedded) -> dict[str, Any]:
    """A local model's vectors for one request as OpenAI's answer (the route's and a batch line's);
    a 400 for ``dimensions`` the model cannot give."""
    vectors = embedded.vectors
    native = vectors.shape[1]
    if body.dimensions is not None and body.dimensions != native:
        truncate = bool(options.get("truncate_dimensions", False))
        if not truncate or body.dimensions > native:
            raise InvalidRequest(
                f"dimensions={body.dimensions} is not supported by model {body.model!r}",
                f"it gives {native}-dimensional embeddings"
                + ("; ask for fewer" if truncate else " and is not trained to be shortened"),
                param="dimensions",
            )
        vectors = truncated(vectors, body.dimensions)
    return embedding_response(body.model, vectors, body.encoding_format, sum(embedded.tokens))


def local_embedder(registry: ModelRegistry, body: EmbeddingRequest) -> tuple[Embedder, dict[str, Any]]:
    """The local provider that embeds ``body.model`` and the model's options (400s otherwise)."""
    config = registry.config(body.model)
    refuse_embedding(config)
    provider = registry.provider(body.model)
    if not isinstance(provider, Embedder):
        raise InvalidRequest(f"Model {body.model!r} cannot embed", f"provider {config.provider!r}", param="model")
    return provider, config.options


class EmbeddingService:
    """``create`` for the route, the batch runner and the SDK alike."""

    def __init__(self, registry: ModelRegistry, usage: UsageService, metrics: Metrics | None = None) -> None:
        self.registry = registry
        self.usage = usage
        self.metrics = metrics

    async def create(
        self, key_id: int | None, body: EmbeddingRequest, sent: dict[str, Any], pin: str | None = None
    ) -> dict[str, Any]:
        """The answer to one request; ``sent`` is the body as the client sent it (forwarded as-is to
        an upstream model). 400s: not an embedding model, bad input, unsupported dimensions."""
        refuse_embedding(self.registry.config(body.model))
        inputs = body.inputs()
        self.usage.check(key_id, body.model, input_texts(inputs))
        started = time.perf_counter()
        provider = self.registry.provider(body.model)
        if isinstance(provider, OpenAIProvider):
            return await self._forward(key_id, provider, sent, pin, started)
        embedder, options = local_embedder(self.registry, body)
        embedded = await embedder.embed(inputs)
        answer = embedding_answer(body, options, embedded)
        self._record(key_id, body.model, answer["usage"]["prompt_tokens"], started, f"emb-{hex_id()}")
        return answer

    async def _forward(
        self, key_id: int | None, provider: OpenAIProvider, sent: dict[str, Any], pin: str | None, started: float
    ) -> dict[str, Any]:
        routed = await provider.router.call(lambda d: d.http.forward("/embeddings", sent), pin=pin)
        response, deployment = routed.value, routed.deployment
        tokens = int((response.get("usage") or {}).get("prompt_tokens") or 0)
        self._record(key_id, deployment.model_id, tokens, started, None, deployment.id, routed.attempts)
        deployment.count_tokens(tokens)
        return response

    def _record(
        self,
        key_id: int | None,
        model: str,
        tokens: int,
        started: float,
        ident: str | None,
        deployment: str | None = None,
        attempts: int | None = None,
    ) -> None:
        if self.metrics is not None:
            self.metrics.tokens.labels(model, "input").inc(tokens)
        latency = (time.perf_counter() - started) * 1000
        self.usage.record(
            key_id, model, "v1", tokens, 0, latency, generation_id=ident, deployment=deployment, attempts=attempts
        )

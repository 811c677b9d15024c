"""``POST /v1/embeddings`` in OpenAI's shape: local embedding models (batched) and upstream ones
(passed through their router), billed per input token, under the key's generation rate limit."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from winnow.api.deps import GenerationKey, RuntimeDep
from winnow.api.routes.openai import generation_errors
from winnow.api.routing import Router
from winnow.models.embedding_service import EmbeddingService
from winnow.models.router import PIN_HEADER
from winnow.schemas.openai_embeddings import EmbeddingRequest

router = Router(
    prefix="/v1", tags=["OpenAI-compatible"], responses=generation_errors("Model not found (model_not_found)")
)


@router.post(
    "/embeddings",
    summary="Create embeddings (OpenAI format)",
    description=(
        "`input`: a text, a list of texts (at most 2048), token ids or lists of token ids; each input at most "
        "the model's context length. `encoding_format`: `float` or `base64` (little-endian float32). "
        "`dimensions`: only for models configured with `options.truncate_dimensions` (the first n components, "
        "renormalized); minilm-l6 answers a 400 for any value but its own 384."
    ),
)
async def create_embeddings(body: EmbeddingRequest, request: Request, runtime: RuntimeDep, key: GenerationKey) -> Any:
    service = EmbeddingService(runtime.models, runtime.usage, runtime.metrics)
    answer = await service.create(key.id, body, await request.json(), request.headers.get(PIN_HEADER))
    return Response(orjson.dumps(answer), media_type="application/json")

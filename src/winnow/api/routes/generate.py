"""POST /generate and /generate/batch, per the platform spec."""

from __future__ import annotations

from fastapi import Response
from pydantic import BaseModel

from winnow.api.deps import BatchKey, GenerationKey, RuntimeDep
from winnow.api.routing import Router
from winnow.prompts import use
from winnow.schemas.common import ErrorResponse
from winnow.schemas.platform import BatchGenerateRequest, BatchGenerateResponse, GenerateRequest, GenerateResponse

router = Router(
    prefix="/generate",
    tags=["Generation"],
    responses={
        402: {"model": ErrorResponse, "description": "The key's budget is spent (budget_exceeded)"},
        404: {"model": ErrorResponse, "description": "Model not found"},
        502: {"model": ErrorResponse, "description": "The upstream provider failed"},
        503: {"model": ErrorResponse, "description": "The model cannot be loaded"},
        504: {"model": ErrorResponse, "description": "The upstream provider timed out"},
    },
)


def _json(model: BaseModel) -> Response:
    """The hot path serializes once: FastAPI would validate the returned model all over again."""
    return Response(model.model_dump_json(), media_type="application/json")


@router.post("", summary="Generate text", response_model=GenerateResponse)
async def generate(body: GenerateRequest, runtime: RuntimeDep, key: GenerationKey) -> Response:
    if not isinstance(body.prompt, str):  # a registered prompt (Winnow's extension)
        request, sent, rendered = await use.for_generate(runtime.prompts, key.id, body)
        answer = await runtime.generation.generate(request, key.id, sent)
        answer.metadata["prompt"] = rendered.reference()
        return _json(answer)
    return _json(await runtime.generation.generate(body, key.id))


@router.post("/batch", summary="Batch text generation", response_model=BatchGenerateResponse)
async def generate_batch(body: BatchGenerateRequest, runtime: RuntimeDep, key: BatchKey) -> Response:
    return _json(await runtime.generation.generate_batch(body, key.id))

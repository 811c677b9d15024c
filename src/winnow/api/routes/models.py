"""GET /models and /models/{model_id}, per the platform spec; status is measured per request."""

from __future__ import annotations

from winnow.api.deps import OtherKey, RuntimeDep
from winnow.api.routing import Router
from winnow.schemas.common import ErrorResponse
from winnow.schemas.platform import ModelInfoResponse, ModelsListResponse

router = Router(prefix="/models", tags=["Models"])


@router.get("", summary="List available models", response_model=ModelsListResponse, response_model_exclude_none=True)
async def list_models(runtime: RuntimeDep, _key: OtherKey) -> ModelsListResponse:
    models = await runtime.models.describe_all()
    return ModelsListResponse(models=models, count=len(models))


@router.get(
    "/{model_id}",
    summary="Get model information",
    response_model=ModelInfoResponse,
    response_model_exclude_none=True,
    responses={404: {"model": ErrorResponse, "description": "Model not found"}},
)
async def get_model(model_id: str, runtime: RuntimeDep, _key: OtherKey) -> ModelInfoResponse:
    return ModelInfoResponse(model=await runtime.models.describe(model_id))

"""Probes: /health (liveness, no key), /ready (readiness, no key), /status (details, keyed)."""

from __future__ import annotations

from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from winnow import __version__
from winnow.api.deps import OtherKey, RuntimeDep
from winnow.api.routing import Router
from winnow.errors import SystemUnhealthy
from winnow.schemas.common import ErrorResponse
from winnow.schemas.platform import DetailedStatusResponse, HealthResponse, ReadinessResponse
from winnow.system import readiness, system_status

router = Router(tags=["Health"])
public = Router(tags=["Health"])


@public.get("/health", summary="Basic health check", response_model=HealthResponse)
async def health() -> HealthResponse:
    return HealthResponse(status="healthy", version=__version__)


@public.get(
    "/ready",
    summary="Readiness check",
    response_model=ReadinessResponse,
    responses={503: {"model": ReadinessResponse, "description": "Service not ready"}},
)
async def ready(runtime: RuntimeDep) -> JSONResponse:
    settings = runtime.settings
    models_ready = await runtime.models.any_available()
    result = await run_in_threadpool(readiness, runtime.db, settings.data_dir, settings.thresholds, models_ready)
    return JSONResponse(result.model_dump(mode="json"), status_code=200 if result.ready else 503)


@router.get(
    "/status",
    summary="Detailed system status",
    response_model=DetailedStatusResponse,
    responses={500: {"model": ErrorResponse, "description": "System unhealthy"}},
)
def status(runtime: RuntimeDep, _key: OtherKey) -> DetailedStatusResponse:
    result = system_status(runtime.settings.data_dir, runtime.settings.thresholds)
    if result.status == "unhealthy":
        raise SystemUnhealthy("System unhealthy", "; ".join(result.warnings) or "resources below floor")
    return result

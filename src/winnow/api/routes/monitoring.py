"""GET /metrics: Prometheus text format (no key, as scrapers expect; keep it off public networks)."""

from __future__ import annotations

from fastapi import Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from winnow.api.deps import RuntimeDep
from winnow.api.routing import Router

router = Router(tags=["Monitoring"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition format"}},
)
async def metrics(runtime: RuntimeDep) -> Response:
    body = await run_in_threadpool(runtime.metrics.render)  # job counts come from the database
    return Response(body, media_type=CONTENT_TYPE_LATEST)

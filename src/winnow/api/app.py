"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from winnow import __version__, telemetry
from winnow.api.errors import install_error_handlers
from winnow.api.middleware import RequestContextMiddleware
from winnow.api.openapi import API_PREFIX, install_openapi
from winnow.api.routes import (
    evals,
    feedback,
    files,
    finetune,
    generate,
    health,
    keys,
    models,
    monitoring,
    openai,
    openai_batches,
    openai_embeddings,
    openai_files,
    openai_fine_tuning,
    prompts,
    requests,
    responses,
    sdg,
    usage,
)
from winnow.config import Settings, get_settings
from winnow.jobs.processes import WorkerProcesses
from winnow.logs import configure_logging
from winnow.metrics import Metrics
from winnow.runtime import Runtime
from winnow.system import prime_cpu_counter
from winnow.web import install_console

log = logging.getLogger("winnow")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the database is opened and migrated when the app starts."""
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_json)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime.open(settings, metrics=metrics)
        app.state.runtime = runtime
        sys.setswitchinterval(settings.switch_interval_ms / 1000)
        runtime.usage.start()
        runtime.requests.start()
        telemetry.configure()  # traces, where an OTLP endpoint is configured
        prime_cpu_counter()
        workers = WorkerProcesses(settings)
        workers.start()
        supervisor = asyncio.create_task(workers.supervise_forever()) if settings.workers else None
        log.info(
            "winnow %s ready", __version__, extra={"data_dir": str(settings.data_dir), "workers": settings.workers}
        )
        try:
            yield
        finally:
            if supervisor is not None:
                supervisor.cancel()
            workers.stop()
            await runtime.aclose()
            telemetry.shutdown()

    app = FastAPI(
        title="Winnow",
        version=__version__,
        lifespan=lifespan,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,  # served by the console with local Swagger UI assets (works offline)
        redoc_url=None,  # ReDoc loads its script from a CDN; /api/v1/docs serves vendored Swagger UI
    )
    install_error_handlers(app)
    install_openapi(app)
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.max_body_bytes,
        max_upload_bytes=settings.max_upload_bytes,
        upload_prefix=(f"{API_PREFIX}/files", "/v1/files"),
        metrics=metrics,
    )
    app.include_router(health.public, prefix=API_PREFIX)
    app.include_router(health.router, prefix=API_PREFIX)
    app.include_router(keys.router, prefix=API_PREFIX)
    app.include_router(models.router, prefix=API_PREFIX)
    app.include_router(generate.router, prefix=API_PREFIX)
    app.include_router(sdg.router, prefix=API_PREFIX)
    app.include_router(files.router, prefix=API_PREFIX)
    app.include_router(prompts.router, prefix=API_PREFIX)
    app.include_router(usage.router, prefix=API_PREFIX)
    app.include_router(requests.router, prefix=API_PREFIX)
    app.include_router(feedback.router, prefix=API_PREFIX)
    app.include_router(evals.router, prefix=API_PREFIX)
    app.include_router(finetune.router, prefix=API_PREFIX)
    app.include_router(finetune.models_router, prefix=API_PREFIX)
    app.include_router(openai.router)
    app.include_router(openai_files.router)
    app.include_router(openai_embeddings.router)
    app.include_router(openai_batches.router)
    app.include_router(openai_fine_tuning.router)
    app.include_router(responses.router)
    app.include_router(monitoring.router)
    install_console(app, docs_path=f"{API_PREFIX}/docs", openapi_url=f"{API_PREFIX}/openapi.json")
    return app

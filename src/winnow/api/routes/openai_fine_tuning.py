"""``/v1/fine_tuning/jobs`` in OpenAI's shapes: create (file ids of the key's uploads), list, get,
cancel, events and checkpoints, over the one fine-tuning service (``/api/v1/fine_tuning`` keeps its
richer fields; a job made on either API is seen on both)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query
from starlette.concurrency import run_in_threadpool

from winnow.api.deps import BatchKey, OtherKey, RuntimeDep
from winnow.api.routes.finetune import FtIdPath, _feedback_rows
from winnow.api.routing import Router
from winnow.finetune.openai import OpenAIFineTuning
from winnow.finetune.service import MAX_EVENTS
from winnow.runtime import Runtime
from winnow.schemas.common import OpenAIErrorResponse
from winnow.schemas.openai_fine_tuning import (
    CreateFineTuningJob,
    OpenAICheckpointList,
    OpenAIFineTuningEventList,
    OpenAIFineTuningJob,
    OpenAIFineTuningJobList,
)

router = Router(
    prefix="/v1/fine_tuning/jobs",
    tags=["OpenAI-compatible"],
    responses={
        400: {"model": OpenAIErrorResponse, "description": "Invalid request"},
        404: {"model": OpenAIErrorResponse, "description": "No fine-tuning job of this key has this id"},
    },
)

After = Annotated[str | None, Query(max_length=128, description="The last id of the previous page")]


def _jobs(runtime: Runtime) -> OpenAIFineTuning:
    return OpenAIFineTuning(runtime.fine_tuning, runtime.files)


@router.post(
    "",
    summary="Fine-tune a local model on an uploaded file (OpenAI's fine_tuning.jobs.create)",
    description=(
        "`training_file`/`validation_file`: ids of this key's `fine-tune` files; `method.type` supervised (SFT) "
        "or dpo; `auto` hyperparameters take Winnow's defaults (3 epochs, batch 16, learning rate 1e-3, beta 0.1). "
        "Queued for the job workers; the new model (`fine_tuned_model`) is served at once on every endpoint."
    ),
    response_model=OpenAIFineTuningJob,
)
async def create_job(body: CreateFineTuningJob, runtime: RuntimeDep, key: BatchKey) -> OpenAIFineTuningJob:
    return await run_in_threadpool(_jobs(runtime).create, body, key, _feedback_rows(runtime))


@router.get("", summary="The key's fine-tuning jobs, newest first", response_model=OpenAIFineTuningJobList)
async def list_jobs(
    runtime: RuntimeDep, key: OtherKey, after: After = None, limit: Annotated[int, Query(ge=1, le=1000)] = 20
) -> OpenAIFineTuningJobList:
    found, more = await run_in_threadpool(_jobs(runtime).jobs, key, limit, after)
    return OpenAIFineTuningJobList(data=found, has_more=more)


@router.get("/{job_id}", summary="A fine-tuning job", response_model=OpenAIFineTuningJob)
async def get_job(job_id: FtIdPath, runtime: RuntimeDep, key: OtherKey) -> OpenAIFineTuningJob:
    return await run_in_threadpool(_jobs(runtime).get, job_id, key)


@router.post(
    "/{job_id}/cancel",
    summary="Cancel a queued or running job (a running one stops at its next step)",
    response_model=OpenAIFineTuningJob,
    responses={409: {"model": OpenAIErrorResponse, "description": "The job has already ended"}},
)
async def cancel_job(job_id: FtIdPath, runtime: RuntimeDep, key: OtherKey) -> OpenAIFineTuningJob:
    return await run_in_threadpool(_jobs(runtime).cancel, job_id, key)


@router.get(
    "/{job_id}/events",
    summary="The job's events, newest first (lifecycle messages and training metrics)",
    response_model=OpenAIFineTuningEventList,
)
async def job_events(
    job_id: FtIdPath,
    runtime: RuntimeDep,
    key: OtherKey,
    after: After = None,
    limit: Annotated[int, Query(ge=1, le=MAX_EVENTS)] = 20,
) -> OpenAIFineTuningEventList:
    found, more = await run_in_threadpool(_jobs(runtime).events, job_id, key, after, limit)
    return OpenAIFineTuningEventList(data=found, has_more=more)


@router.get(
    "/{job_id}/checkpoints",
    summary="The checkpoints the job saved, newest first (resume points: not served as models)",
    response_model=OpenAICheckpointList,
)
async def job_checkpoints(
    job_id: FtIdPath,
    runtime: RuntimeDep,
    key: OtherKey,
    after: After = None,
    limit: Annotated[int, Query(ge=1, le=MAX_EVENTS)] = 10,
) -> OpenAICheckpointList:
    found, more = await run_in_threadpool(_jobs(runtime).checkpoints, job_id, key, after, limit)
    return OpenAICheckpointList(
        data=found,
        first_id=found[0].id if found else None,
        last_id=found[-1].id if found else None,
        has_more=more,
    )

"""Fine-tuning jobs (shaped after OpenAI's fine-tuning API): submit, list, get, cancel, events, the
loss curve; and deleting a fine-tuned model."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Query
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from winnow.api.deps import BatchKey, JobFilterDep, OtherKey, PageDep, RuntimeDep
from winnow.api.routing import Router
from winnow.auth import Principal
from winnow.errors import InvalidRequest
from winnow.finetune.service import MAX_EVENTS
from winnow.jobs.kinds import id_pattern
from winnow.runtime import Runtime
from winnow.schemas.common import ErrorResponse
from winnow.schemas.finetune import (
    DeletedModel,
    FineTuningEventList,
    FineTuningJob,
    FineTuningJobList,
    FineTuningJobRequest,
)

FtIdPath = Annotated[str, Path(pattern=id_pattern("ftjob"), description="ftjob- followed by 24 hex digits")]

router = Router(
    prefix="/fine_tuning/jobs",
    tags=["Fine-tuning"],
    responses={404: {"model": ErrorResponse, "description": "Fine-tuning job not found"}},
)
models_router = Router(prefix="/models", tags=["Models"])


def _feedback_rows(runtime: Runtime) -> Any:
    def rows(owner: Principal, fmt: str) -> list[dict[str, Any]]:
        found, why = runtime.feedback.export(owner, "preference" if fmt == "preference" else "sft")
        if not found:
            raise InvalidRequest("The feedback export has no training rows", why)
        return list(found)

    return rows


@router.post(
    "",
    summary="Fine-tune a local model on an SDG job's rows, your feedback, or a JSONL file",
    description=(
        "Checks the base model and that the training data exists and is yours, queues the job and answers "
        "at once; the worker that takes it checks every row (stage `preparing`; bad lines fail the job, "
        "named in its `error`) and writes the normalized training set beside the job. The job trains with "
        "TRL (SFT or DPO) and a PEFT LoRA adapter (or every weight), checkpoints as it goes (a killed worker's "
        "successor resumes from the last checkpoint), and on success registers the new model "
        "`<base>:ft-<suffix>-<job>`, which every endpoint serves at once."
    ),
    response_model=FineTuningJob,
    status_code=202,
    responses={400: {"model": ErrorResponse, "description": "Invalid fine-tuning job"}},
)
async def create_job(body: FineTuningJobRequest, runtime: RuntimeDep, key: BatchKey) -> FineTuningJob:
    return await run_in_threadpool(runtime.fine_tuning.submit, body, key, _feedback_rows(runtime))


@router.get("", summary="List my fine-tuning jobs, newest first", response_model=FineTuningJobList)
async def list_jobs(runtime: RuntimeDep, key: OtherKey, cursor: PageDep, where: JobFilterDep) -> FineTuningJobList:
    page = await run_in_threadpool(runtime.fine_tuning.list_jobs, key, cursor, where)
    return FineTuningJobList(data=page.rows, **page.cursor())


@router.get("/{job_id}", summary="A fine-tuning job: status, progress, final metrics", response_model=FineTuningJob)
async def get_job(job_id: FtIdPath, runtime: RuntimeDep, key: OtherKey) -> FineTuningJob:
    return await run_in_threadpool(runtime.fine_tuning.get, job_id, key)


@router.post(
    "/{job_id}/cancel",
    summary="Cancel a queued or running fine-tuning job (a running one stops at its next step)",
    response_model=FineTuningJob,
    responses={409: {"model": ErrorResponse, "description": "The job has already ended"}},
)
async def cancel_job(job_id: FtIdPath, runtime: RuntimeDep, key: OtherKey) -> FineTuningJob:
    return await run_in_threadpool(runtime.fine_tuning.cancel, job_id, key)


@router.get(
    "/{job_id}/events",
    summary="The job's events, oldest first: lifecycle messages and metrics (step, loss, learning rate)",
    response_model=FineTuningEventList,
)
async def job_events(
    job_id: FtIdPath,
    runtime: RuntimeDep,
    key: OtherKey,
    after: int = Query(0, ge=0, description="Skip this many events (page on with the count you have)"),
    limit: int = Query(100, ge=1, le=MAX_EVENTS),
) -> FineTuningEventList:
    events, more = await run_in_threadpool(runtime.fine_tuning.events, job_id, key, after, limit)
    return FineTuningEventList(data=events, has_more=more)


@router.get(
    "/{job_id}/loss_curve",
    summary="The loss curve (PNG) of a completed job",
    response_class=FileResponse,
    responses={
        200: {"content": {"image/png": {}}},
        409: {"model": ErrorResponse, "description": "Not completed yet"},
    },
)
async def job_loss_curve(job_id: FtIdPath, runtime: RuntimeDep, key: OtherKey) -> FileResponse:
    path = await run_in_threadpool(runtime.fine_tuning.loss_curve, job_id, key)
    return FileResponse(path, media_type="image/png", filename=f"{job_id}-loss.png")


@models_router.delete(
    "/{model_id}",
    summary="Delete a fine-tuned model: every process stops serving it and its files go",
    response_model=DeletedModel,
    responses={
        400: {"model": ErrorResponse, "description": "A configured model (only fine-tuned ones can be deleted)"},
        404: {"model": ErrorResponse, "description": "No fine-tuned model of yours has this id"},
    },
)
async def delete_model(model_id: str, runtime: RuntimeDep, key: OtherKey) -> DeletedModel:
    await run_in_threadpool(runtime.fine_tuning.delete_model, model_id, key)
    return DeletedModel(id=model_id)

"""The seed's SDG routes (submit_job, job_status) and what Batch-API users expect beside them:
list, cancel, download the output, its summary and histogram."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import Path, Query
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from winnow.api.deps import BatchKey, JobFilterDep, OtherKey, PageDep, RuntimeDep
from winnow.api.routing import Router
from winnow.auth import Principal
from winnow.auth.paths import authorize_client_path
from winnow.errors import NotFound
from winnow.runtime import Runtime
from winnow.schemas.common import ErrorResponse
from winnow.schemas.sdg import JobDetails, JobList, JobRows, SdgFunctions, SubmitJobRequest
from winnow.sdg.filters import filter_factories
from winnow.sdg.outputs import preference_path, sft_path
from winnow.sdg.pages import read_page, references
from winnow.sdg.report import histogram_path, summary_path
from winnow.sdg.runner import errors_path
from winnow.sdg.scoring import scoring_functions
from winnow.sdg.service import JOB_ID, check_spec, details, estimate

JobIdPath = Annotated[str, Path(pattern=JOB_ID.pattern, description="job- followed by 24 hex digits")]

router = Router(
    prefix="/synthetic_data_generation",
    tags=["Synthetic data generation"],
    responses={404: {"model": ErrorResponse, "description": "Job not found"}},
)


@router.post(
    "/submit_job",
    summary="Submit a job for synthetic data generation.",
    description="Batch Inference > Reward Scoring > Filtering > Response. Answers at once with the queued job.",
    response_model=JobDetails,
    response_model_exclude_none=True,
)
async def submit_job(body: SubmitJobRequest, runtime: RuntimeDep, key: BatchKey) -> JobDetails:
    await run_in_threadpool(
        authorize_client_path, body.prompts_path, runtime.settings, key, runtime.jobs.owner_of, "prompts_path"
    )
    prompts = await run_in_threadpool(check_spec, body, runtime.settings, runtime.models, runtime.rewards)
    if body.dry_run:
        return await run_in_threadpool(estimate, body, prompts, runtime.usage, key.id)
    return details(await run_in_threadpool(runtime.jobs.create, body, prompts, key))


@router.get(
    "/job_status",
    summary="Get the status of a submitted job",
    response_model=JobDetails,
    response_model_exclude_none=True,
    responses={400: {"model": ErrorResponse, "description": "Invalid job ID provided"}},
)
async def job_status(
    runtime: RuntimeDep,
    key: OtherKey,
    job_id: str = Query(..., description="Unique identifier for the job", pattern=JOB_ID.pattern),
) -> JobDetails:
    job = await run_in_threadpool(runtime.jobs.get, job_id, key, "sdg", details)
    job.cost_usd = await run_in_threadpool(runtime.usage.job_cost, job_id)
    return job


@router.get(
    "/functions",
    summary="What a job may name: configured reward models, scoring functions and filters (plugins included)",
    response_model=SdgFunctions,
)
async def list_functions(runtime: RuntimeDep, _key: OtherKey) -> SdgFunctions:
    return SdgFunctions(
        reward_models=runtime.rewards.ids(),
        scoring_functions=sorted(scoring_functions()),
        filters=sorted(filter_factories()),
    )


@router.get("/jobs", summary="List my jobs, newest first", response_model=JobList, response_model_exclude_none=True)
async def list_jobs(runtime: RuntimeDep, key: OtherKey, cursor: PageDep, where: JobFilterDep) -> JobList:
    page = await run_in_threadpool(runtime.jobs.list, key, cursor, where, "sdg", details)
    return JobList(jobs=page.rows, count=len(page.rows), **page.cursor())


@router.post(
    "/jobs/{job_id}/cancel",
    summary="Cancel a queued or running job",
    response_model=JobDetails,
    response_model_exclude_none=True,
    responses={409: {"model": ErrorResponse, "description": "The job has already ended"}},
)
async def cancel_job(job_id: JobIdPath, runtime: RuntimeDep, key: OtherKey) -> JobDetails:
    return await run_in_threadpool(runtime.jobs.cancel, job_id, key, "sdg", details)


def _output_path(output: FilePath) -> FilePath:
    return output


_FILES: dict[str, tuple[Callable[[FilePath], FilePath], str, tuple[str, ...]]] = {
    "output": (_output_path, "application/jsonl", ("completed",)),
    "summary": (summary_path, "application/json", ("completed",)),
    "histogram": (histogram_path, "image/png", ("completed",)),
    "errors": (errors_path, "application/jsonl", ("completed", "failed")),
    "preference": (preference_path, "application/jsonl", ("completed",)),
    "sft": (sft_path, "application/jsonl", ("completed",)),
}


async def _artifact(runtime: Runtime, job_id: str, key: Principal, artifact: str) -> FileResponse:
    locate, media_type, ended = _FILES[artifact]
    output = await run_in_threadpool(runtime.jobs.output, job_id, key, "sdg", ended)
    path = locate(output)
    if not path.exists():
        raise NotFound(f"The job has no {artifact}", job_id)
    return FileResponse(path, media_type=media_type, filename=f"{job_id}-{path.name}")


_NOT_DONE: dict[int | str, dict[str, Any]] = {409: {"model": ErrorResponse, "description": "The job has not completed"}}


@router.get(
    "/jobs/{job_id}/output",
    summary="Download a completed job's PromptResponseScore JSONL",
    response_class=FileResponse,
    responses={200: {"content": {"application/jsonl": {}}}, **_NOT_DONE},
)
async def job_output(job_id: JobIdPath, runtime: RuntimeDep, key: OtherKey) -> FileResponse:
    return await _artifact(runtime, job_id, key, "output")


@router.get(
    "/jobs/{job_id}/preference",
    summary="A completed job's preference pairs (TRL prompt/chosen/rejected JSONL), when it asked for them",
    response_class=FileResponse,
    responses={200: {"content": {"application/jsonl": {}}}, **_NOT_DONE},
)
async def job_preference(job_id: JobIdPath, runtime: RuntimeDep, key: OtherKey) -> FileResponse:
    return await _artifact(runtime, job_id, key, "preference")


@router.get(
    "/jobs/{job_id}/sft",
    summary="A completed job's kept rows as SFT messages (JSONL), when it asked for them",
    response_class=FileResponse,
    responses={200: {"content": {"application/jsonl": {}}}, **_NOT_DONE},
)
async def job_sft(job_id: JobIdPath, runtime: RuntimeDep, key: OtherKey) -> FileResponse:
    return await _artifact(runtime, job_id, key, "sft")


@router.get(
    "/jobs/{job_id}/errors",
    summary="The prompts of a finished job that got no response: one JSON line each (id, index, line, error)",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/jsonl": {}}},
        409: {"model": ErrorResponse, "description": "The job has not ended"},
    },
)
async def job_errors(job_id: JobIdPath, runtime: RuntimeDep, key: OtherKey) -> FileResponse:
    return await _artifact(runtime, job_id, key, "errors")


@router.get(
    "/jobs/{job_id}/summary",
    summary="A completed job's summary: counts, kept ratio, score statistics, durations, tokens",
    response_class=FileResponse,
    responses={200: {"content": {"application/json": {}}}, **_NOT_DONE},
)
async def job_summary(job_id: JobIdPath, runtime: RuntimeDep, key: OtherKey) -> FileResponse:
    return await _artifact(runtime, job_id, key, "summary")


@router.get(
    "/jobs/{job_id}/histogram",
    summary="A completed job's score histogram (PNG): raw reward of all responses vs score of kept rows",
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {}}}, **_NOT_DONE},
)
async def job_histogram(job_id: JobIdPath, runtime: RuntimeDep, key: OtherKey) -> FileResponse:
    return await _artifact(runtime, job_id, key, "histogram")


@router.get(
    "/jobs/{job_id}/rows",
    summary="A page of a completed job's output rows, read from byte offset (in the order written, unsorted)",
    description=(
        "Reads only the page's own bytes, so paging a 100k-row output costs the same as a small one. "
        "Start at offset 0 and pass each answer's next_offset to get the next page (null at the end). "
        "Rows are in the order the job wrote them; sorting the whole output by score would read all of it, "
        "so it is not offered: sort a page, or download the output."
    ),
    response_model=JobRows,
    responses=_NOT_DONE,
)
async def job_rows(
    job_id: JobIdPath,
    runtime: RuntimeDep,
    key: OtherKey,
    offset: int = Query(0, ge=0, description="0, or a next_offset from a previous page"),
    limit: int = Query(50, ge=1, le=500, description="Rows per page"),
) -> JobRows:
    output = await run_in_threadpool(runtime.jobs.output, job_id, key, "sdg", ("completed",))
    if not output.exists():
        raise NotFound("The job has no output", job_id)
    page = await run_in_threadpool(read_page, output, offset, limit)
    prompts = await run_in_threadpool(lambda: FilePath(runtime.jobs.row(job_id).prompts_path))
    found = await run_in_threadpool(references, prompts, {str(row.get("id")) for row in page.rows})
    return JobRows.model_validate(
        {
            "rows": page.rows,
            "offset": page.offset,
            "next_offset": page.next_offset,
            "size_bytes": page.size_bytes,
            "references": found,
        }
    )

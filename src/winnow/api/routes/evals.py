"""Prompt evaluations: submit (queued for the job workers), status with the comparison table,
list, cancel, and the per-row results."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from winnow.api.deps import BatchKey, JobFilterDep, OtherKey, PageDep, RuntimeDep
from winnow.api.routing import Router
from winnow.auth.paths import authorize_client_path
from winnow.evals.plan import check_eval
from winnow.evals.service import eval_details
from winnow.jobs.kinds import id_pattern
from winnow.schemas.common import ErrorResponse
from winnow.schemas.evals import EvaluationDetails, EvaluationList, EvaluationRequest

EvalIdPath = Annotated[str, Path(pattern=id_pattern("eval"), description="eval- followed by 24 hex digits")]

router = Router(
    prefix="/evaluations",
    tags=["Evaluations"],
    responses={404: {"model": ErrorResponse, "description": "Evaluation not found"}},
)


@router.post(
    "",
    summary="Evaluate prompt templates x models over a dataset",
    description=(
        "Queues the evaluation for the job workers and answers at once. Every template is rendered "
        "for every dataset row and sent to every model; each response is scored by the scoring "
        "function (and reward model, if named). GET the evaluation for progress and, when it has "
        "completed, the comparison table."
    ),
    response_model=EvaluationDetails,
    status_code=202,
    responses={400: {"model": ErrorResponse, "description": "Invalid evaluation"}},
)
async def create_evaluation(body: EvaluationRequest, runtime: RuntimeDep, key: BatchKey) -> EvaluationDetails:
    await run_in_threadpool(
        authorize_client_path, body.dataset_path, runtime.settings, key, runtime.jobs.owner_of, "dataset_path"
    )
    prompts = await run_in_threadpool(check_eval, body, runtime.settings, runtime.models, runtime.rewards)
    job = await run_in_threadpool(runtime.jobs.create, body, prompts, key, "eval")
    return eval_details(job)


@router.get("", summary="List my evaluations, newest first", response_model=EvaluationList)
async def list_evaluations(runtime: RuntimeDep, key: OtherKey, cursor: PageDep, where: JobFilterDep) -> EvaluationList:
    page = await run_in_threadpool(runtime.jobs.list, key, cursor, where, "eval", eval_details)
    return EvaluationList(evaluations=page.rows, count=len(page.rows), **page.cursor())


@router.get(
    "/{evaluation_id}",
    summary="An evaluation's progress and, once completed, its comparison table",
    response_model=EvaluationDetails,
)
async def get_evaluation(evaluation_id: EvalIdPath, runtime: RuntimeDep, key: OtherKey) -> EvaluationDetails:
    return await run_in_threadpool(runtime.jobs.get, evaluation_id, key, "eval", eval_details)


@router.post(
    "/{evaluation_id}/cancel",
    summary="Cancel a queued or running evaluation",
    response_model=EvaluationDetails,
    responses={409: {"model": ErrorResponse, "description": "The evaluation has already ended"}},
)
async def cancel_evaluation(evaluation_id: EvalIdPath, runtime: RuntimeDep, key: OtherKey) -> EvaluationDetails:
    return await run_in_threadpool(runtime.jobs.cancel, evaluation_id, key, "eval", eval_details)


_NOT_DONE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/jsonl": {}}},
    409: {"model": ErrorResponse, "description": "The evaluation has not completed"},
}


@router.get(
    "/{evaluation_id}/results",
    summary="Per-row results (JSONL): prompt, response, score, latency, tokens and cost per template and model",
    response_class=FileResponse,
    responses=_NOT_DONE,
)
async def evaluation_results(evaluation_id: EvalIdPath, runtime: RuntimeDep, key: OtherKey) -> FileResponse:
    path = await run_in_threadpool(runtime.jobs.output, evaluation_id, key, "eval")
    return FileResponse(path, media_type="application/jsonl", filename=f"{evaluation_id}-results.jsonl")

"""``/v1/batches`` in OpenAI's shapes: create (from a key's ``batch`` file, every line checked before
anything queues), list, get and cancel a key's batches; the job workers answer them."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query
from starlette.concurrency import run_in_threadpool

from winnow.api.deps import BatchKey, OtherKey, RuntimeDep
from winnow.api.routing import Router
from winnow.batches.service import BatchService
from winnow.runtime import Runtime
from winnow.schemas.common import OpenAIErrorResponse
from winnow.schemas.openai_batches import Batch, BatchCreate, BatchList

router = Router(
    prefix="/v1/batches",
    tags=["OpenAI-compatible"],
    responses={
        400: {"model": OpenAIErrorResponse, "description": "Invalid request"},
        404: {"model": OpenAIErrorResponse, "description": "No batch of this key has this id"},
    },
)


def _batches(runtime: Runtime) -> BatchService:
    return BatchService(runtime.jobs, runtime.files, runtime.settings)


@router.post(
    "",
    summary="Answer a file of requests (OpenAI's batches.create)",
    description=(
        "`input_file_id`: one of this key's `batch` files; every line must call `endpoint` "
        "(/v1/chat/completions or /v1/completions) with a valid body, or nothing queues (400 naming the lines). "
        "The job workers answer it; `output_file_id` and `error_file_id` are `batch_output` files."
    ),
    response_model=Batch,
)
async def create_batch(body: BatchCreate, runtime: RuntimeDep, key: BatchKey) -> Batch:
    return await run_in_threadpool(_batches(runtime).create, key, body)


@router.get("", summary="The key's batches, newest first (OpenAI's batches.list)", response_model=BatchList)
def list_batches(
    runtime: RuntimeDep,
    key: OtherKey,
    after: Annotated[str | None, Query(max_length=64, description="The last id of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> BatchList:
    page = _batches(runtime).list(key, after, limit)
    return BatchList(data=page.rows, **page.cursor())


@router.get("/{batch_id}", summary="One of the key's batches (OpenAI's batches.retrieve)", response_model=Batch)
def get_batch(batch_id: str, runtime: RuntimeDep, key: OtherKey) -> Batch:
    return _batches(runtime).get(key, batch_id)


@router.post("/{batch_id}/cancel", summary="Cancel one of the key's batches", response_model=Batch)
def cancel_batch(batch_id: str, runtime: RuntimeDep, key: OtherKey) -> Batch:
    return _batches(runtime).cancel(key, batch_id)

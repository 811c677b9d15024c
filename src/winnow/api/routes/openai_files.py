"""``/v1/files`` in OpenAI's shapes: upload (streamed, under the key's quota), list, get, delete and
read back a key's files. One store with ``/api/v1/files``: a file has one id whichever API made it."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Query, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from winnow.api.deps import OtherKey, RuntimeDep
from winnow.api.routing import Router
from winnow.errors import InvalidRequest
from winnow.files import stage_upload
from winnow.files.service import OPENAI_PURPOSES
from winnow.files.upload import upload_form
from winnow.schemas.common import OpenAIErrorResponse
from winnow.schemas.openai_files import OpenAIFile, OpenAIFileDeleted, OpenAIFileList

router = Router(
    prefix="/v1/files",
    tags=["OpenAI-compatible"],
    responses={
        400: {"model": OpenAIErrorResponse, "description": "Invalid request"},
        404: {"model": OpenAIErrorResponse, "description": "No file of this key has this id"},
    },
)

_UPLOAD_BODY = upload_form({"type": "string", "enum": list(OPENAI_PURPOSES)}, required=("file", "purpose"))


@router.post(
    "",
    summary="Upload a file (OpenAI's files.create)",
    description=(
        "`purpose=fine-tune`: a training file in TRL's formats, every line checked; `batch`: JSONL of "
        "`{custom_id, method, url, body}` requests, every line checked; `user_data` and `batch_output`: kept "
        "as they are. Counts against the key's storage quota until deleted."
    ),
    response_model=OpenAIFile,
    responses={413: {"model": OpenAIErrorResponse, "description": "Past the key's storage quota"}},
    openapi_extra=_UPLOAD_BODY,
)
async def create_file(request: Request, runtime: RuntimeDep, key: OtherKey) -> OpenAIFile:
    staged = await stage_upload(request, runtime.files, key.id)
    purpose = staged.received.fields.get("purpose")
    if purpose is None:
        staged.part.unlink(missing_ok=True)
        raise InvalidRequest("Missing required parameter: 'purpose'", param="purpose")
    filename = staged.received.filename or f"{staged.file_id}.jsonl"
    add = runtime.files.add
    info = await run_in_threadpool(add, key.id, staged.file_id, staged.part, filename, purpose, OPENAI_PURPOSES)
    return OpenAIFile.of(info)


@router.get("", summary="The key's files (OpenAI's files.list)", response_model=OpenAIFileList)
def list_files(
    runtime: RuntimeDep,
    key: OtherKey,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    after: Annotated[str | None, Query(max_length=64, description="The last id of the previous page")] = None,
    order: Annotated[Literal["asc", "desc"], Query(description="By created_at")] = "desc",
    purpose: Annotated[str | None, Query(max_length=32, description="Only files of this purpose")] = None,
) -> OpenAIFileList:
    found = runtime.files.list(key.id, limit=limit, after=after, purpose=purpose, ascending=order == "asc")
    return OpenAIFileList(
        data=[OpenAIFile.of(info) for info in found.data],
        first_id=found.first_id,
        last_id=found.last_id,
        has_more=found.has_more,
    )


@router.get("/{file_id}", summary="One of the key's files (OpenAI's files.retrieve)", response_model=OpenAIFile)
def get_file(file_id: str, runtime: RuntimeDep, key: OtherKey) -> OpenAIFile:
    return OpenAIFile.of(runtime.files.get(key.id, file_id))


@router.delete("/{file_id}", summary="Delete one of the key's files (from disk too)", response_model=OpenAIFileDeleted)
def delete_file(file_id: str, runtime: RuntimeDep, key: OtherKey) -> OpenAIFileDeleted:
    return OpenAIFileDeleted(id=runtime.files.delete(key.id, file_id).id)


@router.get(
    "/{file_id}/content",
    summary="A file's bytes, as uploaded (OpenAI's files.content)",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def file_content(file_id: str, runtime: RuntimeDep, key: OtherKey) -> FileResponse:
    info = runtime.files.get(key.id, file_id)
    return FileResponse(info.path, media_type="application/octet-stream", filename=info.filename)

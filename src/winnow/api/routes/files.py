"""``/files``: upload a prompts file or a fine-tuning training file into the data dir (a remote
client cannot write server paths), list, read and delete the key's own files."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, Request
from starlette.concurrency import run_in_threadpool

from winnow.api.deps import OtherKey, RuntimeDep
from winnow.api.routing import Router
from winnow.files import stage_upload
from winnow.files.upload import upload_form
from winnow.schemas.common import ErrorResponse
from winnow.schemas.files import FileDeleted, FileInfo, FileList

router = Router(prefix="/files", tags=["Files"])

_UPLOAD_BODY = upload_form(
    {"type": "string", "enum": ["prompts", "fine-tune"], "default": "prompts", "description": "What the file is for"}
)
_NO_FILE: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No file of this key has this id"}
}


@router.post(
    "",
    summary="Upload a JSONL prompts file (validated); use the returned path as prompts_path",
    description=(
        "With `purpose=fine-tune`, a training file in TRL's formats instead (messages, prompt+completion, "
        "text, or prompt+chosen+rejected; each line checked): use its path as a fine-tuning job's training_file. "
        "Files count against the key's storage quota until deleted."
    ),
    response_model=FileInfo,
    status_code=201,
    responses={
        400: {"model": ErrorResponse, "description": "Not a valid prompts file"},
        413: {"model": ErrorResponse, "description": "Past the key's storage quota or the upload size cap"},
    },
    openapi_extra=_UPLOAD_BODY,
)
async def upload_file(request: Request, runtime: RuntimeDep, key: OtherKey) -> FileInfo:
    staged = await stage_upload(request, runtime.files, key.id)
    purpose = staged.received.fields.get("purpose", "prompts")
    filename = staged.received.filename or f"{staged.file_id}.jsonl"
    return await run_in_threadpool(runtime.files.add, key.id, staged.file_id, staged.part, filename, purpose)


@router.get("", summary="The key's files, newest first, a page at a time", response_model=FileList)
def list_files(
    runtime: RuntimeDep,
    key: OtherKey,
    limit: Annotated[int, Query(ge=1, le=1000, description="Files a page")] = 100,
    after: Annotated[str | None, Query(max_length=64, description="The last id of the previous page")] = None,
) -> FileList:
    return runtime.files.list(key.id, limit=limit, after=after)


@router.get("/{file_id}", summary="One of the key's files", response_model=FileInfo, responses=_NO_FILE)
def get_file(file_id: str, runtime: RuntimeDep, key: OtherKey) -> FileInfo:
    return runtime.files.get(key.id, file_id)


@router.delete(
    "/{file_id}",
    summary="Delete one of the key's files (from disk too); a job that has yet to read it fails",
    response_model=FileDeleted,
    responses=_NO_FILE,
)
def delete_file(file_id: str, runtime: RuntimeDep, key: OtherKey) -> FileDeleted:
    return runtime.files.delete(key.id, file_id)

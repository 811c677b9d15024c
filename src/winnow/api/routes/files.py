"""POST /files: upload a prompts file, or a fine-tuning training file, into the data dir (a remote
client cannot write server paths)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Form, UploadFile
from starlette.concurrency import run_in_threadpool

from winnow.api.deps import OtherKey, RuntimeDep
from winnow.api.routing import Router
from winnow.finetune.data import check_training_file
from winnow.schemas.common import ErrorResponse, now_utc
from winnow.schemas.files import FileInfo
from winnow.sdg.inputs import validate_file

router = Router(prefix="/files", tags=["Files"])


def _store(upload: UploadFile, target: Path, purpose: str, max_line_bytes: int) -> tuple[int, int]:
    """Stream the upload to disk, validate it (a prompts file, or training rows for ``fine-tune``),
    then give it its final name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    size = 0
    with tmp.open("wb") as out:
        while block := upload.file.read(1 << 20):
            out.write(block)
            size += len(block)
        out.flush()
        os.fsync(out.fileno())
    try:
        rows = check_training_file(tmp, max_line_bytes) if purpose == "fine-tune" else validate_file(tmp).rows
    except Exception:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(target)
    return size, rows


@router.post(
    "",
    summary="Upload a JSONL prompts file (validated); use the returned path as prompts_path",
    description=(
        "With `purpose=fine-tune`, a training file in TRL's formats instead (messages, prompt+completion, "
        "text, or prompt+chosen+rejected; each line checked): use its path as a fine-tuning job's training_file."
    ),
    response_model=FileInfo,
    status_code=201,
    responses={400: {"model": ErrorResponse, "description": "Not a valid prompts file"}},
)
async def upload_file(
    file: UploadFile,
    runtime: RuntimeDep,
    key: OtherKey,
    purpose: Annotated[Literal["prompts", "fine-tune"], Form(description="What the file is for")] = "prompts",
) -> FileInfo:
    file_id = f"file-{uuid.uuid4().hex[:24]}"
    target = runtime.settings.data_dir / "files" / str(key.id) / f"{file_id}.jsonl"
    limit = runtime.settings.fine_tuning_max_line_bytes
    size, rows = await run_in_threadpool(_store, file, target, purpose, limit)
    return FileInfo(
        id=file_id,
        filename=file.filename or f"{file_id}.jsonl",
        bytes=size,
        rows=rows,
        path=str(target),
        created_at=now_utc(),
    )

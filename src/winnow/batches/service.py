"""Batches: create one from a key's ``batch`` file (checked line by line before anything queues),
show, list and cancel them in OpenAI's shapes. Stored as jobs of kind ``batch`` (``winnow.jobs``);
the workers answer them (``winnow.batches.runner``)."""

from __future__ import annotations

import hashlib
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from winnow.auth import Principal
from winnow.config import Settings
from winnow.db import Job
from winnow.db.paging import Cursor, Page
from winnow.errors import InvalidRequest, NotFound
from winnow.files import FileService
from winnow.files.batch import BATCH_URLS, check_batch_file
from winnow.jobs.kinds import kind as job_kind
from winnow.jobs.store import JobFilter, JobStore
from winnow.schemas.openai import ChatCompletionRequest, CompletionRequest
from winnow.schemas.openai_batches import Batch, BatchCreate, BatchRequestCounts, BatchStatus
from winnow.schemas.openai_embeddings import EmbeddingRequest

KIND = "batch"
WINDOW = timedelta(hours=24)
# The url a batch line may call -> its request body's model (an url of BATCH_URLS without one is
# refused at create).
BODIES: dict[str, type[ChatCompletionRequest] | type[CompletionRequest] | type[EmbeddingRequest]] = {
    "/v1/chat/completions": ChatCompletionRequest,
    "/v1/completions": CompletionRequest,
    "/v1/embeddings": EmbeddingRequest,
}


@dataclass(frozen=True)
class BatchInput:
    """A batch's input, copied beside the job (so deleting the upload does not starve it)."""

    path: Path
    rows: int
    sha256: str


def _check_body(url: str, body: dict[str, Any]) -> None:
    try:
        BODIES[url].model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ValueError(f"body.{where}: {first['msg']}") from None
    if body.get("stream"):
        raise ValueError("body.stream: a batch line cannot stream")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _seconds(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp())


def _status(job: Job) -> BatchStatus:
    if job.status == "running" and job.cancel_requested:
        return "cancelling"
    if job.status in ("running", "paused"):
        return "finalizing" if job.stage == "finalizing" else "in_progress"
    if job.status == "completed" and (job.checkpoint or {}).get("expired_at"):
        return "expired"
    mapped: dict[str, BatchStatus] = {"queued": "validating", "completed": "completed", "failed": "failed"}
    return mapped.get(job.status, "cancelled")


def expires_at(job: Job) -> int:
    """When the batch's completion window ends (set at create; 24 h after it for older rows)."""
    saved = (job.checkpoint or {}).get("expires_at")
    return int(saved) if saved is not None else int((job.created_at + WINDOW).timestamp())


def render(job: Job) -> Batch:
    """A batch's row in OpenAI's shape."""
    state, params = job.checkpoint or {}, job.params
    status, ended = _status(job), _seconds(job.finished_at)
    return Batch(
        id=job.id,
        endpoint=params["endpoint"],
        input_file_id=params["input_file_id"],
        completion_window=params.get("completion_window", "24h"),
        status=status,
        output_file_id=state.get("output_file_id"),
        error_file_id=state.get("error_file_id"),
        created_at=int(job.created_at.timestamp()),
        in_progress_at=_seconds(job.started_at),
        expires_at=expires_at(job),
        finalizing_at=state.get("finalizing_at"),
        completed_at=ended if status == "completed" else None,
        expired_at=state.get("expired_at"),
        failed_at=ended if status == "failed" else None,
        cancelling_at=state.get("cancelling_at") or (ended if status == "cancelled" else None),
        cancelled_at=ended if status == "cancelled" else None,
        request_counts=BatchRequestCounts(
            total=job.prompts_total, completed=int(state.get("completed", 0)), failed=int(state.get("failed", 0))
        ),
        metadata=params.get("metadata"),
    )


class BatchService:
    def __init__(self, store: JobStore, files: FileService, settings: Settings) -> None:
        self.store, self.files, self.settings = store, files, settings

    def create(self, owner: Principal, request: BatchCreate) -> Batch:
        """Check the input file (the key's, purpose ``batch``, every line calling ``endpoint`` with a
        valid body, at most ``batch_max_requests``), then queue the batch; nothing queues otherwise."""
        if request.endpoint not in BODIES:
            supported = ", ".join(u for u in BATCH_URLS if u in BODIES)
            raise InvalidRequest(
                "Unsupported endpoint", f"{request.endpoint!r}; expected {supported}", param="endpoint"
            )
        try:
            info = self.files.get(owner.id, request.input_file_id)
        except NotFound:
            raise InvalidRequest("No such file", f"id={request.input_file_id!r}", param="input_file_id") from None
        if info.purpose != "batch":
            raise InvalidRequest(
                "The input file's purpose is not batch", f"purpose {info.purpose!r}", param="input_file_id"
            )
        job_id = self.store.new_id(KIND)
        folder = self.store.job_dir(job_id)
        folder.mkdir(parents=True, exist_ok=True)
        copy = folder / "input.jsonl"
        try:
            shutil.copyfile(info.path, copy)
            limits = (self.settings.fine_tuning_max_line_bytes, request.endpoint, _check_body)
            rows = check_batch_file(copy, *limits, max_requests=self.settings.batch_max_requests)
            batch = BatchInput(copy, rows, _sha256(copy))
            window = {"expires_at": int(time.time() + self.settings.batch_completion_window_s)}
            job = self.store.create(request, batch, owner, kind=KIND, job_id=job_id, checkpoint=window)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return render(job)

    def get(self, owner: Principal, batch_id: str) -> Batch:
        return self.store.get(_known(batch_id), owner, KIND, render)

    def list(self, owner: Principal, after: str | None, limit: int) -> Page[Batch]:
        return self.store.list(owner, Cursor(limit=limit, after=after), JobFilter(), KIND, render)

    def cancel(self, owner: Principal, batch_id: str) -> Batch:
        return self.store.cancel(_known(batch_id), owner, KIND, render)


def _known(batch_id: str) -> str:
    """``batch_id``, or NotFound for an id no batch can have (OpenAI answers 404, not 400)."""
    if not job_kind(KIND).pattern.match(batch_id):
        raise NotFound("Batch not found", batch_id)
    return batch_id

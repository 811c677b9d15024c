"""Batches as a job kind (``winnow.jobs.kinds``): held whole by one worker under the job's lease,
its lines answered chunk by chunk (``winnow.batches.runner``) and checkpointed into the job's row with
each chunk's usage; at the end (or on cancel) the output and error files join the owner's files."""

from __future__ import annotations

import shutil
import threading
import time
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from winnow import telemetry
from winnow.batches.runner import ChunkAnswerer, Line, Meters, append, cut_to, expired_record, read_lines
from winnow.batches.service import KIND, expires_at, render
from winnow.db import Job
from winnow.errors import NotFound
from winnow.files import FileService
from winnow.files.service import OPENAI_PURPOSES
from winnow.jobs.errors import JobCancelled
from winnow.jobs.kinds import JobKind
from winnow.jobs.store import DbCheckpoint
from winnow.usage.service import UsageMeter

if TYPE_CHECKING:
    from winnow.jobs.worker import Worker


now = time.time  # the clock the completion window is read on


def files(worker: Worker) -> FileService:
    return FileService(worker.db, worker.settings)


def errors_path(job: Job) -> Path:
    return Path(job.output_path).with_name("errors.jsonl")


async def run(worker: Worker, job: Job, cancelled: threading.Event) -> None:
    """Every line of the batch answered once (resuming after the last checkpoint), then finalized."""
    checkpoint = DbCheckpoint(worker.store, job, worker.id, worker.usage.recorder)
    state: dict[str, Any] = {"lines": 0, "output_bytes": 0, "error_bytes": 0, "completed": 0, "failed": 0}
    state |= checkpoint.load()
    settings = worker.settings
    meters = Meters(lambda model: UsageMeter(worker.usage, job.owner_key_id, model, KIND, job.id))
    answerer = ChunkAnswerer(worker.models, meters, settings.batch_upstream_concurrency)
    output, errors = (
        cut_to(Path(job.output_path), state["output_bytes"]),
        cut_to(errors_path(job), state["error_bytes"]),
    )
    try:
        await worker.flush_usage()
        lines = read_lines(Path(job.prompts_path), state["lines"], settings.fine_tuning_max_line_bytes)
        while chunk := list(islice(lines, settings.batch_chunk_lines)):
            if now() >= expires_at(job):  # the window ended: this and the rest are not answered
                _expire(checkpoint, state, errors, [*chunk, *lines])
                break
            with telemetry.span(
                "batch.chunk", {"winnow.chunk.first_line": state["lines"], "winnow.chunk.rows": len(chunk)}
            ):
                usage = await answerer.answer(chunk)
                state["output_bytes"] = append(output, [line.record() for line in chunk if line.status == 200])
                state["error_bytes"] = append(errors, [line.record() for line in chunk if line.status != 200])
                state["lines"] += len(chunk)
                state["completed"] += sum(1 for line in chunk if line.status == 200)
                state["failed"] += sum(1 for line in chunk if line.status != 200)
                checkpoint.save(dict(state), "in_progress", usage)  # JobCancelled once a cancel is asked
    except JobCancelled:
        state["cancelling_at"] = int(time.time())
        _publish(worker, job, state)
        raise
    finally:
        meters.close()
        output.close()
        errors.close()
    state["finalizing_at"] = int(time.time())
    checkpoint.save(dict(state), "finalizing")
    _publish(worker, job, state)
    worker.complete(job, state)


def _expire(checkpoint: DbCheckpoint, state: dict[str, Any], errors: BinaryIO, rest: list[Line]) -> None:
    """The lines left when the completion window ended, each in the error file as ``batch_expired``."""
    state["error_bytes"] = append(errors, [expired_record(line) for line in rest])
    state["lines"] += len(rest)
    state["failed"] += len(rest)
    state["expired_at"] = int(time.time())
    checkpoint.save(dict(state), "finalizing")


def _publish(worker: Worker, job: Job, state: dict[str, Any]) -> None:
    """The output and error files as the owner's ``batch_output`` files (ids from the batch's, so a
    worker that finalizes again finds them made), recorded in the checkpoint."""
    store = worker.shared(files)
    for name, path, field in (
        ("output", Path(job.output_path), "output_file_id"),
        ("errors", errors_path(job), "error_file_id"),
    ):
        if not path.exists() or path.stat().st_size == 0:
            continue
        file_id = f"file-{job.id.removeprefix('batch-')[:23]}{0 if name == 'output' else 1}"
        try:
            store.get(job.owner_key_id, file_id)
        except NotFound:
            part = store.folder(job.owner_key_id) / f"{file_id}.part"
            part.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, part)
            store.add(job.owner_key_id, file_id, part, f"{job.id}_{name}.jsonl", "batch_output", OPENAI_PURPOSES)
        state[field] = file_id
    worker.store.renew(job.id, worker.id, dict(state), "finalizing")


BATCH = JobKind(name=KIND, prefix="batch", noun="Batch", output="output.jsonl", render=render, run=run)

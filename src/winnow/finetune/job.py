"""Fine-tuning as a job kind (``winnow.jobs.kinds``): held whole by one worker, trained in a thread
under the job's lease and resumed from its last checkpoint when an earlier attempt died."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING

from winnow.db import Job
from winnow.finetune.runner import TrainingDataRejected, run_fine_tuning
from winnow.finetune.service import FineTuningService, append_event, job_paths, render
from winnow.jobs.kinds import JobKind

if TYPE_CHECKING:
    from winnow.jobs.worker import Worker

log = logging.getLogger("winnow.worker")


def service(worker: Worker) -> FineTuningService:
    return FineTuningService(worker.db, worker.settings, worker.store, worker.models)


async def run(worker: Worker, job: Job, cancelled: threading.Event) -> None:
    """Prepare the data (first attempt), train, register the model; every phase stops on ``cancelled``."""
    try:
        await asyncio.to_thread(
            run_fine_tuning, worker.settings, worker.store, worker.shared(service), job, worker.id, None, cancelled
        )
    except TrainingDataRejected as exc:  # the job has failed, naming the bad lines
        log.info("fine-tuning %s failed: %s", job.id, exc.message)


def on_failure(worker: Worker, job: Job, exc: Exception) -> None:
    append_event(job_paths(worker.store.job_dir(job.id))["events"], f"failed: {exc}", level="error")


FINE_TUNING = JobKind(
    name="ft", prefix="ftjob", noun="Fine-tuning job", output="model", render=render, run=run, on_failure=on_failure
)

"""``client.fine_tuning``: fine-tuning jobs (create, follow, cancel, events) and deleting their models."""

from __future__ import annotations

import time
from typing import Any, Unpack

import anyio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from winnow.client._http import AsyncAPIClient, Call, SyncAPIClient
from winnow.client.params import JobListFilters
from winnow.schemas.finetune import (
    DeletedModel,
    FineTuningEventList,
    FineTuningJob,
    FineTuningJobList,
    FineTuningJobRequest,
)

FT = "/fine_tuning/jobs"
ENDED = frozenset({"completed", "failed", "cancelled"})


def _create(body: dict[str, Any]) -> Call[FineTuningJob]:
    # Checked here first: a typo is a clear local error, not a round trip.
    request = FineTuningJobRequest.model_validate(body)
    return Call("POST", FT, FineTuningJob, body=request.model_dump(mode="json", exclude_defaults=True))


def _job(job_id: str, action: str = "", method: str = "GET") -> Call[FineTuningJob]:
    return Call(method, f"{FT}/{job_id}{action}", FineTuningJob)


def _list(filters: JobListFilters) -> Call[FineTuningJobList]:
    return Call("GET", FT, FineTuningJobList, params=dict(filters))


def _events(job_id: str, after: int, limit: int | None) -> Call[FineTuningEventList]:
    return Call("GET", f"{FT}/{job_id}/events", FineTuningEventList, params={"after": after, "limit": limit})


def _delete(model_id: str) -> Call[DeletedModel]:
    return Call("DELETE", f"/models/{model_id}", DeletedModel)


class TrainingProgress:
    """A progress bar of a job's steps on a terminal (nothing elsewhere); ``update`` answers how long
    to wait before the next poll, or None once the job has ended."""

    def __init__(self, job_id: str, show: bool, poll_s: float) -> None:
        console = Console(stderr=True)
        self.poll_s = poll_s
        self.bar = (
            Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TimeElapsedColumn(),
                console=console,
            )
            if show and console.is_terminal
            else None
        )
        self.task = self.bar.add_task(job_id, total=None, loss="-") if self.bar is not None else None

    def __enter__(self) -> TrainingProgress:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def update(self, job: FineTuningJob) -> float | None:
        if self.bar is not None and self.task is not None:
            p = job.progress
            loss = f"{p.train_loss:.4f}" if p.train_loss is not None else "-"
            self.bar.update(self.task, completed=p.step, total=p.total_steps, loss=loss)
        return None if job.status in ENDED else self.poll_s


def _deadline(timeout: float | None) -> float:
    return time.monotonic() + timeout if timeout is not None else float("inf")


def _check(deadline: float, job: FineTuningJob) -> None:
    if time.monotonic() > deadline:
        raise TimeoutError(f"{job.id} is still {job.status} (step {job.progress.step})")


class SyncFineTuning:
    def __init__(self, client: SyncAPIClient) -> None:
        self._client = client

    def create(self, **body: Any) -> FineTuningJob:
        """Queue a fine-tuning job (``FineTuningJobRequest``'s fields: base_model, method, training_file
        or sdg_job or feedback, hyperparameters, suffix, ...)."""
        return self._client.fetch(_create(body))

    def retrieve(self, job_id: str) -> FineTuningJob:
        return self._client.fetch(_job(job_id))

    def list(self, **filters: Unpack[JobListFilters]) -> FineTuningJobList:
        """A page of your fine-tuning jobs, newest first (``after=page.last_id`` for the next, while ``has_more``)."""
        return self._client.fetch(_list(filters))

    def cancel(self, job_id: str) -> FineTuningJob:
        return self._client.fetch(_job(job_id, "/cancel", "POST"))

    def events(self, job_id: str, *, after: int = 0, limit: int | None = None) -> FineTuningEventList:
        return self._client.fetch(_events(job_id, after, limit))

    def wait(
        self, job_id: str, *, progress: bool = True, timeout: float | None = None, poll_s: float = 1.0
    ) -> FineTuningJob:
        """Poll until the job has ended and return it; a progress bar of its steps on a terminal."""
        deadline = _deadline(timeout)
        with TrainingProgress(job_id, progress, poll_s) as shown:
            while (delay := shown.update(job := self.retrieve(job_id))) is not None:
                _check(deadline, job)
                time.sleep(delay)
        return job

    def delete_model(self, model_id: str) -> DeletedModel:
        """Delete a fine-tuned model (every server process stops serving it)."""
        return self._client.fetch(_delete(model_id))


class AsyncFineTuning:
    def __init__(self, client: AsyncAPIClient) -> None:
        self._client = client

    async def create(self, **body: Any) -> FineTuningJob:
        """Queue a fine-tuning job (``FineTuningJobRequest``'s fields)."""
        return await self._client.fetch(_create(body))

    async def retrieve(self, job_id: str) -> FineTuningJob:
        return await self._client.fetch(_job(job_id))

    async def list(self, **filters: Unpack[JobListFilters]) -> FineTuningJobList:
        """A page of your fine-tuning jobs, newest first (``after=page.last_id`` for the next, while ``has_more``)."""
        return await self._client.fetch(_list(filters))

    async def cancel(self, job_id: str) -> FineTuningJob:
        return await self._client.fetch(_job(job_id, "/cancel", "POST"))

    async def events(self, job_id: str, *, after: int = 0, limit: int | None = None) -> FineTuningEventList:
        return await self._client.fetch(_events(job_id, after, limit))

    async def wait(
        self, job_id: str, *, progress: bool = True, timeout: float | None = None, poll_s: float = 1.0
    ) -> FineTuningJob:
        deadline = _deadline(timeout)
        with TrainingProgress(job_id, progress, poll_s) as shown:
            while (delay := shown.update(job := await self.retrieve(job_id))) is not None:
                _check(deadline, job)
                await anyio.sleep(delay)
        return job

    async def delete_model(self, model_id: str) -> DeletedModel:
        return await self._client.fetch(_delete(model_id))

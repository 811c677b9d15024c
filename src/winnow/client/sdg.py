"""``client.sdg``: submit synthetic-data jobs, follow them, and fetch what they wrote."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Unpack

import anyio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from winnow.client._http import AsyncAPIClient, Call, JSONObject, SyncAPIClient
from winnow.client.params import JobListFilters, SubmitJobParams
from winnow.schemas.sdg import JobDetails, JobList, PromptResponseScore
from winnow.sdg.outputs import ExportFormat, Output, export, import_datasets

SDG = "/synthetic_data_generation"
ENDED = frozenset({"completed", "failed", "cancelled", "dry_run"})
MAX_POLL_S = 5.0


def _submit(body: SubmitJobParams) -> Call[JobDetails]:
    return Call("POST", f"{SDG}/submit_job", JobDetails, body=body)


def _status(job_id: str) -> Call[JobDetails]:
    return Call("GET", f"{SDG}/job_status", JobDetails, params={"job_id": job_id})


def _list(filters: JobListFilters) -> Call[JobList]:
    return Call("GET", f"{SDG}/jobs", JobList, params=dict(filters))


def _cancel(job_id: str) -> Call[JobDetails]:
    return Call("POST", f"{SDG}/jobs/{job_id}/cancel", JobDetails)


def _artifact(job_id: str, name: str) -> Call[JSONObject]:
    return Call("GET", f"{SDG}/jobs/{job_id}/{name}", JSONObject)


def _output(job_id: str, output: Output) -> Call[JSONObject]:
    """One of a completed job's JSONL files: its rows, or a training set it asked for."""
    return _artifact(job_id, "output" if output == "rows" else output)


def _export_file(source: Path, format: ExportFormat, to: Path) -> None:
    with source.open("rb") as lines:
        export(lines, format, to)


def _load_dataset(path: Path) -> Any:
    """A JSONL file as a ``datasets.Dataset`` (Arrow, memory-mapped: the rows are not held in memory)."""
    return import_datasets().Dataset.from_json(str(path))


@contextmanager
def part_file(path: Path) -> Iterator[IO[bytes]]:
    """Write ``path`` whole or not at all: into ``path.part``, renamed when the block ends well."""
    part = path.with_name(path.name + ".part")
    try:
        with part.open("wb") as handle:
            yield handle
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    part.replace(path)


class WaitProgress:
    """What ``wait`` shows and how often it asks: a Rich progress bar on a terminal or in a notebook
    (quiet otherwise), and a poll interval that grows while nothing changes."""

    def __init__(self, job_id: str, show: bool, poll_s: float, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        shown = show and (self.console.is_terminal or self.console.is_jupyter)
        self.bar = (
            Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
            )
            if shown
            else None
        )
        self.task = self.bar.add_task(job_id, total=None) if self.bar else None
        self.first_poll_s = self.poll_s = poll_s
        self.seen: tuple[str, int] | None = None

    def __enter__(self) -> WaitProgress:
        if self.bar:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar:
            self.bar.stop()

    def update(self, job: JobDetails) -> float | None:
        """Show ``job``; the seconds until the next poll, or None when it has ended."""
        if self.bar is not None and self.task is not None:
            total = job.counts.prompts_total or None
            self.bar.update(
                self.task, total=total, completed=job.counts.prompts_read, description=f"{job.job_id} {job.stage}"
            )
        if job.status in ENDED:
            return None
        now = (job.status, job.counts.prompts_read)
        self.poll_s = self.first_poll_s if now != self.seen else min(self.poll_s * 1.5, MAX_POLL_S)
        self.seen = now
        return self.poll_s


def _deadline(timeout: float | None) -> float:
    return time.monotonic() + timeout if timeout is not None else float("inf")


def _check_deadline(deadline: float, job: JobDetails) -> None:
    if time.monotonic() > deadline:
        raise TimeoutError(f"{job.job_id} is still {job.status} ({job.stage})")


class SyncSDG:
    def __init__(self, client: SyncAPIClient) -> None:
        self._client = client

    def submit(self, **body: Unpack[SubmitJobParams]) -> JobDetails:
        """Submit a job (``dry_run=True``: validate and estimate its tokens and cost, queue nothing)."""
        return self._client.fetch(_submit(body))

    def status(self, job_id: str) -> JobDetails:
        return self._client.fetch(_status(job_id))

    def list(self, **filters: Unpack[JobListFilters]) -> JobList:
        """A page of your jobs, newest first (``after=page.last_id`` for the next, while ``has_more``)."""
        return self._client.fetch(_list(filters))

    def cancel(self, job_id: str) -> JobDetails:
        """Cancel a queued or running job (a running one stops after its current chunk)."""
        return self._client.fetch(_cancel(job_id))

    def summary(self, job_id: str) -> dict[str, Any]:
        """A completed job's summary: counts, kept ratio, score statistics, durations, tokens."""
        return self._client.fetch(_artifact(job_id, "summary")).root

    def wait(
        self, job_id: str, *, progress: bool = True, timeout: float | None = None, poll_s: float = 0.5
    ) -> JobDetails:
        """Poll until the job has ended (completed, failed, cancelled) and return its status; a
        progress bar on a terminal. ``TimeoutError`` after ``timeout`` seconds."""
        deadline = _deadline(timeout)
        with WaitProgress(job_id, progress, poll_s) as shown:
            while (delay := shown.update(job := self.status(job_id))) is not None:
                _check_deadline(deadline, job)
                time.sleep(delay)
        return job

    def download(self, job_id: str, path: str | Path, output: Output = "rows") -> Path:
        """Save a completed job's output JSONL (``output``: its rows, or the ``preference`` or ``sft``
        set it asked for) at ``path``, streamed; whole or not at all."""
        target = Path(path)
        with self._client.stream(_output(job_id, output)) as response, part_file(target) as out:
            for block in response.iter_bytes():
                out.write(block)
        return target

    def rows(self, job_id: str) -> Iterator[PromptResponseScore]:
        """A completed job's output rows, streamed (the file is never held whole)."""
        for line in self._client.lines(_artifact(job_id, "output")):
            yield PromptResponseScore.model_validate_json(line)

    def records(self, job_id: str, output: Output = "preference") -> Iterator[dict[str, Any]]:
        """The rows of a completed job's ``output`` (rows, preference, sft) as dicts, streamed."""
        for line in self._client.lines(_output(job_id, output)):
            yield json.loads(line)

    def export(self, job_id: str, to: str | Path, format: ExportFormat = "parquet", output: Output = "rows") -> Path:
        """Export a completed job's ``output`` to ``to`` as parquet, jsonl or hf (a Hugging Face dataset
        folder, ``datasets``' save_to_disk), streamed."""
        export(self._client.lines(_output(job_id, output)), format, Path(to))
        return Path(to)

    def to_dataset(self, job_id: str, output: Output = "preference") -> Any:
        """A completed job's ``output`` as a ``datasets.Dataset`` (needs the ``datasets`` extra)."""
        import_datasets()
        with tempfile.TemporaryDirectory() as folder:
            return _load_dataset(self.download(job_id, Path(folder) / f"{output}.jsonl", output))


class AsyncSDG:
    def __init__(self, client: AsyncAPIClient) -> None:
        self._client = client

    async def submit(self, **body: Unpack[SubmitJobParams]) -> JobDetails:
        """Submit a job (``dry_run=True``: validate and estimate its tokens and cost, queue nothing)."""
        return await self._client.fetch(_submit(body))

    async def status(self, job_id: str) -> JobDetails:
        return await self._client.fetch(_status(job_id))

    async def list(self, **filters: Unpack[JobListFilters]) -> JobList:
        """A page of your jobs, newest first (``after=page.last_id`` for the next, while ``has_more``)."""
        return await self._client.fetch(_list(filters))

    async def cancel(self, job_id: str) -> JobDetails:
        """Cancel a queued or running job (a running one stops after its current chunk)."""
        return await self._client.fetch(_cancel(job_id))

    async def summary(self, job_id: str) -> dict[str, Any]:
        """A completed job's summary: counts, kept ratio, score statistics, durations, tokens."""
        return (await self._client.fetch(_artifact(job_id, "summary"))).root

    async def wait(
        self, job_id: str, *, progress: bool = True, timeout: float | None = None, poll_s: float = 0.5
    ) -> JobDetails:
        """Poll until the job has ended (completed, failed, cancelled) and return its status; a
        progress bar on a terminal. ``TimeoutError`` after ``timeout`` seconds."""
        deadline = _deadline(timeout)
        with WaitProgress(job_id, progress, poll_s) as shown:
            while (delay := shown.update(job := await self.status(job_id))) is not None:
                _check_deadline(deadline, job)
                await anyio.sleep(delay)
        return job

    async def download(self, job_id: str, path: str | Path, output: Output = "rows") -> Path:
        """Save a completed job's output JSONL (``output``: its rows, or the ``preference`` or ``sft``
        set it asked for) at ``path``, streamed; whole or not at all."""
        target = Path(path)
        async with self._client.stream(_output(job_id, output)) as response:
            with part_file(target) as out:
                async for block in response.aiter_bytes():
                    out.write(block)
        return target

    async def rows(self, job_id: str) -> AsyncIterator[PromptResponseScore]:
        """A completed job's output rows, streamed (the file is never held whole)."""
        async for line in self._client.lines(_artifact(job_id, "output")):
            yield PromptResponseScore.model_validate_json(line)

    async def records(self, job_id: str, output: Output = "preference") -> AsyncIterator[dict[str, Any]]:
        """The rows of a completed job's ``output`` (rows, preference, sft) as dicts, streamed."""
        async for line in self._client.lines(_output(job_id, output)):
            yield json.loads(line)

    async def export(
        self, job_id: str, to: str | Path, format: ExportFormat = "parquet", output: Output = "rows"
    ) -> Path:
        """Export a completed job's ``output`` to ``to`` as parquet, jsonl or hf, through a temporary file."""
        with tempfile.TemporaryDirectory() as folder:
            source = await self.download(job_id, Path(folder) / f"{output}.jsonl", output)
            await anyio.to_thread.run_sync(lambda: _export_file(source, format, Path(to)))
        return Path(to)

    async def to_dataset(self, job_id: str, output: Output = "preference") -> Any:
        """A completed job's ``output`` as a ``datasets.Dataset`` (needs the ``datasets`` extra)."""
        import_datasets()
        with tempfile.TemporaryDirectory() as folder:
            source = await self.download(job_id, Path(folder) / f"{output}.jsonl", output)
            return await anyio.to_thread.run_sync(lambda: _load_dataset(source))

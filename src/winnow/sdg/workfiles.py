"""A run's work folder and checkpoint: the work files an attempt appends to, cut back to (or adopted
at) their checkpointed lengths when a run resumes; checkpoints in a file (in-process runs) or the
job store (``winnow.jobs``); and outputs published whole or not at all."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from winnow.sdg import stages
from winnow.usage.recorder import UsageEvent
from winnow.usage.service import CLI_KEY_ID, UsageMeter, UsageService

FILES = ("partial", "spill", "spill_scores", "raw_scores", "kept_scores", "errors", "preference")


class Checkpoint(Protocol):
    def load(self) -> dict[str, Any]: ...

    def save(self, state: dict[str, Any], stage: str, usage: Sequence[UsageEvent] = ()) -> None:
        """Persist ``state`` and, with it, the usage rows of the chunks it adds (so a chunk is billed
        exactly when its checkpoint is saved); raise JobCancelled when the job has been cancelled."""


class FileCheckpoint:
    """A checkpoint in a JSON file (for in-process runs): written to a temp name, fsynced, renamed.

    With a usage service, the run's usage rows (source ``cli``, no key) go to its database under a
    run id kept in the file; a file and a database share no transaction, so the rows are written
    first and the file counts them: a resumed run deletes rows past that count (a chunk whose
    checkpoint never followed), as it cuts its work files back."""

    def __init__(self, path: Path, usage: UsageService | None = None) -> None:
        self.path = path
        self.usage = usage
        self._extra: dict[str, Any] = {}  # usage_run, usage_rows

    def load(self) -> dict[str, Any]:
        state: dict[str, Any] = json.loads(self.path.read_text()) if self.path.exists() else {}
        if self.usage is not None:
            if "usage_run" not in state:  # named before any row is written under it
                state["usage_run"] = f"cli-{uuid.uuid4().hex[:24]}"
                self._write(state)
            self._extra = {"usage_run": state["usage_run"], "usage_rows": int(state.get("usage_rows", 0))}
            self.usage.recorder.trim(state["usage_run"], self._extra["usage_rows"])
        return state

    @property
    def run_id(self) -> str:
        """The run's id in its usage rows' ``job_id`` (after ``load``)."""
        return str(self._extra["usage_run"])

    def meter(self, model_id: str) -> stages.Meter | None:
        """Usage accounting for this run's calls to ``model_id`` (None without a usage service)."""
        if self.usage is None:
            return None
        if not self._extra:
            self.load()
        return UsageMeter(self.usage, CLI_KEY_ID, model_id, "cli", self.run_id)

    def save(self, state: dict[str, Any], stage: str, usage: Sequence[UsageEvent] = ()) -> None:
        if usage and self.usage is not None:
            self.usage.recorder.write_with(usage, self.usage.recorder.insert)
            self._extra["usage_rows"] += len(usage)
        self._write({**state, **self._extra, "stage": stage})

    def _write(self, state: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w") as handle:
            json.dump(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(self.path)


class Save(Protocol):
    """A runner's checkpoint step: its state now, with the usage rows of the chunk just written."""

    def __call__(self, stage: str, usage: Sequence[UsageEvent] = ()) -> None: ...


def adopt(previous: Path, work: Path, offsets: dict[str, int], names: tuple[str, ...] = FILES) -> None:
    """Take over another attempt's work: copy each file up to its checkpointed length into our own
    directory. Whatever the previous owner still writes (a stalled worker whose lease ran out)
    lands in its directory, never in ours: the lease fences the checkpoint, this fences the files."""
    work.mkdir(parents=True, exist_ok=True)
    for name in names:
        with (work / name).open("wb") as target:
            copy_prefix(previous / name, target, offsets.get(name, 0))
            target.flush()
            os.fsync(target.fileno())
    # The previous folder stays until the job ends: the checkpoint names it until this attempt saves
    # its first chunk, and an attempt that gives the work back before then leaves it to the next.


def copy_prefix(source: Path, target: BinaryIO, length: int) -> None:
    """Append the first ``length`` bytes of ``source`` (its checkpointed part) to ``target``."""
    if not length:
        return
    if not source.exists() or source.stat().st_size < length:
        raise RuntimeError(f"{source} is missing or shorter than its checkpoint ({length} bytes)")
    with source.open("rb") as handle:
        while length > 0 and (block := handle.read(min(length, 1 << 20))):
            target.write(block)
            length -= len(block)


def open_files(work: Path, offsets: dict[str, int], names: tuple[str, ...] = FILES) -> dict[str, BinaryIO]:
    """Each work file opened for appending, first cut back to its checkpointed length."""
    handles: dict[str, BinaryIO] = {}
    for name in names:
        path = work / name
        path.touch()
        with path.open("r+b") as handle:
            handle.truncate(offsets.get(name, 0))
        handles[name] = path.open("ab")
    return handles


def open_work(
    work: Path, checkpoint: Checkpoint, names: tuple[str, ...] = FILES
) -> tuple[dict[str, Any], dict[str, BinaryIO], float]:
    """Resume a runner's work: the checkpoint's state, the work files (adopted from the attempt the
    checkpoint names when that was another, then cut back to the checkpoint), and the perf_counter
    origin that makes ``timings["total_s"]`` count across attempts."""
    work.mkdir(parents=True, exist_ok=True)
    state = checkpoint.load()
    previous = state.get("work_dir")
    if previous and Path(previous) != work:
        adopt(Path(previous), work, state.get("offsets", {}), names)
    files = open_files(work, state.get("offsets", {}), names)
    return state, files, time.perf_counter() - float(state.get("timings", {}).get("total_s", 0.0))


def snapshot(
    work: Path,
    chunks_done: int,
    offsets: dict[str, int],
    counts: dict[str, Any],
    timings: dict[str, float],
    started: float,
) -> dict[str, Any]:
    """A checkpoint's state: what is done, and how long each work file is."""
    timings["total_s"] = time.perf_counter() - started
    return {"work_dir": str(work), "chunks_done": chunks_done, "offsets": offsets, "counts": counts, "timings": timings}


def publish(source: Path, target: Path, attempt: str) -> None:
    """``source`` under ``target``'s name, whole or not at all (through a temporary name of this attempt's)."""
    tmp = target.with_name(f"{target.name}.{attempt}.tmp")
    tmp.unlink(missing_ok=True)
    link_or_copy(source, tmp)
    os.replace(tmp, target)


def link_or_copy(source: Path, target: Path) -> None:
    """A hard link where both sit on one filesystem (no copy); a copy elsewhere. The source stays,
    so a crash before the checkpoint records the end just redoes this step."""
    try:
        os.link(source, target)
    except OSError:
        with source.open("rb") as src, target.open("wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
            dst.flush()
            os.fsync(dst.fileno())

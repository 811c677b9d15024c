"""A worker's side of a fine-tuning job: prepare its data (check and normalize the rows, streaming),
train under the job's lease, record progress and checkpoints in its row, and, when done, register the
new model (every process serves it from then on). A cancel stops it in any phase."""

from __future__ import annotations

import hashlib
import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from winnow.config import ModelConfig, Settings
from winnow.db import Job
from winnow.errors import InvalidRequest
from winnow.finetune.data import Holdout, TrainingSet, normalize
from winnow.finetune.distributed import train_distributed, training_processes
from winnow.finetune.service import (
    FEEDBACK_FILE,
    FineTuningService,
    append_event,
    job_paths,
    model_dir,
    model_id_for,
    prompt_file,
)
from winnow.finetune.trainer import TrainingRun, TrainResult, loss_curve, train
from winnow.jobs.errors import JobCancelled
from winnow.jobs.store import JobStore
from winnow.schemas.finetune import FineTuningJobRequest

log = logging.getLogger("winnow.finetune")


class _JobHooks:
    """Progress, events and checkpoints of one run, into the job's row and events file."""

    def __init__(
        self,
        store: JobStore,
        job: Job,
        worker: str,
        state: dict[str, Any],
        events: Path,
        watch: Callable[[dict[str, Any]], None] | None,
        cancelled: threading.Event,
    ) -> None:
        self.watch = watch
        self.cancelled = cancelled
        self.store = store
        self.job_id = job.id
        self.worker = worker
        self.state = state
        self.events = events

    def _save(self, stage: str = "training") -> bool:
        return self.store.renew(self.job_id, self.worker, dict(self.state), stage)

    def progress(self, progress: dict[str, Any], event: dict[str, Any] | None = None) -> bool:
        self.state["progress"] = progress
        if self.watch is not None:
            self.watch(progress)
        if event is not None:
            append_event(self.events, event["message"], event.get("type", "message"), data=event.get("data"))
        return self._save() or self.cancelled.is_set()

    def saved(self, step: int) -> None:
        self.state["checkpoint_step"] = step
        append_event(self.events, f"checkpoint saved at step {step}", data={"step": step})
        self._save()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


class TrainingDataRejected(InvalidRequest):
    """The job's rows are bad: the job has failed, with the first bad lines as its error."""


class _Preparing:
    """The ``tick`` of a preparing pass: renews the lease as the heartbeat would (``winnow ft run`` has
    none) and stops the pass with JobCancelled once a cancel is heard, from here or the heartbeat."""

    def __init__(self, store: JobStore, job_id: str, worker: str, cancelled: threading.Event) -> None:
        self.store, self.job_id, self.worker, self.cancelled = store, job_id, worker, cancelled
        self.every_s = store.settings.job_lease_s / 3
        self.renewed = time.monotonic()

    def __call__(self, line: int) -> None:
        if time.monotonic() - self.renewed >= self.every_s:
            self.renewed = time.monotonic()
            if self.store.renew(self.job_id, self.worker, stage="preparing"):
                self.cancelled.set()
        if self.cancelled.is_set():
            raise JobCancelled(self.job_id)


def _prepare(
    settings: Settings, store: JobStore, job: Job, worker: str, state: dict[str, Any], cancelled: threading.Event
) -> None:
    """Check and normalize the job's rows into its folder (streaming, in constant memory) and record
    them in its row. Bad rows fail the job, naming the lines (then TrainingDataRejected)."""
    spec = FineTuningJobRequest.model_validate(job.params)
    plan = state.pop("prepare")
    paths = job_paths(store.job_dir(job.id))
    tick = _Preparing(store, job.id, worker, cancelled)
    if store.renew(job.id, worker, stage="preparing"):
        cancelled.set()
    tick(0)
    limit = settings.fine_tuning_max_line_bytes
    validation: TrainingSet | None = None
    try:
        train, validation = normalize(
            Path(plan["source"]),
            spec.method,
            bool(plan["chat"]),
            paths["train"],
            plan["field"],
            Holdout(spec.validation_split, spec.hyperparameters.seed, paths["validation"]),
            max_line_bytes=limit,
            tick=tick,
        )
        if plan.get("validation"):
            validation, _ = normalize(
                Path(plan["validation"]),
                spec.method,
                bool(plan["chat"]),
                paths["validation"],
                "validation_file",
                max_line_bytes=limit,
                tick=tick,
            )
        if validation is not None and validation.kind != train.kind:
            raise InvalidRequest("validation rows are not in the training rows' format", validation.kind)
    except BaseException as exc:
        paths["train"].unlink(missing_ok=True)
        paths["validation"].unlink(missing_ok=True)
        if isinstance(exc, InvalidRequest):
            append_event(paths["events"], f"failed: {exc.message}: {exc.details}", level="error")
            store.finish(job.id, worker, "failed", error=f"{exc.message}: {exc.details}")
            raise TrainingDataRejected(exc.message, exc.details) from exc
        if isinstance(exc, JobCancelled):
            append_event(paths["events"], "cancelled while preparing the data", level="warn")
        raise
    state.update(prepared=True, validation_rows=validation.rows if validation is not None else 0)
    store.record_input(job.id, worker, prompt_file(train), dict(state))
    (store.job_dir(job.id) / FEEDBACK_FILE).unlink(missing_ok=True)
    append_event(paths["events"], f"validated {train.rows} training row(s) from {plan['field']}")


def run_fine_tuning(
    settings: Settings,
    store: JobStore,
    service: FineTuningService,
    job: Job,
    worker: str,
    watch: Callable[[dict[str, Any]], None] | None = None,
    cancelled: threading.Event | None = None,
) -> str:
    """Prepare ``job``'s data if no attempt has yet, train it to completion (blocking; run it in a
    thread) and return the new model's id. Raises JobCancelled when the job is cancelled (``cancelled``
    set, by the worker's heartbeat, or a renewal that hears of it), JobLost when another worker holds
    it, TrainingDataRejected when its rows are bad (the job has failed then); a crash leaves the last
    checkpoint to resume. ``watch`` sees every progress update (the CLI's progress bar)."""
    cancelled = cancelled or threading.Event()
    spec = FineTuningJobRequest.model_validate(job.params)
    paths = job_paths(store.job_dir(job.id))
    state: dict[str, Any] = dict(job.checkpoint or {})
    if "prepare" in state:
        _prepare(settings, store, job, worker, state, cancelled)
    elif _sha256(paths["train"]) != job.prompts_sha256:
        raise ValueError("the training set changed since the job was prepared")
    if cancelled.is_set() or store.renew(job.id, worker, stage="training"):
        raise JobCancelled(job.id)
    from winnow.models.providers.transformers import configure_torch_threads  # torch: not while preparing

    configure_torch_threads(settings.local_torch_threads)
    base = service.models.config(spec.base_model)
    resume_step = state.get("checkpoint_step")
    model_id = model_id_for(spec.base_model, spec.suffix, job.id)
    out = model_dir(settings, model_id)
    hooks = _JobHooks(store, job, worker, state, paths["events"], watch, cancelled)
    validation = paths["validation"] if paths["validation"].exists() else None
    run = TrainingRun(spec, base, paths["train"], validation, paths["work"], out, resume_step)
    world = training_processes(settings.fine_tuning_processes)
    result = train_distributed(world, run, hooks, settings.local_torch_threads) if world > 1 else train(run, hooks)
    if result.cancelled or cancelled.is_set():
        append_event(paths["events"], "cancelled", level="warn")
        raise JobCancelled(job.id)
    curve = loss_curve(result.history, paths["loss_curve"], f"{model_id} ({spec.method})")
    config = _served_as(model_id, base, result, f"{spec.base_model} fine-tuned ({spec.method}) by {job.id}")
    service.register(job, config)
    state.update(fine_tuned_model=model_id, metrics=result.metrics, loss_curve=curve is not None)
    state["progress"] = {**state.get("progress", {}), "eta_seconds": 0.0}
    append_event(paths["events"], f"completed: the new model is {model_id}", data={"model": model_id, **result.metrics})
    store.finish(job.id, worker, "completed", output_bytes=_size(out), checkpoint=state)
    shutil.rmtree(paths["work"], ignore_errors=True)  # the checkpoints: the model is what stays
    log.info("fine-tuning %s completed: %s", job.id, model_id)
    return model_id


def _served_as(model_id: str, base: ModelConfig, result: TrainResult, description: str) -> ModelConfig:
    """The new model's config: served like its base, from the trained weights (or base + adapter)."""
    return ModelConfig(
        id=model_id,
        name=model_id,
        type="fine-tuned",
        provider="transformers",
        description=description,
        path=str(result.model_path),
        adapter_path=str(result.adapter_path) if result.adapter_path else None,
        device=base.device,
        dtype=base.dtype,
        context_length=base.context_length,
        capabilities=base.capabilities,
        options={k: v for k, v in base.options.items() if k != "merge_adapter"},
    )

"""A worker's side of a fine-tuning job: train under the job's lease, record progress and checkpoints
in its row, and, when done, register the new model (every process serves it from then on)."""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from winnow.config import ModelConfig, Settings
from winnow.db import SdgJob
from winnow.finetune.distributed import train_distributed, training_processes
from winnow.finetune.service import FineTuningService, append_event, job_paths, model_dir, model_id_for
from winnow.finetune.trainer import loss_curve, train
from winnow.schemas.finetune import FineTuningJobRequest
from winnow.sdg.runner import JobCancelled
from winnow.sdg.service import JobStore

log = logging.getLogger("winnow.finetune")


class _JobHooks:
    """Progress, events and checkpoints of one run, into the job's row and events file."""

    def __init__(
        self,
        store: JobStore,
        job: SdgJob,
        worker: str,
        state: dict[str, Any],
        events: Path,
        watch: Callable[[dict[str, Any]], None] | None,
    ) -> None:
        self.watch = watch
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
        return self._save()

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


def run_fine_tuning(
    settings: Settings,
    store: JobStore,
    service: FineTuningService,
    job: SdgJob,
    worker: str,
    watch: Callable[[dict[str, Any]], None] | None = None,
) -> str:
    """Train ``job`` to completion (blocking; run it in a thread) and return the new model's id. Raises
    JobCancelled when the job is cancelled, JobLost when another worker holds it; a crash leaves the
    last checkpoint to resume. ``watch`` sees every progress update (the CLI's progress bar)."""
    from winnow.models.providers.transformers import configure_torch_threads

    configure_torch_threads(settings.local_torch_threads)
    spec = FineTuningJobRequest.model_validate(job.params)
    base = service.models.config(spec.base_model)
    paths = job_paths(store.job_dir(job.id))
    if _sha256(paths["train"]) != job.prompts_sha256:
        raise ValueError("the training set changed since the job was submitted")
    state: dict[str, Any] = dict(job.checkpoint or {})
    resume_step = state.get("checkpoint_step")
    model_id = model_id_for(spec.base_model, spec.suffix, job.id)
    out = model_dir(settings, model_id)
    hooks = _JobHooks(store, job, worker, state, paths["events"], watch)
    validation = paths["validation"] if paths["validation"].exists() else None
    world = training_processes(settings.fine_tuning_processes)
    if world > 1:
        result = train_distributed(
            world,
            spec,
            base,
            paths["train"],
            validation,
            paths["work"],
            out,
            hooks,
            resume_step,
            settings.local_torch_threads,
        )
    else:
        result = train(spec, base, paths["train"], validation, paths["work"], out, hooks, resume_step)
    if result.cancelled:
        append_event(paths["events"], "cancelled", level="warn")
        raise JobCancelled(job.id)
    curve = loss_curve(result.history, paths["loss_curve"], f"{model_id} ({spec.method})")
    config = ModelConfig(
        id=model_id,
        name=model_id,
        type="fine-tuned",
        provider="transformers",
        description=f"{spec.base_model} fine-tuned ({spec.method}) by {job.id}",
        path=str(result.model_path),
        adapter_path=str(result.adapter_path) if result.adapter_path else None,
        device=base.device,
        dtype=base.dtype,
        context_length=base.context_length,
        capabilities=base.capabilities,
        options={k: v for k, v in base.options.items() if k != "merge_adapter"},
    )
    service.register(job, config)
    state.update(fine_tuned_model=model_id, metrics=result.metrics, loss_curve=curve is not None)
    state["progress"] = {**state.get("progress", {}), "eta_seconds": 0.0}
    append_event(paths["events"], f"completed: the new model is {model_id}", data={"model": model_id, **result.metrics})
    store.finish(job.id, worker, "completed", output_bytes=_size(out), checkpoint=state)
    shutil.rmtree(paths["work"], ignore_errors=True)  # the checkpoints: the model is what stays
    log.info("fine-tuning %s completed: %s", job.id, model_id)
    return model_id

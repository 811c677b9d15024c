"""OpenAI's fine-tuning API over Winnow's: a ``CreateFineTuningJob`` becomes a
``FineTuningJobRequest`` (file ids resolved to the key's uploads, ``auto`` to Winnow's defaults), and
a job's row, events and recorded checkpoints read back in OpenAI's shapes. One service does the work
(``FineTuningService``); this module only translates."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pydantic import ValidationError

from winnow.auth import Principal
from winnow.db import Job
from winnow.db.paging import Cursor
from winnow.errors import InvalidRequest, NotFound
from winnow.files import FileService
from winnow.finetune.service import FineTuningService
from winnow.jobs.store import JobFilter
from winnow.schemas.finetune import FineTuningEvent, FineTuningJobRequest, Hyperparameters
from winnow.schemas.openai_fine_tuning import (
    CreateFineTuningJob,
    DpoJobHyperparameters,
    JobError,
    JobHyperparameters,
    OpenAICheckpoint,
    OpenAIDpoHyperparameters,
    OpenAIFineTuningEvent,
    OpenAIFineTuningJob,
    OpenAIHyperparameters,
    OpenAIStatus,
)


class _Identified(Protocol):
    @property
    def id(self) -> str: ...


T = TypeVar("T", bound=_Identified)
DEFAULTS = Hyperparameters()
FILE_ID = re.compile(r"^file-[0-9a-f]{24}$")
_CHECKPOINT = re.compile(r"^checkpoint saved at step (\d+)")


def _training_path(files: FileService, key_id: int, file_id: str, field: str) -> str:
    try:
        info = files.get(key_id, file_id)
    except NotFound:
        raise InvalidRequest(f"invalid {field}: {file_id}", "no file of this key has this id", param=field) from None
    if info.purpose != "fine-tune":
        raise InvalidRequest(
            f"invalid {field}: {file_id}",
            f"its purpose is {info.purpose!r}; upload it with purpose fine-tune",
            param=field,
        )
    return info.path


def _hyperparameters(body: CreateFineTuningJob) -> tuple[str, dict[str, Any]]:
    """Winnow's method and hyperparameters: ``method``'s override the deprecated top-level ones."""
    kind = body.method.type if body.method else "supervised"
    given: OpenAIHyperparameters | None = body.hyperparameters
    if body.method is not None:
        section = body.method.supervised if kind == "supervised" else body.method.dpo
        if section is not None and section.hyperparameters is not None:
            given = section.hyperparameters
    out: dict[str, Any] = {}
    if given is not None:
        if given.n_epochs != "auto":
            out["epochs"] = given.n_epochs
        if given.batch_size != "auto":
            out["batch_size"] = given.batch_size
        if given.learning_rate_multiplier != "auto":
            out["learning_rate"] = DEFAULTS.learning_rate * given.learning_rate_multiplier
        if isinstance(given, OpenAIDpoHyperparameters) and given.beta != "auto":
            out["beta"] = given.beta
    if body.seed is not None:
        out["seed"] = body.seed
    return ("sft" if kind == "supervised" else "dpo"), out


_PARAMS = {"base_model": "model", "epochs": "n_epochs", "learning_rate": "learning_rate_multiplier"}


def to_request(body: CreateFineTuningJob, files: FileService, key_id: int) -> FineTuningJobRequest:
    """The Winnow request of an OpenAI one, or InvalidRequest naming the OpenAI field at fault."""
    method, hyperparameters = _hyperparameters(body)
    fields: dict[str, Any] = {
        "base_model": body.model,
        "method": method,
        "training_file": _training_path(files, key_id, body.training_file, "training_file"),
        "hyperparameters": hyperparameters,
        "suffix": body.suffix,
    }
    if body.validation_file is not None:
        fields["validation_file"] = _training_path(files, key_id, body.validation_file, "validation_file")
    try:
        return FineTuningJobRequest.model_validate(fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = [_PARAMS.get(str(part), str(part)) for part in error["loc"]]
        param = ".".join(loc)
        raise InvalidRequest(f"Invalid {param}", f"{param}: {error['msg']}", param=param) from None


def _file_id(path: str | None) -> str | None:
    if path is None:
        return None
    stem = Path(path).stem
    return stem if FILE_ID.match(stem) else path


def _status(job: Job) -> OpenAIStatus:
    if job.status == "running":
        return "validating_files" if job.stage == "preparing" else "running"
    if job.status == "completed":
        return "succeeded"
    if job.status in ("failed", "cancelled"):
        return job.status  # type: ignore[return-value]
    return "queued"  # queued, or paused until a worker takes it again


def _unix(value: Any) -> int | None:
    return None if value is None else int(value.timestamp())


def render(job: Job) -> OpenAIFineTuningJob:
    """A fine-tuning job's row (made on either API) as OpenAI's ``fine_tuning.job``."""
    spec = FineTuningJobRequest.model_validate(job.params)
    state: dict[str, Any] = job.checkpoint or {}
    hp = spec.hyperparameters
    common = {
        "n_epochs": hp.epochs,
        "batch_size": hp.batch_size,
        "learning_rate_multiplier": hp.learning_rate / DEFAULTS.learning_rate,
    }
    hyperparameters = JobHyperparameters(**common)
    if spec.method == "dpo":
        method = {"type": "dpo", "dpo": {"hyperparameters": DpoJobHyperparameters(**common, beta=hp.beta)}}
    else:
        method = {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}}
    eta = (state.get("progress") or {}).get("eta_seconds")
    status = _status(job)
    training = spec.training_file or (f"sdg_job:{spec.sdg_job}" if spec.sdg_job else "feedback")
    return OpenAIFineTuningJob(
        id=job.id,
        created_at=int(job.created_at.timestamp()),
        error=JobError(code="fine_tuning_failed", message=job.error or "failed") if status == "failed" else None,
        fine_tuned_model=state.get("fine_tuned_model") if status == "succeeded" else None,
        finished_at=_unix(job.finished_at),
        hyperparameters=hyperparameters,
        model=spec.base_model,
        status=status,
        training_file=_file_id(training) or training,
        validation_file=_file_id(spec.validation_file),
        seed=hp.seed,
        estimated_finish=int(time.time() + eta) if status == "running" and isinstance(eta, int | float) else None,
        method=method,
        metadata=state.get("metadata"),
    )


def event(found: FineTuningEvent) -> OpenAIFineTuningEvent:
    return OpenAIFineTuningEvent(
        id=found.id,
        created_at=found.created_at,
        level=found.level,
        message=found.message,
        type=found.type,
        data=found.data or {},
    )


def checkpoints(job: OpenAIFineTuningJob, events: list[FineTuningEvent]) -> list[OpenAICheckpoint]:
    """The checkpoints the job recorded (its ``checkpoint saved at step N`` events), newest first, each
    with the last training metrics logged at or before its step."""
    found: list[OpenAICheckpoint] = []
    metrics: dict[str, float] = {}
    for item in events:
        data = item.data or {}
        if item.type == "metrics" and isinstance(data.get("loss"), int | float):
            metrics = {"step": float(data.get("step", 0)), "train_loss": float(data["loss"])}
        saved = _CHECKPOINT.match(item.message)
        if saved is None:
            continue
        step = int(saved.group(1))
        found.append(
            OpenAICheckpoint(
                id=f"{job.id}:ckpt-{step}",
                created_at=item.created_at,
                fine_tuned_model_checkpoint=f"{job.fine_tuned_model or job.model}:ckpt-step-{step}",
                fine_tuning_job_id=job.id,
                metrics={**metrics, "step": float(step)},
                step_number=step,
            )
        )
    return found[::-1]


class OpenAIFineTuning:
    """``/v1/fine_tuning/jobs`` over ``FineTuningService``: the same jobs, in OpenAI's shapes."""

    def __init__(self, service: FineTuningService, files: FileService) -> None:
        self.service = service
        self.files = files

    def create(
        self, body: CreateFineTuningJob, owner: Principal, feedback: Callable[[Principal, str], list[dict[str, Any]]]
    ) -> OpenAIFineTuningJob:
        try:
            self.service.base_config(body.model)
        except InvalidRequest as exc:  # Winnow names it base_model
            raise InvalidRequest(exc.message.replace("base_model", "model", 1), exc.details, param="model") from None
        spec = to_request(body, self.files, owner.id)
        return render(self.service.queue(spec, owner, feedback, body.metadata))

    def get(self, job_id: str, owner: Principal) -> OpenAIFineTuningJob:
        return self.service.jobs.get(job_id, owner, "ft", render)

    def jobs(self, owner: Principal, limit: int, after: str | None) -> tuple[list[OpenAIFineTuningJob], bool]:
        page = self.service.jobs.list(owner, Cursor(limit=limit, after=after), JobFilter(), "ft", render)
        return page.rows, page.has_more

    def cancel(self, job_id: str, owner: Principal) -> OpenAIFineTuningJob:
        return self.service.jobs.cancel(job_id, owner, "ft", render)

    def _events(self, job_id: str, owner: Principal) -> list[FineTuningEvent]:
        found, _ = self.service.events(job_id, owner, 0, 1 << 62)
        return found

    def events(
        self, job_id: str, owner: Principal, after: str | None, limit: int
    ) -> tuple[list[OpenAIFineTuningEvent], bool]:
        """Newest first, as OpenAI lists them; ``after``: the events older than that one."""
        newest = _after([event(e) for e in reversed(self._events(job_id, owner))], after)
        return newest[:limit], len(newest) > limit

    def checkpoints(
        self, job_id: str, owner: Principal, after: str | None, limit: int
    ) -> tuple[list[OpenAICheckpoint], bool]:
        found = _after(checkpoints(self.get(job_id, owner), self._events(job_id, owner)), after)
        return found[:limit], len(found) > limit


def _after(items: list[T], after: str | None) -> list[T]:
    if after is None:
        return items
    for number, item in enumerate(items):
        if item.id == after:
            return items[number + 1 :]
    raise InvalidRequest("after names nothing in this list", f"after={after!r}", param="after")

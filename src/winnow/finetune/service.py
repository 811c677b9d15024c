"""Fine-tuning jobs in the shared job store (kind ``ft``): the same queue, leases, cancellation and
workers as SDG jobs and evaluations. Submitting checks what is cheap (the base model, that the data
exists and is the key's) and answers at once; the worker that takes the job checks the data line by
line and writes the normalized training set into the job's folder (``winnow.finetune.runner``), then
trains (``winnow.finetune.trainer``) and registers the new model in the database, where every
process's registry finds it."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import delete, select

from winnow.auth import Principal
from winnow.auth.paths import authorize_client_path
from winnow.config import ModelConfig, Settings
from winnow.db import Database, FineTunedModel, Job
from winnow.db.paging import Cursor, Page
from winnow.errors import Conflict, InvalidRequest, ModelNotFound, NotFound
from winnow.finetune.data import TrainingSet
from winnow.jobs.store import JobFilter, JobStore
from winnow.jobs.views import lifecycle
from winnow.models.registry import ModelRegistry
from winnow.schemas.finetune import FineTuningEvent, FineTuningJob, FineTuningJobRequest, Progress
from winnow.sdg.inputs import PromptFile
from winnow.sdg.outputs import preference_path

TRAIN_FILE = "train.jsonl"
VALIDATION_FILE = "validation.jsonl"
EVENTS_FILE = "events.jsonl"
FEEDBACK_FILE = "feedback.jsonl"  # a feedback export's rows, as submitted, until the worker prepares them
LOSS_CURVE = "loss.png"
MAX_EVENTS = 1000  # per page of /events


def job_paths(job_dir: Path) -> dict[str, Path]:
    return {
        "train": job_dir / TRAIN_FILE,
        "validation": job_dir / VALIDATION_FILE,
        "events": job_dir / EVENTS_FILE,
        "loss_curve": job_dir / LOSS_CURVE,
        "work": job_dir / "work",
    }


def model_id_for(base: str, suffix: str | None, job_id: str) -> str:
    """``<base>:ft-<suffix>-<8 hex of the job>`` (without a suffix: ``<base>:ft-<8 hex>``)."""
    short = job_id.rsplit("-", 1)[-1][:8]
    return f"{base}:ft-{suffix}-{short}" if suffix else f"{base}:ft-{short}"


def append_event(path: Path, message: str, kind: str = "message", level: str = "info", data: Any = None) -> None:
    event = {"created_at": int(time.time()), "level": level, "type": kind, "message": message, "data": data}
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as handle:
        handle.write(orjson.dumps(event, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")


def read_events(path: Path, job_id: str, after: int, limit: int) -> tuple[list[FineTuningEvent], bool]:
    """Events in order, from number ``after`` (0: the first); and whether more follow."""
    if not path.exists():
        return [], False
    events: list[FineTuningEvent] = []
    with path.open("rb") as handle:
        for number, line in enumerate(handle):
            if number < after or not line.endswith(b"\n"):
                continue  # an event being written has no newline yet
            if len(events) == limit:
                return events, True
            events.append(FineTuningEvent(id=f"{job_id}:{number}", **orjson.loads(line)))
    return events, False


def render(job: Job) -> FineTuningJob:
    """A job's row as the API shows it."""
    spec = FineTuningJobRequest.model_validate(job.params)
    state: dict[str, Any] = job.checkpoint or {}
    done = job.status == "completed"
    return FineTuningJob(
        id=job.id,
        base_model=spec.base_model,
        method=spec.method,
        **lifecycle(job),
        fine_tuned_model=state.get("fine_tuned_model") if done else None,
        training_rows=job.prompts_total,
        validation_rows=int(state.get("validation_rows", 0)),
        hyperparameters=spec.hyperparameters.model_dump(mode="json"),
        progress=Progress.model_validate(state.get("progress", {})),
        metrics=state.get("metrics") if done else None,
        loss_curve=f"/api/v1/fine_tuning/jobs/{job.id}/loss_curve" if done and state.get("loss_curve") else None,
        attempts=job.attempts,
    )


class FineTuningService:
    def __init__(self, db: Database, settings: Settings, jobs: JobStore, models: ModelRegistry) -> None:
        self.db = db
        self.settings = settings
        self.jobs = jobs
        self.models = models

    # -- submit ---------------------------------------------------------------------------------
    def base_config(self, base_model: str) -> ModelConfig:
        """The base's config: a local transformers model (configured, or fine-tuned and visible)."""
        try:
            config = self.models.config(base_model)
        except ModelNotFound as exc:
            raise InvalidRequest(f"base_model: {exc.message}", exc.details) from None
        if config.provider != "transformers":
            raise InvalidRequest(
                f"base_model {base_model!r} cannot be fine-tuned here",
                f"its provider is {config.provider}; Winnow trains local transformers models "
                "(a commercial model is fine-tuned by its vendor)",
            )
        return config

    def _chat(self, base: ModelConfig) -> bool:
        """Whether the base serves through a chat template (then training rows are conversations)."""
        from winnow.usage.tokens import Tokenizer, prompt_tokens

        counter = prompt_tokens(base)
        if not isinstance(counter, Tokenizer):
            raise InvalidRequest(f"base_model {base.id!r} has no tokenizer on this server", str(base.path))
        return counter.encoder.use_chat_template

    def _source(
        self, spec: FineTuningJobRequest, owner: Principal, feedback: Callable[[Principal, str], list[dict[str, Any]]]
    ) -> tuple[Path | list[dict[str, Any]], str]:
        """The training rows' source and the field to name in errors."""
        if spec.training_file:
            path = authorize_client_path(spec.training_file, self.settings, owner, self.jobs.owner_of, "training_file")
            if not path.is_file():
                raise InvalidRequest("training_file does not exist", spec.training_file)
            return path, "training_file"
        if spec.sdg_job:
            job = self._sdg_job(spec.sdg_job, owner)
            output = Path(job.output_path)
            if spec.method == "dpo":
                pairs = preference_path(output)
                if not pairs.exists():
                    raise InvalidRequest(
                        "sdg_job has no preference output",
                        f"{spec.sdg_job} was submitted without outputs: [preference]; method dpo needs its pairs",
                    )
                return pairs, "sdg_job"
            return output, "sdg_job"
        return feedback(owner, "preference" if spec.method == "dpo" else "sft"), "feedback"

    def _sdg_job(self, job_id: str, owner: Principal) -> Job:
        with self.db.session() as session:
            job = session.get(Job, job_id)
            if job is None or job.kind != "sdg" or (job.owner_key_id != owner.id and not owner.is_admin):
                raise InvalidRequest("sdg_job not found", job_id)
            if job.status != "completed":
                raise InvalidRequest("sdg_job has not completed", f"{job_id} is {job.status}")
            session.expunge(job)
            return job

    def submit(
        self,
        spec: FineTuningJobRequest,
        owner: Principal,
        feedback: Callable[[Principal, str], list[dict[str, Any]]],
    ) -> FineTuningJob:
        """Check what is cheap to check (the base model, the sources exist and are the key's to read)
        and queue the job; the worker that takes it checks and normalizes the rows (stage
        ``preparing``), streaming, and fails the job naming the bad lines if any are."""
        return render(self.queue(spec, owner, feedback))

    def queue(
        self,
        spec: FineTuningJobRequest,
        owner: Principal,
        feedback: Callable[[Principal, str], list[dict[str, Any]]],
        metadata: dict[str, str] | None = None,
    ) -> Job:
        """``submit``, returning the job's row; ``metadata`` (OpenAI's) is kept with the job."""
        base = self.base_config(spec.base_model)
        chat = self._chat(base)
        source, field = self._source(spec, owner, feedback)
        validation = None
        if spec.validation_file:
            validation = authorize_client_path(
                spec.validation_file, self.settings, owner, self.jobs.owner_of, "validation_file"
            )
            if not validation.is_file():
                raise InvalidRequest("validation_file does not exist", spec.validation_file)
        if isinstance(source, Path) and not source.is_file():
            raise InvalidRequest(f"{field} has no rows file", "it is gone from the data dir")
        if isinstance(source, Path) and source.stat().st_size == 0:
            raise InvalidRequest(f"{field} has no training rows", "the file is empty")
        job_id = self.jobs.new_id("ft")
        if not isinstance(source, Path):  # the feedback export: kept beside the job for its worker
            source = _write_rows(source, self.jobs.job_dir(job_id) / FEEDBACK_FILE)
        prepare = {
            "source": str(source),
            "field": field,
            "validation": str(validation) if validation else None,
            "chat": chat,
        }
        queued = PromptFile(path=source, rows=0, size=source.stat().st_size, sha256="")
        state: dict[str, Any] = {"prepare": prepare, **({"metadata": metadata} if metadata else {})}
        return self.jobs.create(spec, queued, owner, "ft", job_id=job_id, checkpoint=state)

    # -- the API's reads ------------------------------------------------------------------------
    def get(self, job_id: str, owner: Principal) -> FineTuningJob:
        return self.jobs.get(job_id, owner, "ft", render)

    def list_jobs(self, owner: Principal, cursor: Cursor, where: JobFilter) -> Page[FineTuningJob]:
        return self.jobs.list(owner, cursor, where, "ft", render)

    def cancel(self, job_id: str, owner: Principal) -> FineTuningJob:
        return self.jobs.cancel(job_id, owner, "ft", render)

    def events(self, job_id: str, owner: Principal, after: int, limit: int) -> tuple[list[FineTuningEvent], bool]:
        self.jobs.get(job_id, owner, "ft", render)  # 404 unless the key's
        return read_events(job_paths(self.jobs.job_dir(job_id))["events"], job_id, after, limit)

    def loss_curve(self, job_id: str, owner: Principal) -> Path:
        self.jobs.get(job_id, owner, "ft", render)
        path = job_paths(self.jobs.job_dir(job_id))["loss_curve"]
        if not path.exists():
            raise Conflict("The job has no loss curve yet", "it is drawn when the job completes")
        return path

    def running_progress(self) -> dict[tuple[str, ...], float]:
        """(job, field) -> value for the running jobs (for /metrics)."""
        out: dict[tuple[str, ...], float] = {}
        with self.db.session() as session:
            rows = session.execute(
                select(Job.id, Job.checkpoint).where(Job.kind == "ft", Job.status == "running")
            ).all()
        for job_id, state in rows:
            for name, value in ((state or {}).get("progress") or {}).items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    out[(job_id, name)] = float(value)
        return out

    # -- models ---------------------------------------------------------------------------------
    def register(self, job: Job, config: ModelConfig) -> None:
        with self.db.session() as session:
            session.merge(
                FineTunedModel(
                    id=config.id,
                    base_model=str(job.params["base_model"]),
                    job_id=job.id,
                    owner_key_id=job.owner_key_id,
                    config=config.model_dump(mode="json"),
                    created_at=datetime.now(UTC),
                )
            )

    def delete_model(self, model_id: str, owner: Principal) -> None:
        """Delete a fine-tuned model: its row (every process stops serving it) and its files."""
        with self.db.session() as session:
            row = session.get(FineTunedModel, model_id)
            if row is None or (row.owner_key_id != owner.id and not owner.is_admin):
                if model_id in self.settings_model_ids():
                    raise InvalidRequest("Only fine-tuned models can be deleted", f"{model_id} is configured")
                raise NotFound(f"Model {model_id!r} not found", "no fine-tuned model of yours has this id")
            folder = model_dir(self.settings, model_id)
            session.execute(delete(FineTunedModel).where(FineTunedModel.id == model_id))
        self.models.forget(model_id)
        shutil.rmtree(folder, ignore_errors=True)

    def settings_model_ids(self) -> set[str]:
        return {m.id for m in self.settings.models}

    def owned_models(self, owner: Principal) -> list[str]:
        with self.db.session() as session:
            query = select(FineTunedModel.id).order_by(FineTunedModel.created_at)
            if not owner.is_admin:
                query = query.where(FineTunedModel.owner_key_id == owner.id)
            return list(session.scalars(query))


def model_dir(settings: Settings, model_id: str) -> Path:
    """Where a fine-tuned model's files live: ``<data dir>/models/<id with : as __>``."""
    return settings.data_dir / "models" / re.sub(r"[^A-Za-z0-9._-]", "__", model_id)


def prompt_file(train: TrainingSet) -> PromptFile:
    return PromptFile(path=train.path, rows=train.rows, size=train.path.stat().st_size, sha256=train.sha256)


def _write_rows(rows: list[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        for row in rows:
            out.write(orjson.dumps(row) + b"\n")
    return path

"""SDG jobs as a service: validate and plan a job, and keep the job store (submit, status, list,
cancel, claim, checkpoint). The HTTP routes, the CLI and the workers all go through here."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import object_session

from winnow.auth import Principal
from winnow.config import Settings
from winnow.db import Database, SdgJob
from winnow.db.paging import Cursor, Page, keyset_page
from winnow.errors import Conflict, InvalidRequest, ModelNotFound, NotFound
from winnow.models.embedding import refuse_generation
from winnow.models.registry import ModelRegistry
from winnow.schemas.sdg import EVAL_ID_PATTERN, JOB_ID_PATTERN, JobCounts, JobDetails, JobEstimate, SubmitJobRequest
from winnow.sdg.filters import GlobalFilter, build_filter, is_global
from winnow.sdg.inputs import PromptFile, resolve_inside, validate_file
from winnow.sdg.ray_executor import RayRunner, ray_module
from winnow.sdg.reward import RewardModelRegistry
from winnow.sdg.rows import Candidate
from winnow.sdg.runner import Checkpoint, JobCancelled, JobPlan, LocalRunner, Progress, add_counts
from winnow.sdg.scoring import resolve_scoring
from winnow.sdg.shards import fair_job, shard_states
from winnow.usage.recorder import UsageEvent, UsageRecorder, insert_rows
from winnow.usage.service import UsageService
from winnow.usage.tokens import prompt_tokens

JOB_ID = re.compile(JOB_ID_PATTERN)
EVAL_ID = re.compile(EVAL_ID_PATTERN)
FT_ID = re.compile(r"^ftjob-[0-9a-f]{24}$")
# Per job kind: its id prefix and pattern, what people call it, and its output's name in the job dir.
KINDS: dict[str, tuple[str, re.Pattern[str], str, str]] = {
    "sdg": ("job", JOB_ID, "Job", "output.jsonl"),
    "eval": ("eval", EVAL_ID, "Evaluation", "results.jsonl"),
    "ft": ("ftjob", FT_ID, "Fine-tuning job", "model"),
}
T = TypeVar("T")
TERMINAL = ("completed", "failed", "cancelled")


class JobLost(Exception):
    """Another worker holds this job now (our lease ran out)."""


def split_filter(spec: SubmitJobRequest) -> tuple[Callable[[list[Candidate]], list[Candidate]], GlobalFilter | None]:
    """The filtering function as (what runs on each chunk, what needs the whole dataset or None)."""
    built = build_filter(spec.filtering_function.name, spec.filtering_function.params)
    if is_global(built):
        return built.prefilter, built
    return built, None


def check_spec(
    spec: SubmitJobRequest, settings: Settings, models: ModelRegistry, rewards: RewardModelRegistry
) -> PromptFile:
    """Everything that can be wrong with a job, found before it starts (400s, never a failed job)."""
    try:
        refuse_generation(models.config(spec.model))
    except ModelNotFound as exc:
        raise InvalidRequest(exc.message, exc.details) from None
    rewards.check(spec.reward_model)
    if (spec.executor or settings.executor) == "ray":
        ray_module()
    resolve_scoring(spec.scoring_function)
    split_filter(spec)
    path = resolve_inside(spec.prompts_path, settings.effective_data_roots)
    return validate_file(path, prompt_tokens(models.config(spec.model)), spec.system_prompt)


def build_plan(
    spec: SubmitJobRequest, prompts: PromptFile, models: ModelRegistry, rewards: RewardModelRegistry
) -> JobPlan:
    scoring, arg = resolve_scoring(spec.scoring_function)
    chunk_filter, global_filter = split_filter(spec)
    return JobPlan(
        spec=spec,
        prompts=prompts.path,
        prompts_total=prompts.rows,
        provider=models.provider(spec.model),
        reward=rewards.get(spec.reward_model),
        scoring=scoring,
        scoring_arg=arg,
        chunk_filter=chunk_filter,
        global_filter=global_filter,
    )


def estimate(spec: SubmitJobRequest, prompts: PromptFile, usage: UsageService, key_id: int) -> JobDetails:
    """A dry run's answer: the job's most tokens and cost against the key's budget, with the prompts'
    input tokens as the job will count and bill them (``winnow.usage.tokens``). Nothing is queued."""
    input_tokens = prompts.input_tokens
    if input_tokens is None:
        raise ValueError("the prompts file was checked without the model's token counter")
    max_output = prompts.rows * spec.num_generations * spec.max_gen_len
    price = usage.prices.for_model(spec.model)
    standing = usage.budget_status(key_id)
    max_cost = price.cost(input_tokens, max_output)
    remaining_usd, remaining_tokens = standing.get("remaining_usd"), standing.get("remaining_tokens")
    fits = (remaining_usd is None or max_cost <= remaining_usd) and (
        remaining_tokens is None or input_tokens + max_output <= remaining_tokens
    )
    return JobDetails(
        job_id="dry-run",
        created=_now(),
        status="dry_run",
        stage="dry_run",
        counts=JobCounts(prompts_total=prompts.rows),
        params=spec.model_dump(mode="json"),
        estimate=JobEstimate(
            prompts=prompts.rows,
            generations=prompts.rows * spec.num_generations,
            input_tokens=input_tokens,
            max_output_tokens=max_output,
            price_input_per_mtok=price.input,
            price_output_per_mtok=price.output,
            input_cost_usd=round(price.cost(input_tokens, 0), 10),
            max_cost_usd=round(max_cost, 10),
            budget_remaining_usd=remaining_usd,
            budget_remaining_tokens=remaining_tokens,
            fits_budget=fits,
        ),
    )


def make_runner(
    plan: JobPlan,
    settings: Settings,
    work: Path,
    output: Path,
    checkpoint: Checkpoint,
    on_progress: Callable[[Progress], None] | None = None,
    rows: tuple[int, int] | None = None,
    final: bool = True,
) -> LocalRunner:
    """The runner of the job's executor (its own ``executor``, else the config's)."""
    if (plan.spec.executor or settings.executor) == "ray":
        return RayRunner(plan, work, output, checkpoint, on_progress, rows, final, settings=settings)
    return LocalRunner(plan, work, output, checkpoint, on_progress, rows, final)


def _now() -> datetime:
    return datetime.now(UTC)


def _progress(job: SdgJob) -> tuple[JobCounts, float]:
    """Counts and seconds worked so far: the job's own checkpoint (a finished sharded job keeps its
    final counts there), else the sum over its shards' checkpoints."""
    checkpoint = job.checkpoint or {}
    session = object_session(job)
    if "counts" not in checkpoint and job.kind == "sdg" and session is not None:
        counts = add_counts(JobCounts(prompts_total=job.prompts_total), shard_states(session, job.id))
        elapsed = (_now() - _aware(job.started_at)).total_seconds() if job.started_at else 0.0
        return counts, elapsed
    counts = JobCounts.model_validate(checkpoint.get("counts", {"prompts_total": job.prompts_total}))
    counts.prompts_total = job.prompts_total
    return counts, float(checkpoint.get("timings", {}).get("total_s", 0.0))


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _utc(value: datetime) -> datetime:
    return _aware(value).astimezone(UTC)


@dataclass(frozen=True)
class JobFilter:
    """What a job list may be narrowed to: a status, a model the job uses, a window of creation times."""

    status: str | None = None
    model: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


def _models_of(params: dict[str, Any] | None) -> set[str]:
    """The models a job names: an SDG job's model, an evaluation's models, a fine-tuning job's base model."""
    params = params or {}
    named = [params.get("model"), params.get("base_model"), *(params.get("models") or [])]
    return {str(name) for name in named if name}


def details(job: SdgJob) -> JobDetails:
    counts, elapsed = _progress(job)
    eta = None
    if job.status == "running" and counts.prompts_read and elapsed:
        eta = round(elapsed / counts.prompts_read * (job.prompts_total - counts.prompts_read), 1)
    return JobDetails(
        job_id=job.id,
        created=job.created_at,
        status=job.status,
        output_file_path=job.output_path if job.status == "completed" else None,
        stage=job.stage,
        counts=counts,
        eta_seconds=eta,
        error=job.error,
        started=job.started_at,
        finished=job.finished_at,
        duration_seconds=_duration(job),
        params=job.params,
    )


def _duration(job: SdgJob) -> float | None:
    if job.started_at is None:
        return None
    end = _aware(job.finished_at) if job.finished_at is not None else _now()
    return round(max((end - _aware(job.started_at)).total_seconds(), 0.0), 3)


class JobStore:
    """The sdg_jobs table: ownership, lifecycle, leases and checkpoints."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    def job_dir(self, job_id: str) -> Path:
        return self.settings.data_dir / "jobs" / job_id

    def owner_of(self, job_id: str) -> int | None:
        """The key that owns a job (an SDG job or an evaluation), None when there is no such job."""
        with self.db.session() as session:
            owner: int | None = session.scalar(select(SdgJob.owner_key_id).where(SdgJob.id == job_id))
            return owner

    @staticmethod
    def new_id(kind: str) -> str:
        return f"{KINDS[kind][0]}-{uuid.uuid4().hex[:24]}"

    def create(
        self,
        spec: BaseModel,
        prompts: PromptFile,
        owner: Principal,
        kind: str = "sdg",
        job_id: str | None = None,
        checkpoint: dict[str, Any] | None = None,
    ) -> SdgJob:
        """Queue a job (``kind`` sdg, eval or ft) and return its row, detached."""
        job_id = job_id or self.new_id(kind)
        job = SdgJob(
            id=job_id,
            kind=kind,
            owner_key_id=owner.id,
            params=spec.model_dump(mode="json"),
            status="queued",
            stage="queued",
            prompts_path=str(prompts.path),
            prompts_total=prompts.rows,
            prompts_sha256=prompts.sha256,
            output_path=str(self.job_dir(job_id) / KINDS[kind][3]),
            checkpoint=checkpoint or {},
            cancel_requested=False,
            attempts=0,
            output_bytes=0,
            created_at=_now(),
            updated_at=_now(),
        )
        with self.db.session() as session:
            session.add(job)
            session.flush()
            session.expunge(job)
            return job

    def _owned(self, session: Any, job_id: str, owner: Principal, kind: str) -> SdgJob:
        _, pattern, noun, _ = KINDS[kind]
        if not pattern.match(job_id):
            raise InvalidRequest(f"Invalid {noun.lower()} id", f"expected {pattern.pattern}")
        job: SdgJob | None = session.get(SdgJob, job_id)
        if job is None or job.kind != kind or (job.owner_key_id != owner.id and not owner.is_admin):
            raise NotFound(f"{noun} not found", job_id)
        return job

    def get(self, job_id: str, owner: Principal, kind: str, render: Callable[[SdgJob], T]) -> T:
        with self.db.session() as session:
            return render(self._owned(session, job_id, owner, kind))

    def row(self, job_id: str) -> SdgJob:
        """A job's row, detached (for workers)."""
        with self.db.session() as session:
            job = session.get(SdgJob, job_id)
            if job is None:
                raise NotFound("Job not found", job_id)
            session.expunge(job)
            return job

    def output(self, job_id: str, owner: Principal, kind: str = "sdg", ended: tuple[str, ...] = ("completed",)) -> Path:
        """Where a job's output is (or would be), once its status is one of ``ended``."""
        with self.db.session() as session:
            job = self._owned(session, job_id, owner, kind)
            if job.status not in ended:
                raise Conflict("The job has no output yet", f"status {job.status}")
            return Path(job.output_path)

    def list(
        self,
        owner: Principal,
        cursor: Cursor,
        where: JobFilter,
        kind: str,
        render: Callable[[SdgJob], T],
    ) -> Page[T]:
        """A page of the jobs of ``kind`` the caller may see (a key: its own; an admin: all), newest first."""
        scope = [SdgJob.kind == kind] + ([] if owner.is_admin else [SdgJob.owner_key_id == owner.id])
        filters = []
        if where.status:
            filters.append(SdgJob.status == where.status)
        if where.created_after is not None:
            filters.append(SdgJob.created_at >= _utc(where.created_after))
        if where.created_before is not None:
            filters.append(SdgJob.created_at < _utc(where.created_before))
        keep = None if where.model is None else (lambda job: where.model in _models_of(job.params))
        with self.db.session() as session:
            page = keyset_page(session, SdgJob, scope=scope, filters=filters, cursor=cursor, keep=keep)
            return page.map(render)

    def cancel(self, job_id: str, owner: Principal, kind: str, render: Callable[[SdgJob], T]) -> T:
        with self.db.session() as session:
            job = self._owned(session, job_id, owner, kind)
            if job.status in TERMINAL:
                raise Conflict("The job has already ended", f"status {job.status}")
            job.cancel_requested = True
            if job.status in ("queued", "paused"):
                job.status, job.stage, job.finished_at = "cancelled", "cancelled", _now()
            job.updated_at = _now()
            return render(job)

    def count_by_status(self) -> dict[str, float]:
        """Jobs per status, every status present (for /metrics)."""
        counts = dict.fromkeys(("queued", "running", "paused", *TERMINAL), 0.0)
        with self.db.session() as session:
            for status, count in session.execute(select(SdgJob.status, func.count()).group_by(SdgJob.status)):
                counts[status] = float(count)
        return counts

    # -- workers ----------------------------------------------------------------------------
    def claim(self, worker: str, job_id: str | None = None) -> SdgJob | None:
        """Atomically take the oldest queued evaluation or fine-tuning job (or ``job_id``), or a running
        one whose lease ran out, or a paused one that is due. (SDG jobs are shared by shards:
        ``winnow.sdg.shards``.)"""
        now = _now()
        whole = SdgJob.kind.in_(("eval", "ft"))
        claimable = (
            whole
            & ~SdgJob.cancel_requested
            & or_(
                SdgJob.status == "queued",
                (SdgJob.status == "running") & (SdgJob.lease_until < now),
                (SdgJob.status == "paused") & (SdgJob.resume_at <= now),
            )
        )
        with self.db.session() as session:
            # A cancelled job whose worker died (or stopped renewing) is never run again: it ends here.
            session.execute(
                update(SdgJob)
                .where(whole, SdgJob.cancel_requested, SdgJob.status.in_(("queued", "running", "paused")))
                .where(or_(SdgJob.status != "running", SdgJob.lease_until.is_(None), SdgJob.lease_until < now))
                .values(status="cancelled", stage="cancelled", finished_at=now, updated_at=now, lease_until=None)
                .execution_options(synchronize_session=False)
            )
            candidate = fair_job(claimable) if job_id is None else job_id
            claimed = session.execute(
                update(SdgJob)
                .where(SdgJob.id == candidate, claimable)
                .values(
                    status="running",
                    worker=worker,
                    lease_until=now + timedelta(seconds=self.settings.job_lease_s),
                    attempts=SdgJob.attempts + 1,
                    resume_at=None,
                    error=None,
                    updated_at=now,
                )
                .returning(SdgJob.id)
            ).scalar_one_or_none()
            if claimed is None:
                return None
            job = session.get(SdgJob, claimed)
            assert job is not None
            if job.started_at is None:
                job.started_at = now
            session.flush()
            session.expunge(job)
            return job

    def expire_leases_of(self, worker_prefix: str, alive: Callable[[str], bool]) -> int:
        """Free the jobs of workers on this host that are gone (so a restart resumes at once)."""
        with self.db.session() as session:
            rows = session.scalars(
                select(SdgJob).where(SdgJob.status == "running", SdgJob.worker.like(f"{worker_prefix}%"))
            ).all()
            freed = 0
            for job in rows:
                if job.worker and not alive(job.worker):
                    job.lease_until = _now() - timedelta(seconds=1)
                    freed += 1
            return freed

    def renew(
        self,
        job_id: str,
        worker: str,
        checkpoint: dict[str, Any] | None = None,
        stage: str | None = None,
        usage: Sequence[dict[str, Any]] = (),
    ) -> bool:
        """Extend our lease (and save a checkpoint, with the usage rows of the chunks it adds, in one
        transaction). Returns whether cancellation was requested; raises JobLost if another worker
        holds the job (then nothing is saved)."""
        values: dict[str, Any] = {
            "lease_until": _now() + timedelta(seconds=self.settings.job_lease_s),
            "updated_at": _now(),
        }
        if checkpoint is not None:
            values["checkpoint"] = checkpoint
        if stage is not None:
            values["stage"] = stage
        with self.db.session() as session:
            cancel = session.execute(
                update(SdgJob)
                .where(SdgJob.id == job_id, SdgJob.worker == worker, SdgJob.status == "running")
                .values(**values)
                .returning(SdgJob.cancel_requested)
            ).scalar_one_or_none()
            if cancel is not None:
                insert_rows(session, usage)
        if cancel is None:
            raise JobLost(job_id)
        return bool(cancel)

    def record_input(self, job_id: str, worker: str, prompts: PromptFile, checkpoint: dict[str, Any]) -> None:
        """The input a worker prepared for a job it holds (a fine-tuning job's normalized rows)."""
        with self.db.session() as session:
            done = session.execute(
                update(SdgJob)
                .where(SdgJob.id == job_id, SdgJob.worker == worker, SdgJob.status == "running")
                .values(
                    prompts_path=str(prompts.path),
                    prompts_total=prompts.rows,
                    prompts_sha256=prompts.sha256,
                    checkpoint=checkpoint,
                    updated_at=_now(),
                )
                .returning(SdgJob.id)
            ).scalar_one_or_none()
        if done is None:
            raise JobLost(job_id)

    def release(self, job_id: str, worker: str) -> None:
        """Give a running job back (its lease ends now) so the next worker resumes it at once."""
        with self.db.session() as session:
            session.execute(
                update(SdgJob)
                .where(SdgJob.id == job_id, SdgJob.worker == worker, SdgJob.status == "running")
                .values(lease_until=_now() - timedelta(seconds=1), updated_at=_now())
            )

    def pause(self, job_id: str, worker: str | None, reason: str, resume_at: datetime | None) -> None:
        """Hand a running job back until ``resume_at`` (None: until woken), keeping its checkpoint
        (``worker`` None: a sharded job, whose job row no worker holds)."""
        holder = SdgJob.worker == worker if worker is not None else SdgJob.worker.is_(None)
        with self.db.session() as session:
            session.execute(
                update(SdgJob)
                .where(SdgJob.id == job_id, holder, SdgJob.status == "running")
                .values(
                    status="paused",
                    stage="paused",
                    error=reason,
                    resume_at=resume_at,
                    lease_until=None,
                    worker=None,
                    updated_at=_now(),
                )
            )

    def wake_paused(self, owner_key_id: int) -> int:
        """Make a key's paused jobs claimable now (its budget changed); returns how many."""
        with self.db.session() as session:
            result = session.execute(
                update(SdgJob)
                .where(SdgJob.owner_key_id == owner_key_id, SdgJob.status == "paused")
                .values(resume_at=_now(), updated_at=_now())
            )
            return int(getattr(result, "rowcount", 0) or 0)

    def finish(
        self,
        job_id: str,
        worker: str | None,
        status: str,
        error: str | None = None,
        output_bytes: int = 0,
        checkpoint: dict[str, Any] | None = None,
    ) -> None:
        """End a job: the worker holding its lease, or (``worker`` None, a shard's worker) any
        worker while the job still runs."""
        holder = SdgJob.worker == worker if worker is not None else SdgJob.status.in_(("running", "paused"))
        values: dict[str, Any] = {
            "status": status,
            "stage": status,
            "error": error,
            "finished_at": _now(),
            "updated_at": _now(),
            "lease_until": None,
            "output_bytes": output_bytes,
        }
        if checkpoint is not None:
            values["checkpoint"] = checkpoint
        with self.db.session() as session:
            session.execute(update(SdgJob).where(SdgJob.id == job_id, holder).values(**values))


class DbCheckpoint:
    """A runner checkpoint kept in the job's row, saved in one transaction with the usage rows of the
    chunks it adds; every save renews the lease."""

    def __init__(self, store: JobStore, job: SdgJob, worker: str, recorder: UsageRecorder) -> None:
        self.store = store
        self.job_id = job.id
        self.worker = worker
        self.recorder = recorder
        self._state = dict(job.checkpoint or {})

    def load(self) -> dict[str, Any]:
        return self._state

    def save(self, state: dict[str, Any], stage: str, usage: Sequence[UsageEvent] = ()) -> None:
        def write(rows: list[dict[str, Any]]) -> bool:
            return self.store.renew(self.job_id, self.worker, state, stage, rows)

        cancelled = self.recorder.write_with(usage, write)
        self._state = state
        if cancelled:
            raise JobCancelled(self.job_id)

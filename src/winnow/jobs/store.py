"""The job store: one ``jobs`` table for every kind (``winnow.jobs.kinds``) with ownership,
lifecycle, leases, pauses and checkpoints. The HTTP routes, the CLI and the workers all go
through it; SDG jobs' shards are kept beside it (``winnow.jobs.shards``)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel
from sqlalchemy import func, or_, select, update

from winnow.auth import Principal
from winnow.config import Settings
from winnow.db import Database, Job
from winnow.db.paging import Cursor, Page, keyset_page
from winnow.errors import Conflict, InvalidRequest, NotFound
from winnow.jobs.errors import JobCancelled, JobLost
from winnow.jobs.kinds import kind as job_kind
from winnow.jobs.kinds import names
from winnow.jobs.order import fair_job, utcnow
from winnow.usage.recorder import UsageEvent, UsageRecorder, insert_rows

T = TypeVar("T")
TERMINAL = ("completed", "failed", "cancelled")


class JobInput(Protocol):
    """A job's input file as checked at submit (``winnow.sdg.inputs.PromptFile`` is one)."""

    @property
    def path(self) -> Path: ...
    @property
    def rows(self) -> int: ...
    @property
    def sha256(self) -> str: ...


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


class JobStore:
    """The jobs table: ownership, lifecycle, leases and checkpoints."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    def job_dir(self, job_id: str) -> Path:
        return self.settings.data_dir / "jobs" / job_id

    def owner_of(self, job_id: str) -> int | None:
        """The key that owns a job (an SDG job or an evaluation), None when there is no such job."""
        with self.db.session() as session:
            owner: int | None = session.scalar(select(Job.owner_key_id).where(Job.id == job_id))
            return owner

    @staticmethod
    def new_id(kind: str) -> str:
        return f"{job_kind(kind).prefix}-{uuid.uuid4().hex[:24]}"

    def create(
        self,
        spec: BaseModel,
        prompts: JobInput,
        owner: Principal,
        kind: str = "sdg",
        job_id: str | None = None,
        checkpoint: dict[str, Any] | None = None,
    ) -> Job:
        """Queue a job (``kind`` sdg, eval or ft) and return its row, detached."""
        job_id = job_id or self.new_id(kind)
        job = Job(
            id=job_id,
            kind=kind,
            owner_key_id=owner.id,
            params=spec.model_dump(mode="json"),
            status="queued",
            stage="queued",
            prompts_path=str(prompts.path),
            prompts_total=prompts.rows,
            prompts_sha256=prompts.sha256,
            output_path=str(self.job_dir(job_id) / job_kind(kind).output),
            checkpoint=checkpoint or {},
            cancel_requested=False,
            attempts=0,
            output_bytes=0,
            created_at=utcnow(),
            updated_at=utcnow(),
        )
        with self.db.session() as session:
            session.add(job)
            session.flush()
            session.expunge(job)
            return job

    def _owned(self, session: Any, job_id: str, owner: Principal, kind: str) -> Job:
        pattern, noun = job_kind(kind).pattern, job_kind(kind).noun
        if not pattern.match(job_id):
            raise InvalidRequest(f"Invalid {noun.lower()} id", f"expected {pattern.pattern}")
        job: Job | None = session.get(Job, job_id)
        if job is None or job.kind != kind or (job.owner_key_id != owner.id and not owner.is_admin):
            raise NotFound(f"{noun} not found", job_id)
        return job

    def get(self, job_id: str, owner: Principal, kind: str, render: Callable[[Job], T]) -> T:
        with self.db.session() as session:
            return render(self._owned(session, job_id, owner, kind))

    def row(self, job_id: str) -> Job:
        """A job's row, detached (for workers)."""
        with self.db.session() as session:
            job = session.get(Job, job_id)
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
        render: Callable[[Job], T],
    ) -> Page[T]:
        """A page of the jobs of ``kind`` the caller may see (a key: its own; an admin: all), newest first."""
        scope = [Job.kind == kind] + ([] if owner.is_admin else [Job.owner_key_id == owner.id])
        filters = []
        if where.status:
            filters.append(Job.status == where.status)
        if where.created_after is not None:
            filters.append(Job.created_at >= _utc(where.created_after))
        if where.created_before is not None:
            filters.append(Job.created_at < _utc(where.created_before))
        keep = None if where.model is None else (lambda job: where.model in _models_of(job.params))
        with self.db.session() as session:
            page = keyset_page(session, Job, scope=scope, filters=filters, cursor=cursor, keep=keep)
            return page.map(render)

    def cancel(self, job_id: str, owner: Principal, kind: str, render: Callable[[Job], T]) -> T:
        with self.db.session() as session:
            job = self._owned(session, job_id, owner, kind)
            if job.status in TERMINAL:
                raise Conflict("The job has already ended", f"status {job.status}")
            job.cancel_requested = True
            if job.status in ("queued", "paused"):
                job.status, job.stage, job.finished_at = "cancelled", "cancelled", utcnow()
            job.updated_at = utcnow()
            return render(job)

    def count_by_status(self) -> dict[str, float]:
        """Jobs per status, every status present (for /metrics)."""
        counts = dict.fromkeys(("queued", "running", "paused", *TERMINAL), 0.0)
        with self.db.session() as session:
            for status, count in session.execute(select(Job.status, func.count()).group_by(Job.status)):
                counts[status] = float(count)
        return counts

    # -- workers ----------------------------------------------------------------------------
    def claim(self, worker: str, job_id: str | None = None) -> Job | None:
        """Atomically take the oldest queued job of a kind held whole (or ``job_id``), or a running
        one whose lease ran out, or a paused one that is due. (Sharded kinds' jobs are shared by
        shards: ``winnow.jobs.shards``.)"""
        now = utcnow()
        whole = Job.kind.in_(names(sharded=False))
        claimable = (
            whole
            & ~Job.cancel_requested
            & or_(
                Job.status == "queued",
                (Job.status == "running") & (Job.lease_until < now),
                (Job.status == "paused") & (Job.resume_at <= now),
            )
        )
        with self.db.session() as session:
            # A cancelled job whose worker died (or stopped renewing) is never run again: it ends here.
            session.execute(
                update(Job)
                .where(whole, Job.cancel_requested, Job.status.in_(("queued", "running", "paused")))
                .where(or_(Job.status != "running", Job.lease_until.is_(None), Job.lease_until < now))
                .values(status="cancelled", stage="cancelled", finished_at=now, updated_at=now, lease_until=None)
                .execution_options(synchronize_session=False)
            )
            candidate = fair_job(claimable) if job_id is None else job_id
            claimed = session.execute(
                update(Job)
                .where(Job.id == candidate, claimable)
                .values(
                    status="running",
                    worker=worker,
                    lease_until=now + timedelta(seconds=self.settings.job_lease_s),
                    attempts=Job.attempts + 1,
                    resume_at=None,
                    error=None,
                    updated_at=now,
                )
                .returning(Job.id)
            ).scalar_one_or_none()
            if claimed is None:
                return None
            job = session.get(Job, claimed)
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
                select(Job).where(Job.status == "running", Job.worker.like(f"{worker_prefix}%"))
            ).all()
            freed = 0
            for job in rows:
                if job.worker and not alive(job.worker):
                    job.lease_until = utcnow() - timedelta(seconds=1)
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
            "lease_until": utcnow() + timedelta(seconds=self.settings.job_lease_s),
            "updated_at": utcnow(),
        }
        if checkpoint is not None:
            values["checkpoint"] = checkpoint
        if stage is not None:
            values["stage"] = stage
        with self.db.session() as session:
            cancel = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.worker == worker, Job.status == "running")
                .values(**values)
                .returning(Job.cancel_requested)
            ).scalar_one_or_none()
            if cancel is not None:
                insert_rows(session, usage)
        if cancel is None:
            raise JobLost(job_id)
        return bool(cancel)

    def record_input(self, job_id: str, worker: str, prompts: JobInput, checkpoint: dict[str, Any]) -> None:
        """The input a worker prepared for a job it holds (a fine-tuning job's normalized rows)."""
        with self.db.session() as session:
            done = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.worker == worker, Job.status == "running")
                .values(
                    prompts_path=str(prompts.path),
                    prompts_total=prompts.rows,
                    prompts_sha256=prompts.sha256,
                    checkpoint=checkpoint,
                    updated_at=utcnow(),
                )
                .returning(Job.id)
            ).scalar_one_or_none()
        if done is None:
            raise JobLost(job_id)

    def release(self, job_id: str, worker: str) -> None:
        """Give a running job back (its lease ends now) so the next worker resumes it at once."""
        with self.db.session() as session:
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.worker == worker, Job.status == "running")
                .values(lease_until=utcnow() - timedelta(seconds=1), updated_at=utcnow())
            )

    def pause(self, job_id: str, worker: str | None, reason: str, resume_at: datetime | None) -> None:
        """Hand a running job back until ``resume_at`` (None: until woken), keeping its checkpoint
        (``worker`` None: a sharded job, whose job row no worker holds)."""
        holder = Job.worker == worker if worker is not None else Job.worker.is_(None)
        with self.db.session() as session:
            session.execute(
                update(Job)
                .where(Job.id == job_id, holder, Job.status == "running")
                .values(
                    status="paused",
                    stage="paused",
                    error=reason,
                    resume_at=resume_at,
                    lease_until=None,
                    worker=None,
                    updated_at=utcnow(),
                )
            )

    def wake_paused(self, owner_key_id: int) -> int:
        """Make a key's paused jobs claimable now (its budget changed); returns how many."""
        with self.db.session() as session:
            result = session.execute(
                update(Job)
                .where(Job.owner_key_id == owner_key_id, Job.status == "paused")
                .values(resume_at=utcnow(), updated_at=utcnow())
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
        holder = Job.worker == worker if worker is not None else Job.status.in_(("running", "paused"))
        values: dict[str, Any] = {
            "status": status,
            "stage": status,
            "error": error,
            "finished_at": utcnow(),
            "updated_at": utcnow(),
            "lease_until": None,
            "output_bytes": output_bytes,
        }
        if checkpoint is not None:
            values["checkpoint"] = checkpoint
        with self.db.session() as session:
            session.execute(update(Job).where(Job.id == job_id, holder).values(**values))


class DbCheckpoint:
    """A runner checkpoint kept in the job's row, saved in one transaction with the usage rows of the
    chunks it adds; every save renews the lease."""

    def __init__(self, store: JobStore, job: Job, worker: str, recorder: UsageRecorder) -> None:
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

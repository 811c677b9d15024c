"""Shards: an SDG job cut into runs of consecutive chunks that workers claim one at a time, so
several workers, on one machine or many sharing a PostgreSQL database, work on one job at once.

The life of a job: the first worker to find it queued splits it into shards (one atomic UPDATE
decides who). Workers claim queued shards, or running shards whose lease ran out, with
``SELECT ... FOR UPDATE SKIP LOCKED`` (PostgreSQL; SQLite serialises writers anyway), run them
with the local runner over the shard's rows, and checkpoint into the shard's row. When every
shard is done, one worker takes the job's own lease and merges the shards' files in shard order
into the output. Chunk numbers, and so sampling seeds, are the job's: the output is the same
whoever ran which shard, and the same as a one-worker run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, func, insert, or_, select, update
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import ScalarSelect

from winnow.config import Settings
from winnow.db import Database, JobShard, SdgJob
from winnow.sdg.runner import JobCancelled
from winnow.usage.recorder import UsageEvent, UsageRecorder, insert_rows


def oldest_job(*conditions: ColumnElement[bool]) -> ScalarSelect[Any]:
    """The id of the oldest job meeting ``conditions`` that no other transaction holds
    (``FOR UPDATE SKIP LOCKED``), as the subquery of a claiming ``UPDATE``: concurrent workers
    each take a different job, and none waits on another's lock."""
    return (
        select(SdgJob.id)
        .where(*conditions)
        .order_by(SdgJob.created_at)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )


def _owner_running(now: datetime) -> ColumnElement[Any]:
    """How much work the key owning the job (``SdgJob``, correlated) has running now: its evaluations
    and fine-tuning jobs under a live lease, and its SDG jobs' shards under one."""
    other = aliased(SdgJob)
    jobs = (
        select(func.count())
        .select_from(other)
        .where(
            other.owner_key_id == SdgJob.owner_key_id,
            other.kind.in_(("eval", "ft")),
            other.status == "running",
            other.lease_until >= now,
        )
        .correlate(SdgJob)
        .scalar_subquery()
    )
    shards = (
        select(func.count())
        .select_from(JobShard)
        .join(other, other.id == JobShard.job_id)
        .where(other.owner_key_id == SdgJob.owner_key_id, JobShard.status == "running", JobShard.lease_until >= now)
        .correlate(SdgJob)
        .scalar_subquery()
    )
    return jobs + shards


def fair_job(*conditions: ColumnElement[bool]) -> ScalarSelect[Any]:
    """Like ``oldest_job``, but the job of the key with the least work running goes first (then the
    oldest): several workers spread over the keys instead of all serving the oldest key's jobs."""
    return (
        select(SdgJob.id)
        .where(*conditions)
        .order_by(_owner_running(_now()), SdgJob.created_at)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )


def _owner_started() -> ScalarSelect[Any]:
    """How many shards the key owning the job (``SdgJob``, correlated) has had started (running or
    done) over its SDG jobs that still run: the key with the fewest goes next."""
    other = aliased(SdgJob)
    return (
        select(func.count())
        .select_from(JobShard)
        .join(other, other.id == JobShard.job_id)
        .where(other.owner_key_id == SdgJob.owner_key_id, other.status == "running", JobShard.status != "queued")
        .correlate(SdgJob)
        .scalar_subquery()
    )


class ShardLost(Exception):
    """Another worker holds the shard now, or its job stopped running (paused, cancelled, failed)."""


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ShardClaim:
    job_id: str
    shard: int
    first_row: int
    rows: int
    attempts: int
    checkpoint: dict[str, Any]


def _mine(claim: ShardClaim, worker: str) -> tuple[Any, ...]:
    """The shard, while ``worker`` holds it."""
    return (
        JobShard.job_id == claim.job_id,
        JobShard.shard == claim.shard,
        JobShard.worker == worker,
        JobShard.status == "running",
    )


def shard_states(session: Session, job_id: str) -> list[dict[str, Any]]:
    """The shards' checkpoints, in shard order."""
    query = select(JobShard.checkpoint).where(JobShard.job_id == job_id).order_by(JobShard.shard)
    return [dict(state or {}) for state in session.scalars(query)]


class ShardStore:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    def _lease(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.settings.job_lease_s)

    # -- the claim loop ------------------------------------------------------------------------
    def housekeeping(self) -> None:
        """Resume paused jobs that are due, start (split) the oldest queued job, and cancel jobs
        whose cancellation no running shard will notice."""
        now = _now()
        with self.db.session() as session:
            session.execute(
                update(SdgJob)
                .where(SdgJob.kind == "sdg", SdgJob.status == "paused", SdgJob.resume_at <= now)
                .values(status="running", stage="generating", resume_at=None, error=None, updated_at=now)
            )
            live_shard = exists(
                select(JobShard.shard).where(
                    JobShard.job_id == SdgJob.id, JobShard.status == "running", JobShard.lease_until >= now
                )
            )
            session.execute(
                update(SdgJob)
                .where(SdgJob.kind == "sdg", SdgJob.status == "running", SdgJob.cancel_requested, ~live_shard)
                .where(or_(SdgJob.worker.is_(None), SdgJob.lease_until < now))
                .values(status="cancelled", stage="cancelled", finished_at=now, updated_at=now, lease_until=None)
                .execution_options(synchronize_session=False)
            )
            self._split_one(session, now)

    def _split_one(self, session: Session, now: datetime) -> None:
        candidate = oldest_job(SdgJob.kind == "sdg", SdgJob.status == "queued")
        started = session.execute(
            update(SdgJob)
            .where(SdgJob.id == candidate, SdgJob.status == "queued")
            .values(
                status="running",
                stage="generating",
                started_at=func.coalesce(SdgJob.started_at, now),
                worker=None,
                lease_until=None,
                updated_at=now,
            )
            .returning(SdgJob.id, SdgJob.prompts_total, SdgJob.params)
            .execution_options(synchronize_session=False)
        ).first()
        if started is None:
            return
        batch = int(started.params.get("batch_size", 32))
        size = max(1, math.ceil(self.settings.job_shard_rows / batch)) * batch  # whole chunks
        if (started.params.get("executor") or self.settings.executor) == "ray":
            size = max(started.prompts_total, 1)  # one driver: Ray spreads the work itself
        rows = [
            {
                "job_id": started.id,
                "shard": index,
                "first_row": first,
                "rows": min(size, started.prompts_total - first),
                "status": "queued",
                "attempts": 0,
                "checkpoint": {},
                "updated_at": now,
            }
            for index, first in enumerate(range(0, started.prompts_total, size))
        ]
        if rows:
            session.execute(insert(JobShard), rows)

    def claim(self, worker: str) -> ShardClaim | None:
        """A free shard (queued, or running with its lease run out): of the key that has had the fewest
        shards started over its running jobs (so a small job is not queued behind every shard of a big
        one from another key), then of its oldest job, in shard order."""
        now = _now()
        free = or_(JobShard.status == "queued", and_(JobShard.status == "running", JobShard.lease_until < now))
        with self.db.session() as session:
            pick = (
                select(JobShard.job_id, JobShard.shard)
                .join(SdgJob, SdgJob.id == JobShard.job_id)
                .where(SdgJob.status == "running", SdgJob.cancel_requested.is_(False), free)
                .order_by(_owner_started(), SdgJob.created_at, JobShard.shard)
                .limit(1)
                .with_for_update(skip_locked=True, of=JobShard)
            )
            found = session.execute(pick).first()
            if found is None:
                return None
            claimed = session.execute(
                update(JobShard)
                .where(JobShard.job_id == found.job_id, JobShard.shard == found.shard, free)
                .values(
                    status="running",
                    worker=worker,
                    lease_until=self._lease(now),
                    attempts=JobShard.attempts + 1,
                    updated_at=now,
                )
                .returning(
                    JobShard.job_id,
                    JobShard.shard,
                    JobShard.first_row,
                    JobShard.rows,
                    JobShard.attempts,
                    JobShard.checkpoint,
                )
                .execution_options(synchronize_session=False)
            ).first()
            if claimed is None:
                return None
            return ShardClaim(
                claimed.job_id, claimed.shard, claimed.first_row, claimed.rows, claimed.attempts, dict(claimed[5] or {})
            )

    def claim_merge(self, worker: str) -> SdgJob | None:
        """A running job whose shards are all done and that nobody is merging: take its lease."""
        now = _now()
        pending = exists(select(JobShard.shard).where(JobShard.job_id == SdgJob.id, JobShard.status != "done"))
        split = exists(select(JobShard.shard).where(JobShard.job_id == SdgJob.id))
        free = or_(SdgJob.worker.is_(None), SdgJob.lease_until < now)
        with self.db.session() as session:
            candidate = oldest_job(
                SdgJob.kind == "sdg", SdgJob.status == "running", ~SdgJob.cancel_requested, free, split, ~pending
            )
            claimed = session.execute(
                update(SdgJob)
                .where(SdgJob.id == candidate, SdgJob.status == "running", free)
                .values(
                    worker=worker,
                    lease_until=self._lease(now),
                    stage="finalizing",
                    attempts=SdgJob.attempts + 1,
                    updated_at=now,
                )
                .returning(SdgJob.id)
                .execution_options(synchronize_session=False)
            ).scalar_one_or_none()
            if claimed is None:
                return None
            job = session.get(SdgJob, claimed)
            assert job is not None
            session.expunge(job)
            return job

    # -- while a shard runs ----------------------------------------------------------------------
    def renew(
        self,
        claim: ShardClaim,
        worker: str,
        checkpoint: dict[str, Any] | None = None,
        usage: Sequence[dict[str, Any]] = (),
    ) -> bool:
        """Extend the shard's lease (and save its checkpoint, with the usage rows of the chunks it
        adds, in one transaction); returns whether the job's cancellation was requested. ShardLost
        when another worker has the shard (then nothing is saved) or the job is not running."""
        now = _now()
        values: dict[str, Any] = {"lease_until": self._lease(now), "updated_at": now}
        if checkpoint is not None:
            values["checkpoint"] = checkpoint
        with self.db.session() as session:
            renewed = session.execute(
                update(JobShard)
                .where(*_mine(claim, worker))
                .values(**values)
                .returning(JobShard.shard)
                .execution_options(synchronize_session=False)
            ).first()
            job = session.execute(
                select(SdgJob.status, SdgJob.cancel_requested).where(SdgJob.id == claim.job_id)
            ).first()
            if renewed is not None and checkpoint is not None:
                insert_rows(session, usage)
            if renewed is not None and checkpoint is not None and job is not None and job.status == "running":
                session.execute(
                    update(SdgJob).where(SdgJob.id == claim.job_id).values(updated_at=now, stage="generating")
                )
        # Raised after the commit: a shard still ours keeps its checkpoint even when the job was
        # paused or cancelled meanwhile, so its finished chunk is neither redone nor billed twice.
        if renewed is None or job is None or job.status != "running":
            raise ShardLost(f"{claim.job_id} shard {claim.shard}")
        return bool(job.cancel_requested)

    def done(self, claim: ShardClaim, worker: str) -> None:
        with self.db.session() as session:
            finished = session.execute(
                update(JobShard)
                .where(*_mine(claim, worker))
                .values(status="done", lease_until=None, updated_at=_now())
                .returning(JobShard.shard)
                .execution_options(synchronize_session=False)
            ).first()
        if finished is None:
            raise ShardLost(f"{claim.job_id} shard {claim.shard}")

    def release(self, claim: ShardClaim, worker: str) -> None:
        """Hand the shard back now (shutdown, pause): the next worker resumes it from its checkpoint."""
        with self.db.session() as session:
            session.execute(
                update(JobShard)
                .where(*_mine(claim, worker))
                .values(status="queued", lease_until=None, updated_at=_now())
                .execution_options(synchronize_session=False)
            )

    def states(self, job_id: str) -> list[dict[str, Any]]:
        with self.db.session() as session:
            return shard_states(session, job_id)

    def expire_of(self, worker_prefix: str, alive: Callable[[str], bool]) -> int:
        """Free the shards of workers on this host that are gone."""
        freed = 0
        with self.db.session() as session:
            rows = session.scalars(
                select(JobShard).where(JobShard.status == "running", JobShard.worker.like(f"{worker_prefix}%"))
            ).all()
            for shard in rows:
                if shard.worker and not alive(shard.worker):
                    shard.status, shard.lease_until = "queued", None
                    freed += 1
        return freed


class ShardCheckpoint:
    """The local runner's checkpoint for one shard: kept in the shard's row, saved in one transaction
    with the usage rows of the chunks it adds, renewing the shard's lease."""

    def __init__(self, store: ShardStore, claim: ShardClaim, worker: str, recorder: UsageRecorder) -> None:
        self.store, self.claim, self.worker, self.recorder = store, claim, worker, recorder
        self._state = dict(claim.checkpoint)

    def load(self) -> dict[str, Any]:
        return self._state

    def save(self, state: dict[str, Any], stage: str, usage: Sequence[UsageEvent] = ()) -> None:
        def write(rows: list[dict[str, Any]]) -> bool:
            return self.store.renew(self.claim, self.worker, state, rows)

        cancelled = self.recorder.write_with(usage, write)
        self._state = state
        if cancelled:
            raise JobCancelled(self.claim.job_id)

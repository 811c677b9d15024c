"""Shards: a job of a sharded kind (SDG) cut into runs of consecutive chunks that workers claim one at a time, so
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
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, func, insert, or_, select, update
from sqlalchemy.orm import Session

from winnow.config import Settings
from winnow.db import Database, Job, JobShard
from winnow.jobs.errors import JobCancelled, ShardLost
from winnow.jobs.kinds import names
from winnow.jobs.order import oldest_job, owner_started, utcnow
from winnow.usage.recorder import UsageEvent, UsageRecorder, insert_rows


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
        now = utcnow()
        with self.db.session() as session:
            session.execute(
                update(Job)
                .where(Job.kind.in_(names(sharded=True)), Job.status == "paused", Job.resume_at <= now)
                .values(status="running", stage="generating", resume_at=None, error=None, updated_at=now)
            )
            live_shard = exists(
                select(JobShard.shard).where(
                    JobShard.job_id == Job.id, JobShard.status == "running", JobShard.lease_until >= now
                )
            )
            session.execute(
                update(Job)
                .where(Job.kind.in_(names(sharded=True)), Job.status == "running", Job.cancel_requested, ~live_shard)
                .where(or_(Job.worker.is_(None), Job.lease_until < now))
                .values(status="cancelled", stage="cancelled", finished_at=now, updated_at=now, lease_until=None)
                .execution_options(synchronize_session=False)
            )
            self._split_one(session, now)

    def _split_one(self, session: Session, now: datetime) -> None:
        candidate = oldest_job(Job.kind.in_(names(sharded=True)), Job.status == "queued")
        started = session.execute(
            update(Job)
            .where(Job.id == candidate, Job.status == "queued")
            .values(
                status="running",
                stage="generating",
                started_at=func.coalesce(Job.started_at, now),
                worker=None,
                lease_until=None,
                updated_at=now,
            )
            .returning(Job.id, Job.prompts_total, Job.params)
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
        now = utcnow()
        free = or_(JobShard.status == "queued", and_(JobShard.status == "running", JobShard.lease_until < now))
        with self.db.session() as session:
            pick = (
                select(JobShard.job_id, JobShard.shard)
                .join(Job, Job.id == JobShard.job_id)
                .where(Job.status == "running", Job.cancel_requested.is_(False), free)
                .order_by(owner_started(), Job.created_at, JobShard.shard)
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

    def claim_merge(self, worker: str) -> Job | None:
        """A running job whose shards are all done and that nobody is merging: take its lease."""
        now = utcnow()
        pending = exists(select(JobShard.shard).where(JobShard.job_id == Job.id, JobShard.status != "done"))
        split = exists(select(JobShard.shard).where(JobShard.job_id == Job.id))
        free = or_(Job.worker.is_(None), Job.lease_until < now)
        with self.db.session() as session:
            candidate = oldest_job(
                Job.kind.in_(names(sharded=True)), Job.status == "running", ~Job.cancel_requested, free, split, ~pending
            )
            claimed = session.execute(
                update(Job)
                .where(Job.id == candidate, Job.status == "running", free)
                .values(
                    worker=worker,
                    lease_until=self._lease(now),
                    stage="finalizing",
                    attempts=Job.attempts + 1,
                    updated_at=now,
                )
                .returning(Job.id)
                .execution_options(synchronize_session=False)
            ).scalar_one_or_none()
            if claimed is None:
                return None
            job = session.get(Job, claimed)
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
        now = utcnow()
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
            job = session.execute(select(Job.status, Job.cancel_requested).where(Job.id == claim.job_id)).first()
            if renewed is not None and checkpoint is not None:
                insert_rows(session, usage)
            if renewed is not None and checkpoint is not None and job is not None and job.status == "running":
                session.execute(update(Job).where(Job.id == claim.job_id).values(updated_at=now, stage="generating"))
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
                .values(status="done", lease_until=None, updated_at=utcnow())
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
                .values(status="queued", lease_until=None, updated_at=utcnow())
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

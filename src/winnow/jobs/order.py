"""Which job a worker takes next: the oldest free one, or the one of the key with the least work
running (so that several workers spread over the keys), never one another transaction holds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import ScalarSelect

from winnow.db import Job, JobShard
from winnow.jobs.kinds import names


def utcnow() -> datetime:
    return datetime.now(UTC)


def oldest_job(*conditions: ColumnElement[bool]) -> ScalarSelect[Any]:
    """The id of the oldest job meeting ``conditions`` that no other transaction holds
    (``FOR UPDATE SKIP LOCKED``), as the subquery of a claiming ``UPDATE``: concurrent workers
    each take a different job, and none waits on another's lock."""
    return (
        select(Job.id)
        .where(*conditions)
        .order_by(Job.created_at)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )


def _owner_running(at: datetime) -> ColumnElement[Any]:
    """How much work the key owning the job (``Job``, correlated) has running now: its evaluations
    and fine-tuning jobs under a live lease, and its SDG jobs' shards under one."""
    other = aliased(Job)
    jobs = (
        select(func.count())
        .select_from(other)
        .where(
            other.owner_key_id == Job.owner_key_id,
            other.kind.in_(names(sharded=False)),
            other.status == "running",
            other.lease_until >= at,
        )
        .correlate(Job)
        .scalar_subquery()
    )
    shards = (
        select(func.count())
        .select_from(JobShard)
        .join(other, other.id == JobShard.job_id)
        .where(other.owner_key_id == Job.owner_key_id, JobShard.status == "running", JobShard.lease_until >= at)
        .correlate(Job)
        .scalar_subquery()
    )
    return jobs + shards


def fair_job(*conditions: ColumnElement[bool]) -> ScalarSelect[Any]:
    """Like ``oldest_job``, but the job of the key with the least work running goes first (then the
    oldest): several workers spread over the keys instead of all serving the oldest key's jobs."""
    return (
        select(Job.id)
        .where(*conditions)
        .order_by(_owner_running(utcnow()), Job.created_at)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )


def owner_started() -> ScalarSelect[Any]:
    """How many shards the key owning the job (``Job``, correlated) has had started (running or
    done) over its SDG jobs that still run: the key with the fewest goes next."""
    other = aliased(Job)
    return (
        select(func.count())
        .select_from(JobShard)
        .join(other, other.id == JobShard.job_id)
        .where(other.owner_key_id == Job.owner_key_id, other.status == "running", JobShard.status != "queued")
        .correlate(Job)
        .scalar_subquery()
    )

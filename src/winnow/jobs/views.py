"""What every kind's API view of a job shares: where it stands, and how long it has left."""

from __future__ import annotations

from typing import Any

from winnow.db import Job


def lifecycle(job: Job) -> dict[str, Any]:
    """The fields every kind's API view shows of where a job stands."""
    return {
        "status": job.status,
        "stage": job.stage,
        "created": job.created_at,
        "started": job.started_at,
        "finished": job.finished_at,
        "error": job.error,
    }


def eta_seconds(job: Job, done: int, elapsed: float) -> float | None:
    """Seconds a running job has left at the pace so far (``done`` of its ``prompts_total`` rows)."""
    if job.status != "running" or not done or not elapsed:
        return None
    return round(elapsed / done * (job.prompts_total - done), 1)

"""Evaluations as jobs in the shared job store (kind ``eval``): the same workers, leases,
checkpoints, budgets and cancellation as SDG jobs."""

from __future__ import annotations

import json
from pathlib import Path

from winnow.db import Job
from winnow.evals.plan import baseline
from winnow.evals.runner import table_path
from winnow.jobs.views import eta_seconds, lifecycle
from winnow.schemas.evals import ComparisonRow, EvaluationCounts, EvaluationDetails, EvaluationRequest


def eval_details(job: Job) -> EvaluationDetails:
    spec = EvaluationRequest.model_validate(job.params)
    checkpoint = job.checkpoint or {}
    counts = EvaluationCounts.model_validate(checkpoint.get("counts", {"rows_total": job.prompts_total}))
    counts.rows_total = job.prompts_total
    eta = eta_seconds(job, counts.rows_done, float(checkpoint.get("timings", {}).get("total_s", 0.0)))
    table = None
    completed = job.status == "completed"
    if completed and table_path(Path(job.output_path)).exists():
        rows = json.loads(table_path(Path(job.output_path)).read_text())
        table = [ComparisonRow.model_validate(row) for row in rows]
    return EvaluationDetails(
        id=job.id,
        name=spec.name,
        **lifecycle(job),
        counts=counts,
        eta_seconds=eta,
        baseline=baseline(spec),
        table=table,
        results_path=job.output_path if completed else None,
        params=job.params,
    )

"""Evaluations as a job kind (``winnow.jobs.kinds``): held whole by one worker under the job's lease,
checkpointed into the job's row with the usage of each chunk."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from winnow.db import Job
from winnow.evals.plan import build_eval_plan
from winnow.evals.runner import EvalRunner
from winnow.evals.service import eval_details
from winnow.jobs.kinds import JobKind
from winnow.jobs.store import DbCheckpoint
from winnow.schemas.evals import EvaluationRequest
from winnow.sdg.job import prompts_of, rewards
from winnow.usage.service import UsageMeter

if TYPE_CHECKING:
    from winnow.jobs.worker import Worker


async def run(worker: Worker, job: Job, cancelled: threading.Event) -> None:
    """Every model of the evaluation over the dataset, chunk by chunk, then the comparison table."""
    meters: dict[str, UsageMeter] = {}
    try:
        prompts = await prompts_of(worker, job, ("the dataset", "evaluation"))
        work = worker.store.job_dir(job.id) / f"work-{job.attempts}"  # one per attempt: see runner.adopt
        # Usage rows are written with each checkpoint: a chunk is billed once, when it is done.
        checkpoint = DbCheckpoint(worker.store, job, worker.id, worker.usage.recorder)
        evaluation = EvaluationRequest.model_validate(job.params)
        plan = build_eval_plan(evaluation, prompts, worker.models, worker.shared(rewards), worker.usage.prices)
        meters = {m: UsageMeter(worker.usage, job.owner_key_id, m, "eval", job.id) for m in evaluation.models}
        plan.meters = meters
        await EvalRunner(plan, work, Path(job.output_path), checkpoint).run()
        worker.complete(job)
    finally:
        for meter in meters.values():
            meter.close()


EVALUATION = JobKind(
    name="eval", prefix="eval", noun="Evaluation", output="results.jsonl", render=eval_details, run=run
)

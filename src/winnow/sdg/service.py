"""SDG jobs as a service: check a spec before it is queued, plan it, estimate it (a dry run), pick
its runner (local or Ray) and show it as the API does. The job store itself is ``winnow.jobs``."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import object_session

from winnow.auth.paths import resolve_inside
from winnow.config import Settings
from winnow.db import Job
from winnow.errors import InvalidRequest, ModelNotFound
from winnow.jobs.shards import shard_states
from winnow.jobs.views import eta_seconds, lifecycle
from winnow.models.registry import ModelRegistry
from winnow.schemas.sdg import JOB_ID_PATTERN, JobCounts, JobDetails, JobEstimate, SubmitJobRequest
from winnow.sdg.filters import split_filter
from winnow.sdg.inputs import PromptFile, validate_file
from winnow.sdg.ray_executor import RayRunner, ray_module
from winnow.sdg.reward import RewardModelRegistry
from winnow.sdg.runner import JobPlan, LocalRunner, Progress, add_counts
from winnow.sdg.scoring import resolve_scoring
from winnow.sdg.stages import Meter
from winnow.sdg.workfiles import Checkpoint
from winnow.usage.service import UsageService
from winnow.usage.tokens import prompt_tokens

JOB_ID = re.compile(JOB_ID_PATTERN)


def check_spec(
    spec: SubmitJobRequest, settings: Settings, models: ModelRegistry, rewards: RewardModelRegistry
) -> PromptFile:
    """Everything that can be wrong with a job, found before it starts (400s, never a failed job)."""
    try:
        models.config(spec.model)
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


@dataclass
class LocalRun:
    """How one run of a spec goes: where it works and writes, its checkpoint, its usage meter and job
    id (a worker's), what sees its progress (the CLI's bar), and, for a shard, its rows (not final)."""

    work: Path
    output: Path
    checkpoint: Checkpoint
    meter: Meter | None = None
    job_id: str | None = None
    on_progress: Callable[[Progress], None] | None = None
    rows: tuple[int, int] | None = None
    final: bool = True


async def run_local(
    spec: SubmitJobRequest,
    prompts: PromptFile,
    settings: Settings,
    registries: tuple[ModelRegistry, RewardModelRegistry],
    run: LocalRun,
) -> dict[str, Any]:
    """Run ``spec`` over its checked ``prompts`` in this process (on its executor): the one entry of
    ``winnow sdg run`` and of a worker's shard. Returns the run's summary."""
    plan = build_plan(spec, prompts, *registries)
    plan.meter = run.meter
    plan.job_id = run.job_id
    runner = make_runner(plan, settings, run.work, run.output, run.checkpoint, run.on_progress, run.rows, run.final)
    return await runner.run()


def _now() -> datetime:
    return datetime.now(UTC)


def _progress(job: Job) -> tuple[JobCounts, float]:
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


def details(job: Job) -> JobDetails:
    counts, elapsed = _progress(job)
    return JobDetails(
        job_id=job.id,
        **lifecycle(job),
        output_file_path=job.output_path if job.status == "completed" else None,
        counts=counts,
        eta_seconds=eta_seconds(job, counts.prompts_read, elapsed),
        duration_seconds=_duration(job),
        params=job.params,
    )


def _duration(job: Job) -> float | None:
    if job.started_at is None:
        return None
    end = _aware(job.finished_at) if job.finished_at is not None else _now()
    return round(max((end - _aware(job.started_at)).total_seconds(), 0.0), 3)

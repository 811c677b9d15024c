"""SDG as a job kind (``winnow.jobs.kinds``): a job is cut into shards that workers run through the
local (or Ray) runner, each checkpointed into its shard; the last step merges the shards' files, in
shard order, into the job's output."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from winnow.db import Job
from winnow.jobs.kinds import JobKind
from winnow.jobs.shards import ShardCheckpoint, ShardClaim
from winnow.schemas.sdg import SubmitJobRequest
from winnow.sdg.inputs import CheckedFiles, PromptFile
from winnow.sdg.reward import RewardModelRegistry
from winnow.sdg.runner import EveryPromptFailed, LocalRunner
from winnow.sdg.service import LocalRun, build_plan, details, run_local
from winnow.usage.recorder import UsageEvent
from winnow.usage.service import UsageMeter

if TYPE_CHECKING:
    from winnow.jobs.worker import Worker

log = logging.getLogger("winnow.worker")


def rewards(worker: Worker) -> RewardModelRegistry:
    """The worker's reward models (one registry for every kind that scores)."""
    return RewardModelRegistry(worker.settings, worker.models)


def checked_files(_: Worker) -> CheckedFiles:
    return CheckedFiles()


async def prompts_of(worker: Worker, job: Job, what: tuple[str, str]) -> PromptFile:
    """The job's input file, checked against the hash taken at submit, with the latest budgets."""
    prompts = await worker.shared(checked_files).check(Path(job.prompts_path), job.prompts_sha256, what)
    await worker.flush_usage()
    return prompts


async def run_shard(worker: Worker, claim: ShardClaim, job: Job) -> None:
    """One shard: its rows through the job's runner, checkpointed into the shard."""
    meter = UsageMeter(worker.usage, job.owner_key_id, str(job.params.get("model")), "job", job.id)
    try:
        prompts = await prompts_of(worker, job, ("the prompts file", "job"))
        spec = SubmitJobRequest.model_validate(job.params)
        run = LocalRun(
            work=worker.store.job_dir(job.id) / "shards" / f"{claim.shard}" / f"work-{claim.attempts}",
            output=Path(job.output_path),
            checkpoint=ShardCheckpoint(worker.shards, claim, worker.id, worker.usage.recorder),
            meter=meter,
            job_id=job.id,
            rows=(claim.first_row, claim.rows),
            final=False,
        )
        await run_local(spec, prompts, worker.settings, (worker.models, worker.shared(rewards)), run)
        await asyncio.to_thread(worker.shards.done, claim, worker.id)
    finally:
        meter.close()


async def merge(worker: Worker, job: Job) -> None:
    """Every shard is done: merge their files, in shard order, into the job's output."""
    prompts = await prompts_of(worker, job, ("the prompts file", "job"))
    plan = build_plan(SubmitJobRequest.model_validate(job.params), prompts, worker.models, worker.shared(rewards))
    plan.job_id = job.id
    work = worker.store.job_dir(job.id) / f"merge-{job.attempts}"
    runner = LocalRunner(plan, work, Path(job.output_path), _NoCheckpoint())
    try:
        summary = await runner.finish_from(await asyncio.to_thread(worker.shards.states, job.id))
    except EveryPromptFailed as exc:
        # Nothing to keep but the reasons: the errors file beside the output (GET .../errors).
        final = {"counts": exc.counts.model_dump()}
        worker.store.finish(job.id, worker.id, "failed", error=f"{exc.message}: {exc.details}", checkpoint=final)
        log.info("%s failed: %s", job.id, exc.message)
        return
    worker.complete(job, {"counts": summary["counts"], "timings": summary.get("timings", {})})


class _NoCheckpoint:
    """The merge keeps no checkpoint: it starts over if interrupted."""

    def load(self) -> dict[str, object]:
        return {}

    def save(self, state: dict[str, object], stage: str, usage: Sequence[UsageEvent] = ()) -> None:
        return None


SDG = JobKind(
    name="sdg",
    prefix="job",
    noun="Job",
    output="output.jsonl",
    render=details,
    run_shard=run_shard,
    merge=merge,
)

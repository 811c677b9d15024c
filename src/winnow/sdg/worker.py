"""A worker process: claims SDG and evaluation jobs from the job store and runs them, renewing its lease.

``winnow serve`` starts ``workers`` of them (so a heavy job never runs on the API's event loop);
``winnow worker`` starts one by hand, on this machine or another sharing the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from pathlib import Path

import psutil

from winnow.config import Settings
from winnow.db import Database, SdgJob
from winnow.errors import BudgetExceeded
from winnow.evals.plan import build_eval_plan
from winnow.evals.runner import EvalRunner
from winnow.models.registry import ModelRegistry
from winnow.schemas.evals import EvaluationRequest
from winnow.schemas.sdg import SubmitJobRequest
from winnow.sdg.inputs import validate_file
from winnow.sdg.reward import RewardModelRegistry
from winnow.sdg.runner import JobCancelled, LocalRunner
from winnow.sdg.service import DbCheckpoint, JobLost, JobStore, build_plan
from winnow.usage.budgets import period_bounds
from winnow.usage.service import UsageMeter, UsageService

log = logging.getLogger("winnow.worker")


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def _process_alive(worker: str) -> bool:
    """Whether the process behind a worker id (host:pid:tag) on this host still runs."""
    try:
        return bool(psutil.pid_exists(int(worker.split(":")[1])))
    except (IndexError, ValueError):
        return True


class Worker:
    def __init__(self, settings: Settings, poll_s: float = 0.5) -> None:
        self.settings = settings
        self.poll_s = poll_s
        self.id = worker_id()
        self.db = Database(settings.effective_database_url)
        self.db.migrate()
        self.store = JobStore(self.db, settings)
        self.models = ModelRegistry(settings)
        self.rewards = RewardModelRegistry(settings, self.models)
        self.usage = UsageService(self.db, settings)

    def _free_dead_local_jobs(self) -> None:
        freed = self.store.expire_leases_of(f"{socket.gethostname()}:", _process_alive)
        if freed:
            log.info("freed %d job(s) of dead workers on this host", freed)

    async def run_forever(self, stop: asyncio.Event, parent_pid: int | None = None) -> None:
        log.info("worker %s started", self.id)
        self.usage.start()
        self._free_dead_local_jobs()
        watchdog = asyncio.create_task(self._watch_parent(parent_pid, stop)) if parent_pid else None
        try:
            while not stop.is_set():
                job = await asyncio.to_thread(self.store.claim, self.id)
                if job is None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.poll_s)
                    continue
                job_task = asyncio.create_task(self.run_job(job))
                stopping = asyncio.create_task(stop.wait())
                await asyncio.wait({job_task, stopping}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                if not job_task.done():  # shutting down mid-job: hand the job back at once
                    job_task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await job_task
                    self.store.release(job.id, self.id)
                    log.info("released %s for another worker", job.id)
        finally:
            if watchdog is not None:
                watchdog.cancel()
            await self.rewards.close()
            await self.models.close()
            self.usage.close()
            self.db.dispose()

    @staticmethod
    async def _watch_parent(parent_pid: int, stop: asyncio.Event) -> None:
        """A worker started by a server stops when the server is gone (even after kill -9),
        handing its job back, so that a restarted server resumes it at once."""
        while not stop.is_set():
            if not psutil.pid_exists(parent_pid) or os.getppid() != parent_pid:
                log.info("parent %d is gone; worker stops", parent_pid)
                stop.set()
                return
            await asyncio.sleep(0.5)

    async def run_job(self, job: SdgJob) -> None:
        log.info("running %s (attempt %d)", job.id, job.attempts)
        heartbeat = asyncio.create_task(self._heartbeat(job.id))
        try:
            prompts = await asyncio.to_thread(validate_file, Path(job.prompts_path))
            if prompts.sha256 != job.prompts_sha256:
                raise ValueError("the prompts file changed since the job was submitted")
            await asyncio.to_thread(self.usage.recorder.flush)  # the latest budgets (a raise may have woken us)
            work = self.store.job_dir(job.id) / f"work-{job.attempts}"  # one per attempt: see runner.adopt
            # Usage rows are written before each checkpoint: a finished chunk's spend is never lost.
            checkpoint = DbCheckpoint(self.store, job, self.id, before_save=self.usage.recorder.flush)
            if job.kind == "eval":
                evaluation = EvaluationRequest.model_validate(job.params)
                eval_plan = build_eval_plan(evaluation, prompts, self.models, self.rewards, self.usage.prices)
                eval_plan.meters = {
                    m: UsageMeter(self.usage, job.owner_key_id, m, "eval", job.id) for m in evaluation.models
                }
                await EvalRunner(eval_plan, work, Path(job.output_path), checkpoint).run()
            else:
                spec = SubmitJobRequest.model_validate(job.params)
                plan = build_plan(spec, prompts, self.models, self.rewards)
                plan.meter = UsageMeter(self.usage, job.owner_key_id, spec.model, "job", job.id)
                await LocalRunner(plan, work, Path(job.output_path), checkpoint).run()
            size = Path(job.output_path).stat().st_size
            self.store.finish(job.id, self.id, "completed", output_bytes=size)
            log.info("completed %s", job.id)
        except BudgetExceeded as exc:
            self._pause_for_budget(job, exc)
        except JobCancelled:
            self.store.finish(job.id, self.id, "cancelled")
            log.info("cancelled %s", job.id)
        except JobLost:
            log.warning("lost the lease on %s; another worker has it", job.id)
        except Exception as exc:
            log.exception("job %s failed", job.id)
            self.store.finish(job.id, self.id, "failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            heartbeat.cancel()

    def _pause_for_budget(self, job: SdgJob, exc: BudgetExceeded) -> None:
        """The owner's budget is spent: the job waits (checkpoint kept) until the period resets or
        the budget is raised, then any worker resumes it where it stopped."""
        self.usage.recorder.flush()
        budget = self.usage.ledger.budget(job.owner_key_id)
        _, resume_at = period_bounds(budget.period) if budget is not None else (None, None)
        self.store.pause(job.id, self.id, f"budget_exceeded: {exc.details or exc.message}", resume_at)
        log.info("paused %s: the owner's budget is spent (resumes %s)", job.id, resume_at or "when raised")

    async def _heartbeat(self, job_id: str) -> None:
        """Renew the lease while a long chunk runs (checkpoints renew it too)."""
        while True:
            await asyncio.sleep(self.settings.job_lease_s / 3)
            try:
                await asyncio.to_thread(self.store.renew, job_id, self.id)
            except JobLost:
                return

"""A worker process: claims SDG and evaluation jobs from the job store and runs them, renewing its lease.

``winnow serve`` starts ``workers`` of them (so a heavy job never runs on the API's event loop);
``winnow worker`` starts one by hand, on this machine or another sharing the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import threading
import uuid
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy.exc import OperationalError

from winnow.config import Settings
from winnow.db import Database, SdgJob
from winnow.errors import BudgetExceeded
from winnow.evals.plan import build_eval_plan
from winnow.evals.runner import EvalRunner
from winnow.finetune.runner import TrainingDataRejected, run_fine_tuning
from winnow.finetune.service import FineTuningService, append_event, job_paths
from winnow.models.registry import ModelRegistry
from winnow.schemas.evals import EvaluationRequest
from winnow.schemas.sdg import SubmitJobRequest
from winnow.sdg.inputs import PromptFile, validate_file
from winnow.sdg.reward import RewardModelRegistry
from winnow.sdg.runner import EveryPromptFailed, JobCancelled, JobPlan, LocalRunner
from winnow.sdg.service import DbCheckpoint, JobLost, JobStore, build_plan, make_runner
from winnow.sdg.shards import ShardCheckpoint, ShardClaim, ShardLost, ShardStore
from winnow.usage.budgets import period_bounds
from winnow.usage.recorder import UsageEvent
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
        self.models = ModelRegistry(settings, self.db)
        self.rewards = RewardModelRegistry(settings, self.models)
        self.usage = UsageService(self.db, settings)
        self.shards = ShardStore(self.db, settings)
        self.fine_tuning = FineTuningService(self.db, settings, self.store, self.models)
        self._checked: dict[str, tuple[tuple[int, int], PromptFile]] = {}  # sha256 -> (size, mtime), file
        self._served_shard = False  # what the last work was: the next claim tries the other kind first

    def _free_dead_local_jobs(self) -> None:
        prefix = f"{socket.gethostname()}:"
        freed = self.store.expire_leases_of(prefix, _process_alive) + self.shards.expire_of(prefix, _process_alive)
        if freed:
            log.info("freed %d job(s) or shard(s) of dead workers on this host", freed)

    def _next(self) -> tuple[Callable[[], Coroutine[Any, Any, None]], Callable[[], None]] | None:
        """The next piece of work (blocking: database), as (run it, hand it back): the merge of a job
        whose shards are done, else a shard of an SDG job or a whole job (an evaluation, a fine-tuning
        job), by turns."""
        self.shards.housekeeping()
        if (job := self.shards.claim_merge(self.id)) is not None:
            return (lambda: self.merge(job)), (lambda: self.store.release(job.id, self.id))
        # Shards and whole jobs by turns: neither kind waits for every piece of work of the other.
        order = (self._whole_job, self._shard) if self._served_shard else (self._shard, self._whole_job)
        for source in order:
            if (work := source()) is not None:
                return work
        return None

    def _shard(self) -> tuple[Callable[[], Coroutine[Any, Any, None]], Callable[[], None]] | None:
        if (shard := self.shards.claim(self.id)) is None:
            return None
        self._served_shard = True
        return (lambda: self.run_shard(shard)), (lambda: self.shards.release(shard, self.id))

    def _whole_job(self) -> tuple[Callable[[], Coroutine[Any, Any, None]], Callable[[], None]] | None:
        if (job := self.store.claim(self.id)) is None:
            return None
        self._served_shard = False
        run = self.run_fine_tuning if job.kind == "ft" else self.run_job
        return (lambda: run(job)), (lambda: self.store.release(job.id, self.id))

    async def run_forever(self, stop: asyncio.Event, parent_pid: int | None = None) -> None:
        log.info("worker %s started", self.id)
        self.usage.start()
        self._free_dead_local_jobs()
        watchdog = asyncio.create_task(self._watch_parent(parent_pid, stop)) if parent_pid else None
        try:
            while not stop.is_set():
                work = await asyncio.to_thread(self._next)
                if work is None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.poll_s)
                    continue
                run, release = work
                task = asyncio.create_task(run())
                stopping = asyncio.create_task(stop.wait())
                await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                if not task.done():  # shutting down mid-work: hand it back at once
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                    release()
                    log.info("released work for another worker")
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

    async def _prompts(self, job: SdgJob) -> PromptFile:
        """The job's prompts file, checked against the hash taken at submit: in full the first time
        this worker meets the file, then only while its size and mtime stay the same (a worker runs
        many shards of one job; re-hashing the whole file for each would cost shards x file)."""
        path = Path(job.prompts_path)
        stat = path.stat()
        seen = self._checked.get(job.prompts_sha256)
        if seen is not None and seen[0] == (stat.st_size, stat.st_mtime_ns):
            return seen[1]
        prompts = await asyncio.to_thread(validate_file, path)
        if prompts.sha256 != job.prompts_sha256:
            what = ("the dataset", "evaluation") if job.kind == "eval" else ("the prompts file", "job")
            raise ValueError(f"{what[0]} changed since the {what[1]} was submitted")
        self._checked[job.prompts_sha256] = ((stat.st_size, stat.st_mtime_ns), prompts)
        return prompts

    async def _start(self, job: SdgJob) -> PromptFile:
        """Before any work on a job: its input checked, and the latest budgets (a raise may have woken it)."""
        prompts = await self._prompts(job)
        await asyncio.to_thread(self.usage.recorder.flush)
        return prompts

    def _complete(self, job: SdgJob, checkpoint: dict[str, Any] | None = None) -> None:
        size = Path(job.output_path).stat().st_size
        self.store.finish(job.id, self.id, "completed", output_bytes=size, checkpoint=checkpoint)
        self._clean(job.id)
        log.info("completed %s", job.id)

    async def _plan(self, job: SdgJob, meter: UsageMeter | None = None) -> tuple[JobPlan, Path]:
        prompts = await self._start(job)
        spec = SubmitJobRequest.model_validate(job.params)
        plan = build_plan(spec, prompts, self.models, self.rewards)
        plan.meter = meter
        plan.job_id = job.id
        return plan, Path(job.output_path)

    async def run_shard(self, claim: ShardClaim) -> None:
        """One shard of an SDG job: its rows through the local runner, checkpointed into the shard."""
        log.info("running %s shard %d (attempt %d)", claim.job_id, claim.shard, claim.attempts)
        job = await asyncio.to_thread(self.store.row, claim.job_id)
        heartbeat = asyncio.create_task(self._beat(lambda: self.shards.renew(claim, self.id)))
        meter = UsageMeter(self.usage, job.owner_key_id, str(job.params.get("model")), "job", job.id)
        try:
            plan, output = await self._plan(job, meter)
            work = self.store.job_dir(job.id) / "shards" / f"{claim.shard}" / f"work-{claim.attempts}"
            checkpoint = ShardCheckpoint(self.shards, claim, self.id, self.usage.recorder)
            rows = (claim.first_row, claim.rows)
            await make_runner(plan, self.settings, work, output, checkpoint, rows=rows, final=False).run()
            await asyncio.to_thread(self.shards.done, claim, self.id)
        except BudgetExceeded as exc:
            self.shards.release(claim, self.id)
            self._pause_for_budget(job, exc, worker=None)
        except JobCancelled:
            self.store.finish(job.id, None, "cancelled")
            log.info("cancelled %s", job.id)
        except ShardLost:
            self.shards.release(claim, self.id)
            log.warning("%s shard %d is no longer ours (lease lost, or the job stopped)", job.id, claim.shard)
        except OperationalError:
            # The database, not the job: hand the shard back (its lease runs out if even that fails).
            log.exception("database error in %s shard %d; handing it back", job.id, claim.shard)
            with contextlib.suppress(Exception):
                self.shards.release(claim, self.id)
        except Exception as exc:
            log.exception("job %s failed in shard %d", job.id, claim.shard)
            self.store.finish(job.id, None, "failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            heartbeat.cancel()
            meter.close()

    async def merge(self, job: SdgJob) -> None:
        """Every shard is done: merge their files, in shard order, into the job's output."""
        log.info("merging %s (attempt %d)", job.id, job.attempts)
        heartbeat = asyncio.create_task(self._beat(lambda: self.store.renew(job.id, self.id)))
        try:
            plan, output = await self._plan(job)
            runner = LocalRunner(plan, self.store.job_dir(job.id) / f"merge-{job.attempts}", output, _NoCheckpoint())
            summary = await runner.finish_from(await asyncio.to_thread(self.shards.states, job.id))
            self._complete(job, {"counts": summary["counts"], "timings": summary.get("timings", {})})
        except EveryPromptFailed as exc:
            # Nothing to keep but the reasons: the errors file beside the output (GET .../errors).
            final = {"counts": exc.counts.model_dump()}
            self.store.finish(job.id, self.id, "failed", error=f"{exc.message}: {exc.details}", checkpoint=final)
            log.info("%s failed: %s", job.id, exc.message)
        except JobLost:
            log.warning("lost the lease on %s; another worker has it", job.id)
        except Exception as exc:
            log.exception("job %s failed while merging", job.id)
            self.store.finish(job.id, self.id, "failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            heartbeat.cancel()

    async def run_job(self, job: SdgJob) -> None:
        """An evaluation, held whole by this worker under the job's lease."""
        log.info("running %s (attempt %d)", job.id, job.attempts)
        heartbeat = asyncio.create_task(self._beat(lambda: self.store.renew(job.id, self.id)))
        meters: dict[str, UsageMeter] = {}
        try:
            prompts = await self._start(job)
            work = self.store.job_dir(job.id) / f"work-{job.attempts}"  # one per attempt: see runner.adopt
            # Usage rows are written with each checkpoint: a chunk is billed once, when it is done.
            checkpoint = DbCheckpoint(self.store, job, self.id, self.usage.recorder)
            evaluation = EvaluationRequest.model_validate(job.params)
            eval_plan = build_eval_plan(evaluation, prompts, self.models, self.rewards, self.usage.prices)
            meters = {m: UsageMeter(self.usage, job.owner_key_id, m, "eval", job.id) for m in evaluation.models}
            eval_plan.meters = meters
            await EvalRunner(eval_plan, work, Path(job.output_path), checkpoint).run()
            self._complete(job)
        except BudgetExceeded as exc:
            self._pause_for_budget(job, exc, worker=self.id)
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
            for meter in meters.values():
                meter.close()

    async def run_fine_tuning(self, job: SdgJob) -> None:
        """A fine-tuning job, trained in a thread under the job's lease; resumed from its last
        checkpoint when an earlier attempt died."""
        log.info("fine-tuning %s (attempt %d)", job.id, job.attempts)
        cancelled = threading.Event()  # set by the heartbeat: every phase (preparing, training) stops on it
        heartbeat = asyncio.create_task(self._beat(lambda: self.store.renew(job.id, self.id), cancelled.set))
        try:
            await asyncio.to_thread(
                run_fine_tuning, self.settings, self.store, self.fine_tuning, job, self.id, None, cancelled
            )
        except JobCancelled:
            self.store.finish(job.id, self.id, "cancelled")
            log.info("cancelled %s", job.id)
        except JobLost:
            log.warning("lost the lease on %s; another worker has it", job.id)
        except TrainingDataRejected as exc:  # the job has failed, naming the bad lines
            log.info("fine-tuning %s failed: %s", job.id, exc.message)
        except OperationalError:
            log.exception("database error in %s; handing it back", job.id)
            with contextlib.suppress(Exception):
                self.store.release(job.id, self.id)
        except Exception as exc:
            log.exception("fine-tuning %s failed", job.id)
            append_event(job_paths(self.store.job_dir(job.id))["events"], f"failed: {exc}", level="error")
            self.store.finish(job.id, self.id, "failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            heartbeat.cancel()

    def _pause_for_budget(self, job: SdgJob, exc: BudgetExceeded, worker: str | None) -> None:
        """The owner's budget is spent: the job waits (checkpoint kept) until the period resets or
        the budget is raised, then any worker resumes it where it stopped."""
        self.usage.recorder.flush()
        budget = self.usage.ledger.budget(job.owner_key_id)
        _, resume_at = period_bounds(budget.period) if budget is not None else (None, None)
        self.store.pause(job.id, worker, f"budget_exceeded: {exc.details or exc.message}", resume_at)
        log.info("paused %s: the owner's budget is spent (resumes %s)", job.id, resume_at or "when raised")

    def _clean(self, job_id: str) -> None:
        """A completed job's work folders go (the output and its reports stay)."""
        for folder in self.store.job_dir(job_id).iterdir():
            if folder.is_dir() and (folder.name == "shards" or folder.name.startswith(("work-", "merge-"))):
                shutil.rmtree(folder, ignore_errors=True)

    async def _beat(self, renew: Callable[[], bool], on_cancel: Callable[[], None] | None = None) -> None:
        """Renew a lease while a long chunk runs (checkpoints renew it too); a renewal that answers
        that the job's cancellation was requested calls ``on_cancel``."""
        while True:
            await asyncio.sleep(self.settings.job_lease_s / 3)
            try:
                if await asyncio.to_thread(renew) and on_cancel is not None:
                    on_cancel()
            except (JobLost, ShardLost):
                return  # no longer ours: the next checkpoint says so to the runner too
            except Exception:
                log.exception("renewing a lease failed; trying again")


class _NoCheckpoint:
    """The merge keeps no checkpoint: it starts over if interrupted."""

    def load(self) -> dict[str, object]:
        return {}

    def save(self, state: dict[str, object], stage: str, usage: Sequence[UsageEvent] = ()) -> None:
        return None

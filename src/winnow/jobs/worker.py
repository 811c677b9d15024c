"""A worker process: claims work from the job store (a shard of a sharded job, the merge of one whose
shards are done, or a whole job) and runs it through its kind (``winnow.jobs.kinds``), renewing the
lease meanwhile and ending the job however the work ends.

``winnow serve`` starts ``workers`` of them (so a heavy job never runs on the API's event loop);
``winnow worker`` starts one by hand, on this machine or another sharing the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import shutil
import socket
import threading
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psutil
from sqlalchemy.exc import OperationalError

from winnow import telemetry
from winnow.config import Settings
from winnow.db import Database, Job
from winnow.errors import BudgetExceeded
from winnow.jobs.errors import JobCancelled, JobLost, ShardLost
from winnow.jobs.kinds import kind
from winnow.jobs.shards import ShardClaim, ShardStore
from winnow.jobs.store import JobStore
from winnow.jobs.tracing import end_job, job_attributes
from winnow.models.registry import ModelRegistry
from winnow.usage.budgets import period_bounds
from winnow.usage.service import UsageService

log = logging.getLogger("winnow.worker")
T = TypeVar("T")
Work = tuple[Callable[[], Coroutine[Any, Any, None]], Callable[[], None]]  # (run it, hand it back)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def _process_alive(worker: str) -> bool:
    """Whether the process behind a worker id (host:pid:tag) on this host still runs."""
    try:
        return bool(psutil.pid_exists(int(worker.split(":")[1])))
    except (IndexError, ValueError):
        return True


@dataclass(frozen=True)
class _Held:
    """A piece of work this worker holds: who may end its job (this worker, or None: any worker of a
    sharded job), how its lease is renewed and handed back, and what the logs call it."""

    holder: str | None
    renew: Callable[[], bool]
    release: Callable[[], None]
    where: str = ""
    on_cancel: Callable[[], None] | None = None
    part: str = "job"  # what of the job it is (job, shard, merge), for its span
    shard: int | None = None


class Worker:
    def __init__(self, settings: Settings, poll_s: float = 0.5) -> None:
        self.settings = settings
        self.poll_s = poll_s
        self.id = worker_id()
        self.db = Database(settings.effective_database_url)
        self.db.migrate()
        self.store = JobStore(self.db, settings)
        self.models = ModelRegistry(settings, self.db)
        self.usage = UsageService(self.db, settings)
        self.shards = ShardStore(self.db, settings)
        self._shared: dict[Callable[[Worker], Any], Any] = {}
        self._served_shard = False  # what the last work was: the next claim tries the other kind first

    def shared(self, make: Callable[[Worker], T]) -> T:
        """What kinds keep for the worker's life (a reward-model registry, a checked-file cache): made
        by ``make`` on first use, closed (``close()``, awaited if need be) when the worker stops."""
        if make not in self._shared:
            self._shared[make] = make(self)
        made: T = self._shared[make]
        return made

    def _free_dead_local_jobs(self) -> None:
        prefix = f"{socket.gethostname()}:"
        freed = self.store.expire_leases_of(prefix, _process_alive) + self.shards.expire_of(prefix, _process_alive)
        if freed:
            log.info("freed %d job(s) or shard(s) of dead workers on this host", freed)

    def _next(self) -> Work | None:
        """The next piece of work (blocking: database): the merge of a job whose shards are done,
        else a shard of a sharded job or a whole job, by turns."""
        self.shards.housekeeping()
        if (job := self.shards.claim_merge(self.id)) is not None:
            return (lambda: self.merge(job)), (lambda: self.store.release(job.id, self.id))
        # Shards and whole jobs by turns: neither kind waits for every piece of work of the other.
        order = (self._whole_job, self._shard) if self._served_shard else (self._shard, self._whole_job)
        for source in order:
            if (work := source()) is not None:
                return work
        return None

    def _shard(self) -> Work | None:
        if (shard := self.shards.claim(self.id)) is None:
            return None
        self._served_shard = True
        return (lambda: self.run_shard(shard)), (lambda: self.shards.release(shard, self.id))

    def _whole_job(self) -> Work | None:
        if (job := self.store.claim(self.id)) is None:
            return None
        self._served_shard = False
        return (lambda: self.run_job(job)), (lambda: self.store.release(job.id, self.id))

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
                await self._run_until_stopped(work, stop)
        finally:
            if watchdog is not None:
                watchdog.cancel()
            await self._close()

    async def _run_until_stopped(self, work: Work, stop: asyncio.Event) -> None:
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

    async def close_models(self) -> None:
        """Close the models and what the kinds made for the worker's life (reward models)."""
        for made in self._shared.values():
            close = getattr(made, "close", None)
            if close is not None and inspect.isawaitable(result := close()):
                await result
        await self.models.close()

    async def _close(self) -> None:
        await self.close_models()
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

    # -- running a piece of work ---------------------------------------------------------------------
    async def run_shard(self, claim: ShardClaim) -> None:
        """One shard of a sharded job, checkpointed into the shard's row."""
        log.info("running %s shard %d (attempt %d)", claim.job_id, claim.shard, claim.attempts)
        job = await asyncio.to_thread(self.store.row, claim.job_id)
        run_shard = kind(job.kind).run_shard
        assert run_shard is not None
        held = _Held(
            holder=None,
            renew=lambda: self.shards.renew(claim, self.id),
            release=lambda: self.shards.release(claim, self.id),
            where=f" shard {claim.shard}",
            part="shard",
            shard=claim.shard,
        )
        await self._hold(job, lambda: run_shard(self, claim, job), held)

    async def merge(self, job: Job) -> None:
        """Every shard of ``job`` is done: its kind merges them into the job's output."""
        log.info("merging %s (attempt %d)", job.id, job.attempts)
        merge = kind(job.kind).merge
        assert merge is not None
        await self._hold(job, lambda: merge(self, job), self._whole(job, " while merging", part="merge"))

    async def run_job(self, job: Job) -> None:
        """A job held whole by this worker under the job's lease (an evaluation, a fine-tuning job)."""
        log.info("running %s (attempt %d)", job.id, job.attempts)
        run = kind(job.kind).run
        assert run is not None
        cancelled = threading.Event()  # set by the heartbeat: a kind running in a thread stops on it
        await self._hold(job, lambda: run(self, job, cancelled), self._whole(job, on_cancel=cancelled.set))

    def _whole(
        self, job: Job, where: str = "", on_cancel: Callable[[], None] | None = None, part: str = "job"
    ) -> _Held:
        return _Held(
            holder=self.id,
            renew=lambda: self.store.renew(job.id, self.id),
            release=lambda: self.store.release(job.id, self.id),
            where=where,
            on_cancel=on_cancel,
            part=part,
        )

    async def _hold(self, job: Job, work: Callable[[], Awaitable[None]], held: _Held) -> None:
        """Run ``work`` under a heartbeat, and end the job (or hand it back) however it ends; while
        tracing is on, in a ``job.run`` span that ends with the job's status."""
        attributes = job_attributes(job, held.part, held.shard) if telemetry.enabled() else None
        with telemetry.span("job.run", attributes) as span:
            await self._settle(job, work, held)
            if span is not None:
                with contextlib.suppress(Exception):  # the job may be gone (deleted meanwhile)
                    end_job(span, await asyncio.to_thread(self.store.row, job.id))

    async def _settle(self, job: Job, work: Callable[[], Awaitable[None]], held: _Held) -> None:
        """Run ``work`` under a heartbeat, and end the job (or hand it back) however it ends."""
        heartbeat = asyncio.create_task(self._beat(held.renew, held.on_cancel))
        try:
            await work()
        except BudgetExceeded as exc:
            if held.holder is None:
                held.release()
            self._pause_for_budget(job, exc, held.holder)
        except JobCancelled:
            self.store.finish(job.id, held.holder, "cancelled")
            log.info("cancelled %s", job.id)
        except (JobLost, ShardLost):
            held.release()
            log.warning("%s%s is no longer ours (lease lost, or the job stopped)", job.id, held.where)
        except OperationalError:
            # The database, not the job: hand it back (its lease runs out if even that fails).
            log.exception("database error in %s%s; handing it back", job.id, held.where)
            with contextlib.suppress(Exception):
                held.release()
        except Exception as exc:
            log.exception("job %s failed%s", job.id, held.where)
            if (on_failure := kind(job.kind).on_failure) is not None:
                on_failure(self, job, exc)
            self.store.finish(job.id, held.holder, "failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            heartbeat.cancel()

    # -- what kinds call -----------------------------------------------------------------------------
    async def flush_usage(self) -> None:
        """Before any work on a job: the latest usage written, so budgets are current (a raise may
        have woken the job)."""
        await asyncio.to_thread(self.usage.recorder.flush)

    def complete(self, job: Job, checkpoint: dict[str, Any] | None = None) -> None:
        """End a job this worker holds as completed; its work folders go."""
        size = Path(job.output_path).stat().st_size
        self.store.finish(job.id, self.id, "completed", output_bytes=size, checkpoint=checkpoint)
        self._clean(job.id)
        log.info("completed %s", job.id)

    def _pause_for_budget(self, job: Job, exc: BudgetExceeded, worker: str | None) -> None:
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

"""The services one Winnow process holds, built once from Settings and shared by the API and CLI."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from winnow.auth import KeyService, RateLimiter
from winnow.config import Settings
from winnow.db import Database
from winnow.feedback import FeedbackService
from winnow.files import FileService
from winnow.finetune.service import FineTuningService
from winnow.jobs.store import JobStore
from winnow.metrics import Metrics
from winnow.models.registry import ModelRegistry
from winnow.models.service import GenerationService
from winnow.prompts import PromptRegistry
from winnow.requests.log import RequestLog
from winnow.schemas.keys import KeyInfo
from winnow.sdg.reward import RewardModelRegistry
from winnow.usage import UsageService


@dataclass
class Runtime:
    settings: Settings
    db: Database
    keys: KeyService
    limiter: RateLimiter
    models: ModelRegistry
    generation: GenerationService
    rewards: RewardModelRegistry
    jobs: JobStore
    usage: UsageService
    feedback: FeedbackService
    fine_tuning: FineTuningService
    files: FileService
    prompts: PromptRegistry
    requests: RequestLog
    started_at: float = field(default_factory=time.time)

    metrics: Metrics = field(default_factory=Metrics)

    @classmethod
    def open(cls, settings: Settings, *, migrate: bool = True, metrics: Metrics | None = None) -> Runtime:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.effective_database_url)
        if migrate:
            db.migrate()
        models = ModelRegistry(settings, db)
        metrics = metrics or Metrics()
        jobs = JobStore(db, settings)
        usage = UsageService(db, settings, metrics)
        runtime = cls(
            settings=settings,
            db=db,
            keys=KeyService(db, cache_ttl_s=settings.key_cache_ttl_s),
            limiter=RateLimiter(
                settings.rate_limits,
                settings.redis_url,
                on_reject=lambda klass: metrics.rate_limited.labels(klass).inc(),
            ),
            models=models,
            generation=GenerationService(models, metrics, usage),
            rewards=RewardModelRegistry(settings, models),
            jobs=jobs,
            usage=usage,
            feedback=FeedbackService(db, usage, jobs),
            fine_tuning=FineTuningService(db, settings, jobs, models),
            files=FileService(db, settings),
            prompts=PromptRegistry(db),
            requests=RequestLog(db, settings.request_log, [m.id for m in settings.models if m.log_bodies]),
            metrics=metrics,
        )
        metrics.add_callback(
            "winnow_jobs", "Jobs (SDG and evaluations) by status, from the job store", "status", jobs.count_by_status
        )
        metrics.add_usage(usage.totals)
        metrics.add_family(
            "winnow_fine_tuning",
            "Running fine-tuning jobs' progress (step, total_steps, epoch, train_loss, validation_loss, "
            "tokens_per_second), from their job rows",
            ["job", "field"],
            runtime.fine_tuning.running_progress,
        )
        metrics.add_callback("winnow_local_queue_rows", "Rows waiting for a local model", "model", models.queue_depths)
        metrics.add_callback(
            "winnow_local_batches", "Local generate calls", "model", lambda: models.batch_totals()[0], counter=True
        )
        metrics.add_callback(
            "winnow_local_batch_rows",
            "Rows through local generate calls (divide by winnow_local_batches for the mean batch size)",
            "model",
            lambda: models.batch_totals()[1],
            counter=True,
        )
        for name, documentation, counter in (
            ("cooling", "1 while an upstream deployment is cooled down (skipped after failures)", False),
            ("in_flight", "Calls in flight per upstream deployment", False),
            ("requests", "Calls sent to each upstream deployment", True),
            ("failures", "Failed calls per upstream deployment", True),
            ("cooldowns", "Times each upstream deployment was cooled down", True),
        ):
            metrics.add_family(
                f"winnow_deployment_{name}",
                documentation,
                ["model", "deployment"],
                lambda name=name: models.deployment_figures()[name],  # type: ignore[misc]
                counter=counter,
            )
        return runtime

    def apply_budget(self, info: KeyInfo) -> None:
        """A key's budget changed here: enforce it in this process at once (others within a flush
        beat) and let its paused jobs try again."""
        self.usage.recorder.flush()  # writes what is buffered, then re-reads budgets and spend
        self.jobs.wake_paused(info.id)

    def close(self) -> None:
        self.requests.close()
        self.usage.close()
        self.db.dispose()

    async def aclose(self) -> None:
        await self.rewards.close()
        await self.models.close()
        self.close()

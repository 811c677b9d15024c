"""The services one Winnow process holds, built once from Settings and shared by the API and CLI."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from winnow.auth import KeyService, RateLimiter
from winnow.config import Settings
from winnow.db import Database
from winnow.models.registry import ModelRegistry
from winnow.models.service import GenerationService
from winnow.sdg.reward import RewardModelRegistry
from winnow.sdg.service import JobStore


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
    started_at: float = field(default_factory=time.time)

    @classmethod
    def open(cls, settings: Settings, *, migrate: bool = True) -> Runtime:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.effective_database_url)
        if migrate:
            db.migrate()
        models = ModelRegistry(settings)
        return cls(
            settings=settings,
            db=db,
            keys=KeyService(db, cache_ttl_s=settings.key_cache_ttl_s),
            limiter=RateLimiter(settings.rate_limits, settings.redis_url),
            models=models,
            generation=GenerationService(models),
            rewards=RewardModelRegistry(settings, models),
            jobs=JobStore(db, settings),
        )

    def close(self) -> None:
        self.db.dispose()

    async def aclose(self) -> None:
        await self.rewards.close()
        await self.models.close()
        self.close()

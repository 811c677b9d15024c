"""The services one Winnow process holds, built once from Settings and shared by the API and CLI."""

from __future__ import annotations

from dataclasses import dataclass

from winnow.auth import KeyService, RateLimiter
from winnow.config import Settings
from winnow.db import Database


@dataclass
class Runtime:
    settings: Settings
    db: Database
    keys: KeyService
    limiter: RateLimiter

    @classmethod
    def open(cls, settings: Settings, *, migrate: bool = True) -> Runtime:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.effective_database_url)
        if migrate:
            db.migrate()
        return cls(
            settings=settings,
            db=db,
            keys=KeyService(db, cache_ttl_s=settings.key_cache_ttl_s),
            limiter=RateLimiter(settings.rate_limits, settings.redis_url),
        )

    def close(self) -> None:
        self.db.dispose()

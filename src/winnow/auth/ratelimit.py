"""Per-key, per-class rate limits with the `limits` library (sliding window counter: constant memory
per key, exact within a window; memory or Redis)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

from winnow.auth.keys import Principal
from winnow.config import RateLimits
from winnow.errors import RateLimitExceeded


@dataclass(frozen=True)
class RateLimitState:
    limit: int
    remaining: int
    reset_epoch: int

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_epoch),
        }


@lru_cache(maxsize=256)
def _parse(limit: str) -> tuple[RateLimitItem, ...]:
    return tuple(parse_many(limit))


def _storage(redis_url: str | None) -> Storage:
    if not redis_url:
        return MemoryStorage()
    url = redis_url if redis_url.startswith("async+") else f"async+{redis_url}"
    storage = storage_from_string(url, implementation="redispy")
    assert isinstance(storage, Storage)  # the async+ scheme yields an async storage
    return storage


class RateLimiter:
    """Counts hits per (class, key) and refuses past the key's or the default limit."""

    def __init__(
        self, defaults: RateLimits, redis_url: str | None = None, on_reject: Callable[[str], None] | None = None
    ) -> None:
        self.defaults = defaults
        self.on_reject = on_reject
        self.storage = _storage(redis_url)
        self.strategy = SlidingWindowCounterRateLimiter(self.storage)

    def limit_for(self, principal: Principal, klass: str) -> str:
        return principal.rate_limits.get(klass) or getattr(self.defaults, klass)

    async def hit(self, principal: Principal, klass: str) -> RateLimitState:
        """Record one request; raise RateLimitExceeded (with Retry-After) when over the limit."""
        identifiers = (klass, principal.key_id or str(principal.id))
        state: RateLimitState | None = None
        for item in _parse(self.limit_for(principal, klass)):
            allowed = await self.strategy.hit(item, *identifiers)
            stats = await self.strategy.get_window_stats(item, *identifiers)
            reset = math.ceil(stats.reset_time)
            current = RateLimitState(item.amount, max(stats.remaining, 0), reset)
            if not allowed:
                if self.on_reject is not None:
                    self.on_reject(klass)
                retry_after = max(1, math.ceil(stats.reset_time - time.time()))
                raise RateLimitExceeded(
                    "Rate limit exceeded",
                    f"{klass} limit {item} for key {principal.name!r}; retry in {retry_after}s",
                    headers={"Retry-After": str(retry_after), **current.headers()},
                )
            if state is None or current.remaining < state.remaining:
                state = current
        assert state is not None
        return state

    async def reset(self) -> None:
        await self.storage.reset()

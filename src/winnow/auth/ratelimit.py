"""Per-key, per-class rate limits: a sliding window counter over the `limits` library's storage
(constant memory per key; in memory, or in Redis shared by every server process).

The window is read from the limiter's ``clock`` (``time.time`` unless given), so what a test sees
does not depend on how fast its requests run."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, Storage
from limits.storage import storage_from_string

from winnow.auth.keys import Principal
from winnow.config import RateLimits
from winnow.errors import RateLimitExceeded

Clock = Callable[[], float]


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
    """Counts hits per (class, key) and refuses past the key's or the default limit.

    Sliding window counter: one counter per fixed window (e.g. each calendar minute of the clock);
    a hit is allowed while ``floor(previous * (1 - elapsed) + current) <= limit``, where ``elapsed``
    is the fraction of the current window gone. Exact within a window; across a boundary the
    previous window's count is assumed spread evenly over it."""

    def __init__(
        self,
        defaults: RateLimits,
        redis_url: str | None = None,
        on_reject: Callable[[str], None] | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.defaults = defaults
        self.on_reject = on_reject
        self.storage = _storage(redis_url)
        self.clock = clock

    def limit_for(self, principal: Principal, klass: str) -> str:
        return principal.rate_limits.get(klass) or getattr(self.defaults, klass)

    async def hit(self, principal: Principal, klass: str) -> RateLimitState:
        """Record one request; raise RateLimitExceeded (with Retry-After) when over the limit."""
        identifiers = (klass, principal.key_id or str(principal.id))
        state: RateLimitState | None = None
        for item in _parse(self.limit_for(principal, klass)):
            now = self.clock()
            allowed, current, reset_in = await self._hit(item, item.key_for(*identifiers), now)
            if not allowed:
                if self.on_reject is not None:
                    self.on_reject(klass)
                retry_after = max(1, math.ceil(reset_in))
                raise RateLimitExceeded(
                    "Rate limit exceeded",
                    f"{klass} limit {item} for key {principal.name!r}; retry in {retry_after}s",
                    headers={"Retry-After": str(retry_after), **current.headers()},
                )
            if state is None or current.remaining < state.remaining:
                state = current
        assert state is not None
        return state

    async def _hit(self, item: RateLimitItem, key: str, now: float) -> tuple[bool, RateLimitState, float]:
        """Count one hit of ``item`` under ``key`` at ``now`` (taken back when over the limit): whether
        it was allowed, the state after it, and the seconds until one more hit would be allowed."""
        expiry = item.get_expiry()
        window, elapsed = divmod(now, expiry)
        previous_key, current_key = f"{key}/{int(window) - 1}", f"{key}/{int(window)}"
        previous = await self.storage.get(previous_key)
        current = await self.storage.incr(current_key, 2 * expiry)  # kept while it is the previous window
        weight = 1 - elapsed / expiry
        allowed = math.floor(previous * weight + current) <= item.amount
        if not allowed:
            current = await self.storage.incr(current_key, 2 * expiry, amount=-1)
        remaining = max(0, item.amount - math.floor(previous * weight + current))
        # One more hit fits when the current window ends, or sooner, when the previous window's
        # weighted share has dropped by one (it falls by previous/expiry a second).
        reset_in = expiry - elapsed
        if previous:
            reset_in = min(reset_in, (expiry - elapsed) % (expiry / previous))
        return allowed, RateLimitState(item.amount, remaining, math.ceil(now + reset_in)), reset_in

    async def reset(self) -> None:
        await self.storage.reset()

"""The exact-response cache of an upstream model (``cache: {ttl_s, backend}`` in its config, opt-in).

Only deterministic requests are cached: a non-streamed /v1 request with ``temperature: 0`` or a
fixed ``seed``. The key is the SHA-256 of the request as forwarded (model, path and every field,
keys sorted, integral numbers as integers), so two requests share an answer exactly when the upstream would have been asked the
same thing. ``memory`` keeps up to ``max_entries`` answers in this process (least recently used go
first); ``redis`` keeps them in the Redis that ``WINNOW_REDIS_URL`` names, shared by every process,
and a Redis that cannot be reached is a miss, never a failed request.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from winnow.config import CacheConfig

log = logging.getLogger("winnow.cache")
CACHE_HEADER = "x-winnow-cache"  # hit or miss, on cacheable requests
_PREFIX = "winnow:response:"


def cache_key(model_id: str, path: str, sent: dict[str, Any]) -> str | None:
    """The key of a cacheable request (see the module's docstring), or None for one that is not."""
    if sent.get("stream"):
        return None
    temperature, seed = sent.get("temperature"), sent.get("seed")
    deterministic = (isinstance(temperature, (int, float)) and temperature == 0) or isinstance(seed, int)
    if not deterministic:
        return None
    normal = orjson.dumps(_normal({**sent, "model": model_id, "path": path}), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(normal).hexdigest()


def _normal(value: Any) -> Any:
    """JSON's one number type: 0 and 0.0 are the same request."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    return value


class ResponseCache:
    """Cached answers (JSON bytes) by key, for ``ttl_s`` seconds."""

    def __init__(self, config: CacheConfig, redis_url: str | None, model_id: str) -> None:
        self.ttl_s = config.ttl_s
        self.max_entries = config.max_entries
        self._memory: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._redis: aioredis.Redis | None = None
        if config.backend == "redis":
            if not redis_url:
                raise ValueError(f"model {model_id!r}: cache backend redis needs WINNOW_REDIS_URL")
            self._redis = aioredis.Redis.from_url(redis_url)

    async def get(self, key: str) -> bytes | None:
        if self._redis is not None:
            try:
                found = await self._redis.get(_PREFIX + key)
            except RedisError as exc:
                log.warning("response cache: Redis is unreachable, a miss (%s)", exc)
                return None
            return found if isinstance(found, bytes) else None
        entry = self._memory.get(key)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            del self._memory[key]
            return None
        self._memory.move_to_end(key)
        return entry[1]

    async def put(self, key: str, value: bytes) -> None:
        if self._redis is not None:
            try:
                await self._redis.set(_PREFIX + key, value, px=max(1, int(self.ttl_s * 1000)))
            except RedisError as exc:
                log.warning("response cache: Redis is unreachable, not kept (%s)", exc)
            return
        self._memory[key] = (time.monotonic() + self.ttl_s, value)
        self._memory.move_to_end(key)
        while len(self._memory) > self.max_entries:
            self._memory.popitem(last=False)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

"""Local models share one memory budget: loaded lazily, evicted least-recently-used."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("winnow.models")


@dataclass
class Resident:
    value: Any
    nbytes: int
    last_used: float = field(default_factory=time.monotonic)


class ModelPool:
    """Holds loaded models under ``budget_bytes`` (0 = unbounded), evicting least-recently-used first."""

    def __init__(self, budget_bytes: int = 0) -> None:
        self.budget_bytes = budget_bytes
        self._resident: OrderedDict[str, Resident] = OrderedDict()
        self._lock = threading.RLock()
        # One load at a time, whatever the model: transformers resolves its lazy submodules
        # unsafely from two threads, and vLLM sizes its KV cache from the memory free while it
        # starts, which a second model loading beside it would change.
        self.load_lock = threading.Lock()

    @property
    def used_bytes(self) -> int:
        return sum(r.nbytes for r in self._resident.values())

    def loaded(self) -> list[str]:
        return list(self._resident)

    def peek(self, key: str) -> Any | None:
        """The resident value for ``key`` without loading (marks it used), or None."""
        with self._lock:
            resident = self._resident.get(key)
            if resident is None:
                return None
            resident.last_used = time.monotonic()
            self._resident.move_to_end(key)
            return resident.value

    def get(self, key: str, load: Callable[[], tuple[Any, int]], expected_bytes: int = 0) -> Any:
        """The resident value for ``key``, loading it (blocking) after making room when needed."""
        value = self.peek(key)
        if value is not None:
            return value
        with self.load_lock:
            with self._lock:
                if key in self._resident:
                    return self._resident[key].value
                self._make_room(expected_bytes)
            value, nbytes = load()
            with self._lock:
                self._resident[key] = Resident(value, nbytes)
                self._make_room(0)
                log.info("loaded %s (%.1f MB; pool %.1f MB)", key, nbytes / 2**20, self.used_bytes / 2**20)
            return value

    def _make_room(self, incoming: int) -> None:
        if not self.budget_bytes:
            return
        for key in list(self._resident):
            if self.used_bytes + incoming <= self.budget_bytes:
                return
            if len(self._resident) == 1 and incoming == 0:
                return  # never evict the only model just loaded
            self._evict(key)  # a batch already running keeps its own reference until it ends

    def _evict(self, key: str) -> None:
        resident = self._resident.pop(key)
        close = getattr(resident.value, "close", None)
        if callable(close):
            close()
        log.info("evicted %s (%.1f MB)", key, resident.nbytes / 2**20)

    def evict(self, key: str) -> None:
        with self._lock:
            if key in self._resident:
                self._evict(key)

    def clear(self) -> None:
        with self._lock:
            for key in list(self._resident):
                self._evict(key)

"""Usage rows, buffered in memory and written in bulk by a background thread.

The request path only appends to a list (no database round trip); every ``usage_flush_s`` the
flusher writes what has gathered in one INSERT and re-syncs the budget ledger. ``flush()`` writes
at once (reads of /usage, job checkpoints, shutdown). A failed write keeps the rows for the next
beat, so a database hiccup loses nothing.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert

from winnow.db import Database, UsageRecord
from winnow.usage.budgets import BudgetLedger

log = logging.getLogger("winnow.usage")


@dataclass
class UsageEvent:
    key_id: int
    model: str
    source: str  # api|v1|job|eval
    input_tokens: int
    output_tokens: int
    latency_ms: float
    cost_usd: float
    generation_id: str | None = None
    job_id: str | None = None
    content: dict[str, Any] | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    budgeted: bool = False  # counted in the ledger's pending spend

    def row(self) -> dict[str, Any]:
        data = asdict(self)
        del data["budgeted"]
        data["day"] = self.created_at.date().isoformat()
        return data


class UsageRecorder:
    def __init__(self, db: Database, ledger: BudgetLedger, flush_s: float = 1.0) -> None:
        self.db = db
        self.ledger = ledger
        self.flush_s = flush_s
        self._buffer: list[UsageEvent] = []
        self._lock = threading.Lock()  # guards the buffer
        self._flush_lock = threading.Lock()  # one flush at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self, event: UsageEvent) -> None:
        event.budgeted = self.ledger.add(event.key_id, event.cost_usd, event.input_tokens + event.output_tokens)
        with self._lock:
            self._buffer.append(event)

    def flush(self) -> int:
        """Write everything buffered now; returns the rows written."""
        with self._flush_lock:
            with self._lock:
                events, self._buffer = self._buffer, []
            if events:
                try:
                    with self.db.session() as session:
                        session.execute(insert(UsageRecord), [e.row() for e in events])
                except Exception:
                    with self._lock:
                        self._buffer[:0] = events
                    raise
            written = [(e.key_id, e.cost_usd, e.input_tokens + e.output_tokens) for e in events if e.budgeted]
            try:
                self.ledger.sync(self.db, written)
            except Exception:
                self.ledger.settle(written)  # written, so no longer pending, even if the re-read failed
                raise
            return len(events)

    def start(self) -> None:
        if self._thread is None:
            self.ledger.sync(self.db)
            self._thread = threading.Thread(target=self._loop, name="winnow-usage-flush", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_s):
            try:
                self.flush()
            except Exception:
                log.exception("writing usage failed; will retry")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        try:
            self.flush()
        except Exception:
            log.exception("writing usage at shutdown failed; %d rows lost", len(self._buffer))

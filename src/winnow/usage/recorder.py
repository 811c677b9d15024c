"""Usage rows, buffered in memory and written in bulk by a background thread.

The request path only appends to a list (no database round trip); every ``usage_flush_s`` the
flusher writes what has gathered in one INSERT and re-syncs the budget ledger. ``flush()`` writes
at once (reads of /usage, shutdown). A failed write keeps the rows for the next beat, so a
database hiccup loses nothing.

A job's rows take another road: they are held (counted against the owner's budget at once) and
written by ``write_with`` in the very transaction that saves the checkpoint of their chunk, so a
chunk is billed exactly when it is done: never twice when a crash makes it be redone, never lost.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from sqlalchemy import Dialect, Table, delete, insert, select
from sqlalchemy.orm import Session

from winnow.db import Database, UsageRecord
from winnow.usage.budgets import BudgetLedger

log = logging.getLogger("winnow.usage")
USAGE_TABLE = cast(Table, UsageRecord.__table__)
T = TypeVar("T")


@dataclass
class UsageEvent:
    key_id: int
    model: str
    source: str  # api|v1|job|eval|cli
    input_tokens: int
    output_tokens: int
    latency_ms: float
    cost_usd: float
    generation_id: str | None = None
    job_id: str | None = None
    content: dict[str, Any] | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    deployment: str | None = None  # an upstream model's deployment that answered
    attempts: int | None = None  # upstream calls it took (retries and fallbacks included)
    cached: bool = False  # answered from the response cache, at no upstream cost
    budgeted: bool = False  # counted in the ledger's pending spend

    def row(self) -> dict[str, Any]:
        # Field by field: dataclasses.asdict deep-copies (the content too), ~20x the cost per row.
        return {
            "key_id": self.key_id,
            "model": self.model,
            "source": self.source,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "latency_ms": self.latency_ms,
            "cost_usd": self.cost_usd,
            "generation_id": self.generation_id,
            "job_id": self.job_id,
            "content": self.content,
            "deployment": self.deployment,
            "attempts": self.attempts,
            "cached": self.cached,
            "created_at": self.created_at,
            "day": self.created_at.date().isoformat(),
        }


def insert_rows(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Usage rows (``UsageEvent.row()``) into the caller's transaction."""
    if not rows:
        return
    connection = session.connection()
    if connection.dialect.name == "sqlite":
        # The driver's executemany on tuples made by the columns' own bind processors: the same
        # stored values as a Core insert at a quarter of its Python per row (~3 of ~14 us), and
        # sqlite3 lets go of the GIL while it writes. The flusher shares the server's GIL, so its
        # Python time is time the event loop waits: this is what kept /v1's p99 up.
        statement, columns = _sqlite_insert(connection.dialect)
        for start in range(0, len(rows), _SLICE):
            if start:
                time.sleep(0)  # let the event loop have the GIL between slices
            connection.exec_driver_sql(
                statement,
                [tuple(p(r[c]) if p else r[c] for c, p in columns) for r in rows[start : start + _SLICE]],
            )
    else:
        # A Core insert of the table: the ORM's bulk insert costs about half again per row.
        session.execute(insert(USAGE_TABLE), list(rows))


_SLICE = 32  # rows bound and written between two chances for the event loop to run
_Columns = list[tuple[str, Callable[[Any], Any] | None]]


@functools.cache
def _sqlite_insert(dialect: Dialect) -> tuple[str, _Columns]:
    """The positional INSERT of every column but the id, and each column's bind processor."""
    names = [c.name for c in USAGE_TABLE.columns if c.name != "id"]
    columns: _Columns = [(n, USAGE_TABLE.c[n].type.dialect_impl(dialect).bind_processor(dialect)) for n in names]
    return f"INSERT INTO {USAGE_TABLE.name} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})", columns


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
        self.hold(event)
        with self._lock:
            self._buffer.append(event)

    def hold(self, event: UsageEvent) -> None:
        """Count ``event`` against its key's budget now; it is written later (``write_with``)."""
        event.budgeted = self.ledger.add(event.key_id, event.cost_usd, event.input_tokens + event.output_tokens)

    def write_with(self, events: Sequence[UsageEvent], write: Callable[[list[dict[str, Any]]], T]) -> T:
        """Held ``events`` written by ``write``, which inserts their rows (``insert_rows``) in the
        same transaction as what it saves, and returns what it returns. Afterwards, written or not,
        the events no longer count as pending: the budget ledger re-reads the key's spend."""
        with self._flush_lock:  # no flusher re-reads spend between our commit and the settle
            try:
                return write([e.row() for e in events])
            finally:
                written = _settle(events)
                if written:
                    try:
                        self.ledger.sync(self.db, written)
                    except Exception:
                        self.ledger.settle(written)
                        log.exception("re-reading budgets after a checkpoint failed")

    def insert(self, rows: Sequence[dict[str, Any]]) -> None:
        """Usage rows in a transaction of their own."""
        with self.db.session() as session:
            insert_rows(session, rows)

    def release(self, events: Sequence[UsageEvent]) -> None:
        """Held events that will never be written (their chunk was not checkpointed and will be
        redone, and billed, by whoever redoes it) stop counting against the budget."""
        self.ledger.settle(_settle(events))

    def trim(self, job_id: str, keep: int) -> int:
        """Cut a run's rows back to its first ``keep`` (what its checkpoint says was written), as a
        resumed run cuts its files: rows written for a chunk whose checkpoint never followed go."""
        with self.db.session() as session:
            ids = select(UsageRecord.id).where(UsageRecord.job_id == job_id).order_by(UsageRecord.id)
            extra = list(session.scalars(ids.offset(keep)))
            if extra:
                session.execute(delete(UsageRecord).where(UsageRecord.id.in_(extra)))
            return len(extra)

    def flush(self) -> int:
        """Write everything buffered now; returns the rows written."""
        with self._flush_lock:
            with self._lock:
                events, self._buffer = self._buffer, []
            if events:
                try:
                    self.insert(_rows(events))
                except Exception:
                    with self._lock:
                        self._buffer[:0] = events
                    raise
            written = _settle(events)
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


def _rows(events: Sequence[UsageEvent]) -> list[dict[str, Any]]:
    """The events' rows, made a slice at a time with the GIL let go in between (see insert_rows)."""
    rows = []
    for start in range(0, len(events), _SLICE):
        if start:
            time.sleep(0)
        rows += [e.row() for e in events[start : start + _SLICE]]
    return rows


def _settle(events: Sequence[UsageEvent]) -> list[tuple[int, float, int]]:
    """The (key, usd, tokens) of the events still counted as pending spend, now no longer counted."""
    settled = []
    for event in events:
        if event.budgeted:
            settled.append((event.key_id, event.cost_usd, event.input_tokens + event.output_tokens))
            event.budgeted = False
    return settled

"""The request log's writer: entries buffered in memory, written in bulk by a background thread.

The request path appends a finished ``Entry`` to a list and nothing else; every ``flush_s`` a
thread turns what has gathered into rows (error codes read from error bodies, bodies decoded,
capped and redacted where they are kept) and writes them in one INSERT. Every ``sweep_s`` it
applies retention: rows older than ``retention_days`` go, stored bodies older than
``body_retention_days`` are cleared. A failed write keeps the entries for the next beat.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import orjson
from sqlalchemy import Dialect, Table, delete, insert, or_, update
from sqlalchemy.orm import Session

from winnow.db import Database
from winnow.ids import hex_id
from winnow.redact import redact
from winnow.requests.config import RequestLogConfig
from winnow.requests.context import Entry
from winnow.requests.table import RequestRecord

log = logging.getLogger("winnow.requests")
TABLE = cast(Table, RequestRecord.__table__)
_SLICE = 32  # rows made and written between two chances for the event loop to run
ERROR_BODY_BYTES = 4096  # an error body is read for its code, whether bodies are kept or not


class RequestLog:
    def __init__(self, db: Database, config: RequestLogConfig, body_models: Sequence[str] = ()) -> None:
        self.db = db
        self.config = config
        self.enabled = config.enabled
        self.body_keys = frozenset(config.body_keys)
        self.body_models = frozenset(body_models)
        # Bodies are read off the wire only when some call may keep them.
        self.capture_bodies = config.enabled and (config.bodies or bool(self.body_keys or self.body_models))
        self._buffer: list[tuple[Entry, str | None]] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, entry: Entry, key_name: str | None) -> None:
        """A finished request, written at the next beat."""
        with self._lock:
            self._buffer.append((entry, key_name))

    def keeps_bodies(self, key_name: str | None, model: str | None) -> bool:
        return self.config.bodies or key_name in self.body_keys or model in self.body_models

    def flush(self) -> int:
        """Write everything buffered now; returns the rows written."""
        with self._flush_lock:
            with self._lock:
                entries, self._buffer = self._buffer, []
            if not entries:
                return 0
            try:
                rows = []
                for start in range(0, len(entries), _SLICE):
                    if start:
                        time.sleep(0)  # let the event loop have the GIL between slices
                    rows += [self.row(entry, key_name) for entry, key_name in entries[start : start + _SLICE]]
                with self.db.session() as session:
                    write_rows(session, rows)
            except Exception:
                with self._lock:
                    self._buffer[:0] = entries
                raise
            return len(rows)

    def row(self, entry: Entry, key_name: str | None) -> dict[str, Any]:
        keep = entry.request_body is not None and self.keeps_bodies(key_name, entry.model)
        return {
            "id": f"req_{hex_id()}",
            "created_at": entry.created_at,
            "request_id": entry.request_id,
            "key_id": entry.key_id,
            "method": entry.method,
            "path": entry.path[:200],
            "model": entry.model,
            "deployment": entry.deployment,
            "attempts": entry.attempts,
            "attempt_log": entry.attempt_log or None,
            "cached": entry.cached,
            "status": entry.status,
            "error_code": error_code(entry.response_body) if entry.status >= 400 else None,
            "latency_ms": round(entry.latency_ms, 3),
            "ttft_ms": None if entry.ttft_ms is None else round(entry.ttft_ms, 3),
            "input_tokens": entry.input_tokens,
            "output_tokens": entry.output_tokens,
            "cost_usd": round(entry.cost_usd, 10),
            "generation_id": entry.generation_id,
            "request_body": self._body(entry.request_body) if keep else None,
            "response_body": self._body(entry.response_body) if keep else None,
        }

    def _body(self, raw: bytes | None) -> str | None:
        if raw is None:
            return None
        cap = self.config.body_max_bytes
        text = raw[:cap].decode("utf-8", "replace")
        return redact(text) + ("…" if len(raw) > cap else "")

    def sweep(self, now: datetime | None = None) -> tuple[int, int]:
        """Retention: (rows deleted, rows whose bodies were cleared)."""
        now = now or datetime.now(UTC)
        old = now - timedelta(days=self.config.retention_days)
        stale = now - timedelta(days=self.config.body_retention_days)
        with self.db.session() as session:
            deleted = session.execute(delete(RequestRecord).where(RequestRecord.created_at < old))
            has_body = or_(RequestRecord.request_body.is_not(None), RequestRecord.response_body.is_not(None))
            cleared = session.execute(
                update(RequestRecord)
                .where(RequestRecord.created_at < stale, has_body)
                .values(request_body=None, response_body=None)
            )
        return int(getattr(deleted, "rowcount", 0) or 0), int(getattr(cleared, "rowcount", 0) or 0)

    def start(self) -> None:
        if self._thread is None and self.enabled:
            self._thread = threading.Thread(target=self._loop, name="winnow-request-log", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        next_sweep = time.monotonic()  # at the first beat, then every sweep_s
        while not self._stop.wait(self.config.flush_s):
            try:
                self.flush()
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + self.config.sweep_s
                    self.sweep()
            except Exception:
                log.exception("writing the request log failed; will retry")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        try:
            self.flush()
        except Exception:
            log.exception("writing the request log at shutdown failed; %d rows lost", len(self._buffer))


def write_rows(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Log rows into the caller's transaction. On SQLite, the driver's executemany on tuples made by
    the columns' own bind processors, a slice at a time with the GIL let go in between: the writer
    shares the server's GIL, and its Python time is time the event loop waits (as usage rows do,
    ``winnow.usage.recorder.insert_rows``)."""
    connection = session.connection()
    if connection.dialect.name != "sqlite":
        session.execute(insert(TABLE), list(rows))
        return
    statement, columns = _sqlite_insert(connection.dialect)
    for start in range(0, len(rows), _SLICE):
        if start:
            time.sleep(0)
        batch = rows[start : start + _SLICE]
        connection.exec_driver_sql(statement, [tuple(p(r[c]) if p else r[c] for c, p in columns) for r in batch])


@functools.cache
def _sqlite_insert(dialect: Dialect) -> tuple[str, list[tuple[str, Callable[[Any], Any] | None]]]:
    names = [c.name for c in TABLE.columns]
    columns: list[tuple[str, Callable[[Any], Any] | None]] = [
        (n, TABLE.c[n].type.dialect_impl(dialect).bind_processor(dialect)) for n in names
    ]
    return f"INSERT INTO {TABLE.name} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})", columns


def error_code(body: bytes | None) -> str | None:
    """The code of an error body: OpenAI's ``error.code`` (else its ``type``) or the spec's ``error``."""
    if not body:
        return None
    try:
        value = orjson.loads(body[:ERROR_BODY_BYTES])
    except orjson.JSONDecodeError:
        return None
    error = value.get("error") if isinstance(value, dict) else None
    if isinstance(error, dict):
        error = error.get("code") or error.get("type")
    return str(error)[:64] if error else None

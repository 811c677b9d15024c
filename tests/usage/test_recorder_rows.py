"""The usage flusher's SQLite fast path (the driver's executemany, see ``insert_rows``) stores every
column exactly as SQLAlchemy's Core insert does, and the ORM reads the rows back the same."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert, select

from winnow.db import Database, UsageRecord
from winnow.usage.recorder import USAGE_TABLE, UsageEvent, insert_rows


def _events() -> list[UsageEvent]:
    when = datetime(2026, 12, 3, 4, 5, 6, 789012, tzinfo=UTC)
    return [
        UsageEvent(
            1, "demo-lm", "api", 13, 2, 4.25, 0.0, "gen-1", None, {"prompt": "Wie viel ist 2+2? ✓", "text": "4"}, when
        ),
        UsageEvent(2, "relay", "v1", 9, 1, 0.5, 1.5e-6, None, "job-x", None, when, "d1", 2, True),
        UsageEvent(3, "relay", "v1", 0, 0, 0.0, 0.0, None, None, {"n": [1, 2.5, None, True]}, when, None, None, False),
    ] * 40  # past one slice of the fast path


def test_the_fast_path_stores_what_a_core_insert_stores(tmp_path: Path) -> None:
    stored = {}
    for name in ("core", "fast"):
        db = Database(f"sqlite:///{tmp_path / name}.db")
        db.migrate()
        rows = [e.row() for e in _events()]
        with db.session() as session:
            if name == "core":
                session.execute(insert(USAGE_TABLE), rows)
            else:
                insert_rows(session, rows)
        with db.session() as session:
            read = [r.__dict__ for r in session.scalars(select(UsageRecord).order_by(UsageRecord.id))]
        stored[name] = (
            sqlite3.connect(tmp_path / f"{name}.db").execute("SELECT * FROM usage_records ORDER BY id").fetchall(),
            [{k: v for k, v in r.items() if not k.startswith("_")} for r in read],
        )
        db.dispose()
    assert len(stored["fast"][0]) == 120
    assert stored["fast"] == stored["core"]

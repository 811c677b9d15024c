"""Migrations on SQLite (default) and a real PostgreSQL; upgrades keep data."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, text

from tests.db.test_migrations import HEAD
from winnow.auth import KeyService
from winnow.db import Database, JobShard, SdgJob
from winnow.errors import Conflict


def test_sqlite_uses_wal_and_a_busy_timeout(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/w.db")
    with db.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 10000


def test_migrations_are_idempotent_and_keep_data(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/w.db"
    db = Database(url)
    db.migrate()
    key = KeyService(db).create("keep").key
    db.dispose()
    again = Database(url)
    again.migrate()
    assert KeyService(again).authenticate(key).name == "keep"
    with again.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD


@pytest.fixture
def postgres_db(postgres_url: str) -> Iterator[Database]:
    db = Database(postgres_url)
    yield db
    db.dispose()


def test_postgresql_migrates_and_serves_keys(postgres_db: Database) -> None:
    postgres_db.migrate()
    postgres_db.migrate()
    keys = KeyService(postgres_db)
    secret = keys.create("pg", admin=True).key
    assert keys.authenticate(secret).is_admin
    with pytest.raises(Conflict):  # the last live admin key (its check locks rows FOR UPDATE here)
        keys.revoke("pg")
    keys.create("pg-2", admin=True)
    keys.revoke("pg")
    keys.create("pg")
    assert len(keys.list(include_revoked=True)) == 3
    assert postgres_db.ping()


def test_upgrading_to_shards_resumes_jobs_that_were_in_flight(tmp_path: Path) -> None:
    """A job running under the one-worker store (0003) becomes one shard carrying its checkpoint."""
    db = Database(f"sqlite:///{tmp_path}/w.db")
    db.migrate("0003")
    checkpoint = {"work_dir": "/data/jobs/job-1/work-2", "chunks_done": 3, "offsets": {"partial": 10}}
    with db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO sdg_jobs (id, kind, owner_key_id, params, status, stage, prompts_path, prompts_total,"
                " prompts_sha256, output_path, checkpoint, cancel_requested, worker, attempts, output_bytes,"
                " created_at, updated_at) VALUES (:id, 'sdg', 1, '{}', :status, 'generating', 'p', 500, 'x', 'o',"
                " :checkpoint, 0, 'host:1:a', 2, 0, '2026-11-28 00:00:00', '2026-11-28 00:00:00')"
            ),
            [
                {"id": "job-running", "status": "running", "checkpoint": json.dumps(checkpoint)},
                {"id": "job-done", "status": "completed", "checkpoint": json.dumps(checkpoint)},
            ],
        )
    db.migrate()
    with db.session() as session:
        shards = session.scalars(select(JobShard)).all()
        assert [(s.job_id, s.first_row, s.rows, s.status, s.attempts) for s in shards] == [
            ("job-running", 0, 500, "queued", 2)
        ]
        assert shards[0].checkpoint == checkpoint
        running = session.get(SdgJob, "job-running")
        assert running is not None and running.checkpoint == {} and running.worker is None
    db.dispose()

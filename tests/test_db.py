"""Migrations on SQLite (default) and a real PostgreSQL; upgrades keep data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from winnow.auth import KeyService
from winnow.db import Database


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
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0004"


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
    keys.revoke("pg")
    keys.create("pg")
    assert len(keys.list(include_revoked=True)) == 2
    assert postgres_db.ping()

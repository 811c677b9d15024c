"""Migrations on SQLite (default) and a real PostgreSQL; upgrades keep data."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import POSTGRES_URL, reachable
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
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0003"


@pytest.fixture
def postgres_db() -> Iterator[Database]:
    if not reachable("127.0.0.1", 5432):
        pytest.skip("no PostgreSQL server on 127.0.0.1:5432")
    schema = f"winnow_test_{uuid.uuid4().hex[:8]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in POSTGRES_URL else "?"
    db = Database(f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}")
    try:
        yield db
    finally:
        db.dispose()
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


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

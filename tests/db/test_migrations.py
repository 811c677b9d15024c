"""The whole migration chain, on SQLite and a real PostgreSQL: base → 0001 → … → head with rows
written at every step (keys, jobs, usage, feedback) that the app still serves at head; downgrades
back and upgrades again; and several processes migrating one fresh PostgreSQL schema at once."""

from __future__ import annotations

import multiprocessing
import queue
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from fastapi.testclient import TestClient
from sqlalchemy import MetaData, inspect, select, text

from tests.conftest import bearer
from winnow.api import create_app
from winnow.auth.keys import hash_key
from winnow.config import Settings
from winnow.db import Base, Database
from winnow.db.session import MIGRATIONS_DIR

REVISIONS = sorted(path.name.split("_", 1)[0] for path in (MIGRATIONS_DIR / "versions").glob("[0-9]*.py"))
HEAD = REVISIONS[-1]
T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
ADMIN_SECRET = "wn-" + "a" * 43
OLD_SECRET = "wn-" + "b" * 43
CHECKPOINT = {"work_dir": "/data/jobs/job-running/work-1", "chunks_done": 2, "offsets": {"partial": 10}}
CONTENT = {"prompt": "What is 2+2?", "responses": ["4"]}
PROMPT_ID = "prompt-" + "0" * 24


def _job(job_id: str, status: str, checkpoint: dict[str, Any], worker: str | None) -> dict[str, Any]:
    return {
        "id": job_id,
        "owner_key_id": 1,
        "params": {"model": "demo-lm", "num_generations": 2},
        "status": status,
        "stage": "generating" if status == "running" else status,
        "prompts_path": "/data/prompts.jsonl",
        "prompts_total": 40,
        "prompts_sha256": "0" * 64,
        "output_path": f"/data/jobs/{job_id}/output.jsonl",
        "checkpoint": checkpoint,
        "error": None,
        "cancel_requested": False,
        "worker": worker,
        "lease_until": T0 if worker else None,
        "attempts": 1,
        "output_bytes": 0,
        "created_at": T0,
        "started_at": T0,
        "finished_at": T0 if status == "completed" else None,
        "updated_at": T0,
    }


def _usage(row_id: int, source: str, tokens: tuple[int, int], cost: float) -> dict[str, Any]:
    return {
        "id": row_id,
        "created_at": T0,
        "day": "2026-11-28",
        "key_id": 1,
        "model": "demo-lm",
        "source": source,
        "job_id": None,
        "generation_id": f"gen-{row_id}",
        "input_tokens": tokens[0],
        "output_tokens": tokens[1],
        "latency_ms": 12.5,
        "cost_usd": cost,
        "content": CONTENT,
    }


# What each revision's tables get, written right after migrating to it (column names of that revision).
ROWS: dict[str, dict[str, list[dict[str, Any]]]] = {
    "0001": {
        "api_keys": [
            {
                "id": 1,
                "name": "admin",
                "key_hash": hash_key(ADMIN_SECRET),
                "prefix": ADMIN_SECRET[:10],
                "is_admin": True,
                "rate_limits": {"generation": "500/minute"},
                "created_at": T0,
                "revoked_at": None,
            },
            {
                "id": 2,
                "name": "old",
                "key_hash": hash_key(OLD_SECRET),
                "prefix": OLD_SECRET[:10],
                "is_admin": False,
                "rate_limits": None,
                "created_at": T0,
                "revoked_at": T0,
            },
        ]
    },
    "0002": {
        "sdg_jobs": [
            _job("job-done", "completed", {"chunks_done": 4}, None),
            _job("job-running", "running", CHECKPOINT, "host:1:w"),
        ]
    },
    "0003": {
        "usage_records": [_usage(1, "api", (13, 3), 0.25), _usage(2, "v1", (20, 5), 0.5)],
        "feedback": [
            {
                "id": "fb-" + "0" * 24,
                "owner_key_id": 1,
                "created_at": T0,
                "target": "generation",
                "generation_id": "gen-1",
                "job_id": None,
                "row_id": None,
                "row_index": 0,
                "model": "demo-lm",
                "prompt": CONTENT["prompt"],
                "response": "4",
                "rating": 1.0,
                "rating_scale": "thumbs",
                "labels": ["correct"],
                "comment": "kept",
                "corrected_response": None,
            }
        ],
    },
    "0005": {  # a routed call: which deployment, after how many attempts; a cache hit costs 0
        "usage_records": [
            {**_usage(3, "v1", (7, 2), 0.0), "deployment": "east", "attempts": 2, "cached": True},
        ]
    },
    "0006": {  # a fine-tuning job's model, served from this table
        "fine_tuned_models": [
            {
                "id": "demo-lm:ft-old-" + "0" * 8,
                "base_model": "demo-lm",
                "job_id": "ftjob-" + "0" * 24,
                "owner_key_id": 1,
                "config": {"id": "demo-lm:ft-old-" + "0" * 8, "path": "/nowhere", "adapter_path": "/nowhere/adapter"},
                "created_at": T0,
            }
        ]
    },
    "0007": {  # an upload, recorded; a key's own storage quota
        "files": [
            {
                "id": "file-" + "0" * 24,
                "key_id": 1,
                "filename": "prompts.jsonl",
                "purpose": "prompts",
                "bytes": 1234,
                "rows": 10,
                "path": "/data/files/1/file-" + "0" * 24 + ".jsonl",
                "created_at": T0,
            }
        ]
    },
    "0008": {  # a stored /v1/responses answer and the conversation it continues
        "responses": [
            {
                "id": "resp_" + "0" * 32,
                "key_id": 1,
                "model": "demo-lm",
                "response": {"id": "resp_" + "0" * 32, "object": "response", "status": "completed"},
                "input_items": [{"id": "msg_" + "0" * 32, "type": "message", "role": "user"}],
                "conversation": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "4"}],
                "created_at": T0,
            }
        ]
    },
    "0010": {  # a logged call with a failed attempt before the one that answered
        "request_log": [
            {
                "id": "req_" + "0" * 32,
                "created_at": T0,
                "request_id": "r-1",
                "key_id": 1,
                "method": "POST",
                "path": "/v1/chat/completions",
                "model": "demo-lm",
                "deployment": "b",
                "attempts": 2,
                "attempt_log": [{"deployment": "a", "error": "upstream_error"}, {"deployment": "b", "error": None}],
                "cached": False,
                "status": 200,
                "error_code": None,
                "latency_ms": 12.5,
                "ttft_ms": 12.0,
                "input_tokens": 9,
                "output_tokens": 1,
                "cost_usd": 0.0001,
                "generation_id": "chatcmpl-1",
                "request_body": None,
                "response_body": None,
            }
        ]
    },
    "0011": {  # a prompt with one version and a label on it
        "prompts": [
            {
                "id": PROMPT_ID,
                "key_id": 1,
                "name": "qa",
                "description": None,
                "latest_version": 1,
                "created_at": T0,
                "updated_at": T0,
            }
        ],
        "prompt_versions": [
            {
                "id": f"{PROMPT_ID}.v000001",
                "prompt_id": PROMPT_ID,
                "version": 1,
                "template": "Q: {question}",
                "system": None,
                "params": {"temperature": 0.0},
                "model": "demo-lm",
                "source": "manual",
                "message": None,
                "meta": {},
                "created_at": T0,
            }
        ],
        "prompt_labels": [{"prompt_id": PROMPT_ID, "label": "production", "version": 1, "updated_at": T0}],
    },
}
# Columns an older revision's rows get from a newer revision (server defaults, added nullable columns).
ADDED = {
    "0003": {"sdg_jobs": {"kind": "sdg", "resume_at": None}},
    "0005": {"usage_records": {"deployment": None, "attempts": None, "cached": False}},
    "0007": {"api_keys": {"storage_quota_bytes": None}},
}
ROUTING = ("deployment", "attempts", "cached")


def _normal(value: Any) -> Any:
    """SQLite hands back naive UTC datetimes, PostgreSQL aware ones; compare them as UTC."""
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return value


def _stored(db: Database, table: str, columns: list[str]) -> list[dict[str, Any]]:
    meta = MetaData()
    with db.engine.connect() as conn:
        meta.reflect(conn, only=[table])
        t = meta.tables[table]
        rows = conn.execute(select(*(t.c[c] for c in columns)).order_by(*t.primary_key.columns)).mappings()
        return [{c: _normal(row[c]) for c in columns} for row in rows]


def _insert(db: Database, table: str, rows: list[dict[str, Any]]) -> None:
    meta = MetaData()
    with db.engine.begin() as conn:
        meta.reflect(conn, only=[table])
        conn.execute(meta.tables[table].insert(), rows)


def _assert_kept(db: Database, expected: dict[str, list[dict[str, Any]]]) -> None:
    for table, rows in expected.items():
        assert _stored(db, table, list(rows[0])) == rows, table


def _tables(db: Database) -> set[str]:
    return set(inspect(db.engine).get_table_names()) - {"alembic_version"}


def _version(db: Database) -> list[str]:
    with db.engine.connect() as conn:
        return list(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())


def _downgrade(db: Database, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def _schema_drift(db: Database) -> list[Any]:
    """What autogenerate would change to make the migrated schema match ``winnow.db.tables``."""
    with db.engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), Base.metadata)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/chain.db"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


def _upgrade_step_by_step(db: Database) -> dict[str, list[dict[str, Any]]]:
    """base → each revision in turn, writing that revision's rows and checking every earlier row."""
    assert REVISIONS == ["0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008", "0009", "0010", "0011"], (
        "a new migration: give it rows in ROWS"
    )
    expected: dict[str, list[dict[str, Any]]] = {}
    for revision in REVISIONS:
        db.migrate(revision)
        assert _version(db) == [revision]
        for table, extra in ADDED.get(revision, {}).items():
            expected[table] = [{**row, **extra} for row in expected[table]]
        if revision == "0004":  # the in-flight job's checkpoint moves to its one shard
            for row in expected["sdg_jobs"]:
                if row["id"] == "job-running":
                    row.update(checkpoint={}, worker=None, lease_until=None)
            expected["job_shards"] = [
                {"job_id": "job-running", "shard": 0, "first_row": 0, "rows": 40, "status": "queued"}
                | {"worker": None, "lease_until": None, "attempts": 1, "checkpoint": CHECKPOINT, "updated_at": T0}
            ]
        if revision == "0009":  # every kind's jobs: the same rows, ids included, in a table called jobs
            expected["jobs"] = expected.pop("sdg_jobs")
        _assert_kept(db, expected)
        for table, rows in ROWS.get(revision, {}).items():
            _insert(db, table, rows)
            expected[table] = [*expected.get(table, []), *(dict(row) for row in rows)]
        if revision == "0003":  # budgets are new columns of an old table
            with db.engine.begin() as conn:
                conn.execute(text("UPDATE api_keys SET budget_usd = 5.0, budget_period = 'total' WHERE id = 1"))
            expected["api_keys"] = [
                {
                    **row,
                    "budget_usd": 5.0 if row["id"] == 1 else None,
                    "budget_period": "total" if row["id"] == 1 else None,
                }
                for row in expected["api_keys"]
            ]
        _assert_kept(db, expected)
    return expected


def _assert_served(database_url: str, data_dir: Path) -> None:
    """The rows written along the chain, as the app at head serves them."""
    settings = Settings(data_dir=data_dir, database_url=database_url, workers=0)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        admin = bearer(ADMIN_SECRET)
        keys = client.get("/api/v1/keys", params={"include_revoked": "true"}, headers=admin)
        assert keys.status_code == 200, keys.text
        assert [(k["name"], k["admin"], k["revoked_at"] is not None) for k in keys.json()["keys"]] == [
            ("admin", True, False),
            ("old", False, True),
        ]
        assert client.get("/api/v1/keys", headers=bearer(OLD_SECRET)).status_code == 401
        usage = client.get("/api/v1/usage", params={"group_by": "model"}, headers=admin).json()
        assert usage["total"] == {
            "requests": 3,
            "input_tokens": 40,
            "output_tokens": 10,
            "total_tokens": 50,
            "cost_usd": 0.75,
        }
        budget = client.get("/api/v1/usage/budget", headers=admin).json()
        assert (budget["budget"]["usd"], budget["budget"]["period"], budget["spent_usd"]) == (5.0, "total", 0.75)
        feedback = client.get("/api/v1/feedback", headers=admin).json()["items"]
        assert [(f["generation_id"], f["rating"], f["labels"], f["comment"]) for f in feedback] == [
            ("gen-1", "up", ["correct"], "kept")
        ]
        files = client.get("/api/v1/files", headers=admin).json()
        assert [(f["id"], f["bytes"], f["rows"]) for f in files["data"]] == [("file-" + "0" * 24, 1234, 10)]
        assert files["used_bytes"] == 1234
        prompt = client.get("/api/v1/prompts/qa", headers=admin).json()
        assert (prompt["labels"], prompt["latest"]["template"]) == ({"production": 1}, "Q: {question}")
        jobs = client.get("/api/v1/synthetic_data_generation/jobs", headers=admin)
        assert jobs.status_code == 200, jobs.text
        assert sorted((j["job_id"], j["status"]) for j in jobs.json()["jobs"]) == [
            ("job-done", "completed"),
            ("job-running", "running"),
        ]


def test_every_migration_keeps_the_rows_written_before_it(db: Database, database_url: str, tmp_path: Path) -> None:
    assert _tables(db) == set()
    _upgrade_step_by_step(db)
    assert _tables(db) == set(Base.metadata.tables)
    assert _schema_drift(db) == []
    db.migrate()  # at head, again: nothing changes
    assert _version(db) == [HEAD]
    _assert_served(database_url, tmp_path / "data")


def test_migrations_downgrade_to_base_and_upgrade_again(db: Database, database_url: str, tmp_path: Path) -> None:
    expected = _upgrade_step_by_step(db)
    # Each downgrade drops what its upgrade added and keeps the rest.
    _downgrade(db, "0010")
    assert {"prompts", "prompt_versions", "prompt_labels"}.isdisjoint(_tables(db))
    for table in ("prompts", "prompt_versions", "prompt_labels"):
        del expected[table]
    _assert_kept(db, expected)
    _downgrade(db, "0009")
    assert "request_log" not in _tables(db)
    del expected["request_log"]
    _assert_kept(db, expected)
    _downgrade(db, "0008")
    assert "jobs" not in _tables(db)
    expected["sdg_jobs"] = expected.pop("jobs")
    _assert_kept(db, expected)
    _downgrade(db, "0007")
    assert "responses" not in _tables(db)
    del expected["responses"]
    _assert_kept(db, expected)
    _downgrade(db, "0006")
    assert "files" not in _tables(db)
    del expected["files"]
    expected["api_keys"] = _without(expected["api_keys"], "storage_quota_bytes")
    _assert_kept(db, expected)
    _downgrade(db, "0005")
    assert "fine_tuned_models" not in _tables(db)
    del expected["fine_tuned_models"]
    _assert_kept(db, expected)
    _downgrade(db, "0004")
    expected["usage_records"] = _without(expected["usage_records"], *ROUTING)
    _assert_kept(db, expected)
    with db.engine.connect() as conn:
        columns = {c["name"] for c in inspect(conn).get_columns("usage_records")}
    assert columns.isdisjoint(ROUTING)
    _downgrade(db, "0003")
    assert _tables(db) == {"api_keys", "sdg_jobs", "usage_records", "feedback"}
    _assert_kept(db, {t: expected[t] for t in ("api_keys", "sdg_jobs", "usage_records", "feedback")})
    _downgrade(db, "0002")
    assert _tables(db) == {"api_keys", "sdg_jobs"}
    _assert_kept(
        db, {"api_keys": ROWS["0001"]["api_keys"], "sdg_jobs": _without(expected["sdg_jobs"], "kind", "resume_at")}
    )
    _downgrade(db, "0001")
    assert _tables(db) == {"api_keys"}
    _assert_kept(db, {"api_keys": ROWS["0001"]["api_keys"]})
    _downgrade(db, "base")
    assert _tables(db) == set() and _version(db) == []
    # Up again, whole: head's schema, empty and usable.
    db.migrate()
    assert _version(db) == [HEAD] and _schema_drift(db) == []
    assert _stored(db, "api_keys", ["id"]) == []
    _insert(db, "api_keys", ROWS["0001"]["api_keys"])
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, workers=0)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert client.get("/api/v1/keys", headers=bearer(ADMIN_SECRET)).status_code == 200


def _without(rows: list[dict[str, Any]], *columns: str) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k not in columns} for row in rows]


# -- several processes start on one fresh PostgreSQL schema at once ------------------------------

MIGRATORS = 6


def _migrate_when_all_ready(url: str, barrier: Any, results: Any) -> None:
    """One process's start: connect, wait for the others, migrate; report ``ok`` or the error."""
    database = Database(url)
    try:
        with database.engine.connect() as conn:  # connected before the race starts
            conn.execute(text("SELECT 1"))
        barrier.wait(timeout=60)
        database.migrate()
        results.put("ok")
    except Exception as exc:  # reported to the test, which shows it
        results.put(f"{type(exc).__name__}: {exc}".splitlines()[0])
    finally:
        database.dispose()


def test_concurrent_starts_on_postgresql_migrate_once(postgres_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(MIGRATORS)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_migrate_when_all_ready, args=(postgres_url, barrier, results)) for _ in range(MIGRATORS)
    ]
    for proc in procs:
        proc.start()
    outcomes = []
    for _ in procs:
        try:
            outcomes.append(results.get(timeout=120))
        except queue.Empty:
            outcomes.append("no answer")
    for proc in procs:
        proc.join(timeout=30)
    assert outcomes == ["ok"] * MIGRATORS, outcomes
    db = Database(postgres_url)
    try:
        assert _version(db) == [HEAD]
        assert _tables(db) == set(Base.metadata.tables)
        assert _schema_drift(db) == []
    finally:
        db.dispose()

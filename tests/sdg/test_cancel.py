"""Cancelling SDG jobs (POST .../jobs/{id}/cancel): a queued job is never run, a running one stops
after its current chunk and publishes no output, an ended job is a 409, another key's a 404."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from tests.conftest import bearer, running_worker, wait_for, wait_for_job
from tests.sdg.jobs import SDG, job_body, job_status, submit, wait_running, write_prompts
from tests.spec import assert_error
from winnow.auth import Principal
from winnow.config import Settings
from winnow.db import Database, SdgJob
from winnow.jobs.store import JobStore
from winnow.runtime import Runtime
from winnow.sdg.inputs import PromptFile

ENDED = ("completed", "failed", "cancelled")


def _cancel(client: TestClient, key: str, job_id: str) -> Any:  # the TestClient's response
    return client.post(f"{SDG}/jobs/{job_id}/cancel", headers=bearer(key))


class _Spec(BaseModel):
    note: str = "a job's params"


def _small(settings: Settings) -> Path:
    return write_prompts(settings.data_dir / "small.jsonl", 20)


def _run_a_later_job(client: TestClient, key: str, settings: Settings) -> None:
    """Submit a small job and wait until it completes: the one worker has then finished with every
    older job (it takes the oldest claimable work first)."""
    later = submit(client, key, job_body(_small(settings)))
    assert wait_for_job(client, key, later["job_id"], ENDED)["status"] == "completed"


def test_a_cancelled_queued_job_is_never_run(
    client: TestClient, settings: Settings, runtime: Runtime, user_key: str
) -> None:
    other = runtime.keys.create("other").key
    queued = submit(client, user_key, job_body(_small(settings)))
    job_id = queued["job_id"]

    assert_error(_cancel(client, other, job_id), 404, "not_found")
    assert job_status(client, user_key, job_id)["status"] == "queued"

    cancelled = _cancel(client, user_key, job_id)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["finished"]
    assert_error(_cancel(client, user_key, job_id), 409, "conflict")

    with running_worker(settings):
        _run_a_later_job(client, user_key, settings)
    never_run = job_status(client, user_key, job_id)
    assert never_run["status"] == "cancelled" and "started" not in never_run, never_run
    assert never_run["counts"]["prompts_read"] == 0
    assert not (settings.data_dir / "jobs" / job_id).exists()
    assert_error(client.get(f"{SDG}/jobs/{job_id}/output", headers=bearer(user_key)), 409, "conflict")


def test_a_finished_job_cannot_be_cancelled(client: TestClient, settings: Settings, user_key: str) -> None:
    job = submit(client, user_key, job_body(_small(settings)))
    with running_worker(settings):
        assert wait_for_job(client, user_key, job["job_id"], ENDED)["status"] == "completed"
    body = assert_error(_cancel(client, user_key, job["job_id"]), 409, "conflict")
    assert "completed" in body["details"]
    assert job_status(client, user_key, job["job_id"])["status"] == "completed"
    assert_error(_cancel(client, user_key, "job-" + "0" * 24), 404, "not_found")


def test_a_running_job_stops_after_its_current_chunk_and_publishes_nothing(
    client: TestClient, settings: Settings, user_key: str, tmp_path: Path
) -> None:
    batch = 2
    prompts = write_prompts(settings.data_dir / "many.jsonl", 500)  # 250 chunks
    job_id = submit(client, user_key, job_body(prompts, batch_size=batch))["job_id"]
    with running_worker(settings):
        wait_running(client, user_key, job_id, read=batch)
        answer = _cancel(client, user_key, job_id)
        assert answer.status_code == 200, answer.text
        # The counts saved when the cancellation was stored (the checkpoint of the last chunk done).
        at_cancel = answer.json()["counts"]["prompts_read"]
        ended = wait_for_job(client, user_key, job_id, ENDED)
        assert ended["status"] == "cancelled", ended
        done = ended["counts"]["prompts_read"]
        # The chunk under way when the cancellation came is finished and checkpointed; no other starts.
        assert at_cancel <= done <= at_cancel + batch, (at_cancel, done)
        assert done < 500
        _run_a_later_job(client, user_key, settings)
    after = job_status(client, user_key, job_id)
    assert after["status"] == "cancelled" and after["counts"] == ended["counts"], after
    assert "output_file_path" not in after
    assert not (settings.data_dir / "jobs" / job_id / "output.jsonl").exists()
    assert not list((settings.data_dir / "jobs" / job_id).glob("output*"))
    for artifact in ("output", "summary", "histogram"):
        assert_error(client.get(f"{SDG}/jobs/{job_id}/{artifact}", headers=bearer(user_key)), 409, "conflict")


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    """A job store on SQLite, and on a real PostgreSQL (where claims lock with SKIP LOCKED)."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    settings = Settings(data_dir=tmp_path / "data", workers=0, database_url=url)
    db = Database(settings.effective_database_url)
    db.migrate()
    yield JobStore(db, settings)
    db.dispose()


def _queue(store: JobStore, owner: int, kind: str = "ft") -> str:
    prompts = PromptFile(path=write_prompts(store.settings.data_dir / "p.jsonl", 4), rows=4, size=1, sha256="x")
    return store.create(_Spec(), prompts, Principal(id=owner, name=str(owner), is_admin=False), kind).id


def _row(store: JobStore, job_id: str) -> SdgJob:
    with store.db.session() as session:
        row = session.get(SdgJob, job_id)
        assert row is not None
        session.expunge(row)
        return row


def test_a_cancelled_job_whose_worker_died_is_never_claimed_again(store: JobStore) -> None:
    """A running evaluation or fine-tuning job is cancelled, then its worker dies before it notices
    (a restart frees its lease): no worker claims it again, not even by id; it ends cancelled."""
    owner = Principal(id=1, name="1", is_admin=False)
    for kind in ("eval", "ft"):
        job_id = _queue(store, owner.id, kind)
        claimed = store.claim("host:1:a", job_id)
        assert claimed is not None and claimed.attempts == 1
        running = store.cancel(job_id, owner, kind, lambda row: row.status)
        assert running == "running"
        assert store.expire_leases_of("host:", lambda worker: False) == 1  # the worker is gone
        assert store.claim("host:2:b") is None
        assert store.claim("host:2:b", job_id) is None
        row = _row(store, job_id)
        assert (row.status, row.stage, row.attempts, row.cancel_requested) == ("cancelled", "cancelled", 1, True)
        assert row.finished_at is not None


def test_a_free_worker_takes_the_job_of_the_key_with_the_least_work_running(store: JobStore) -> None:
    """Key 1 has a job running and another queued; key 2 queues one later: the next worker takes
    key 2's (before: the oldest queued job, key 1's, and key 2 waited behind all of key 1's)."""
    running = _queue(store, 1)
    assert store.claim("host:1:a", running) is not None
    older = _queue(store, 1)
    newer = _queue(store, 2)
    claimed = store.claim("host:1:b")
    assert claimed is not None and claimed.id == newer
    claimed = store.claim("host:1:c")
    assert claimed is not None and claimed.id == older


def test_a_small_job_of_another_key_is_not_queued_behind_every_shard_of_a_big_one(
    client: TestClient, tmp_path: Path, runtime: Runtime, user_key: str
) -> None:
    """One worker; key A's big job (many shards) first, key B's one-shard job a moment later: B's job
    ends before A's (before, shards were taken oldest job first, so B waited for all of A's)."""
    settings = runtime.settings.model_copy(update={"job_shard_rows": 4})
    other = runtime.keys.create("other").key
    big = submit(client, user_key, job_body(write_prompts(settings.data_dir / "big.jsonl", 120)))["job_id"]
    with running_worker(settings):
        wait_running(client, user_key, big, read=4)
        small = submit(client, other, job_body(write_prompts(settings.data_dir / "small2.jsonl", 4)))["job_id"]
        small_done = wait_for_job(client, other, small, ENDED)
        assert small_done["status"] == "completed", small_done
        big_then = job_status(client, user_key, big)
        big_done = wait_for_job(client, user_key, big, ENDED)
    assert big_done["status"] == "completed", big_done
    assert big_then["status"] == "running" and big_then["counts"]["prompts_read"] < 120, big_then
    assert small_done["finished"] < big_done["finished"]


def test_an_evaluation_of_another_key_is_not_queued_behind_every_shard_of_a_big_job(
    client: TestClient, runtime: Runtime, user_key: str
) -> None:
    """One worker takes shards and whole jobs by turns: an evaluation submitted while a big SDG job
    runs starts after the shard under way (before, whole jobs waited until no shard was free)."""
    settings = runtime.settings.model_copy(update={"job_shard_rows": 4})
    other = runtime.keys.create("other").key
    big = submit(client, user_key, job_body(write_prompts(settings.data_dir / "big.jsonl", 120)))["job_id"]
    evaluation = {
        "name": "small",
        "dataset_path": str(write_prompts(settings.data_dir / "eval.jsonl", 4)),
        "templates": [{"name": "plain", "template": "{prompt}"}],
        "models": ["demo-lm"],
        "scoring_function": "exact_match",
        "max_tokens": 4,
        "temperature": 0,
        "batch_size": 4,
    }
    with running_worker(settings):
        wait_running(client, user_key, big, read=4)
        queued = client.post("/api/v1/evaluations", json=evaluation, headers=bearer(other))
        assert queued.status_code in (200, 202), queued.text
        done = wait_for(client, other, f"/api/v1/evaluations/{queued.json()['id']}", until=ENDED)
        assert done["status"] == "completed", done
        big_then = job_status(client, user_key, big)
        big_done = wait_for_job(client, user_key, big, ENDED)
    assert big_done["status"] == "completed", big_done
    assert big_then["status"] == "running" and big_then["counts"]["prompts_read"] < 120, big_then

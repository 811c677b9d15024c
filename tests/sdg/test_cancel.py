"""Cancelling SDG jobs (POST .../jobs/{id}/cancel): a queued job is never run, a running one stops
after its current chunk and publishes no output, an ended job is a 409, another key's a 404."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import bearer, running_worker, wait_for_job
from tests.sdg.jobs import SDG, job_body, job_status, submit, wait_running, write_prompts
from tests.spec import assert_error
from winnow.config import Settings
from winnow.runtime import Runtime

ENDED = ("completed", "failed", "cancelled")


def _cancel(client: TestClient, key: str, job_id: str) -> Any:  # the TestClient's response
    return client.post(f"{SDG}/jobs/{job_id}/cancel", headers=bearer(key))


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

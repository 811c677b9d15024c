"""A `winnow worker` process killed (kill -9) mid-batch: the next worker resumes after the last
checkpoint the dead one saved, and every custom_id is answered exactly once and billed once (a
chunk's answers are cut back to the checkpoint and its usage rows are written with it)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.test_openai_files import batch_line, jsonl
from tests.conftest import bearer, running_worker, wait_for
from tests.usage.test_usage_once import job_usage
from winnow.api.app import create_app
from winnow.config import Settings
from winnow.runtime import Runtime

pytestmark = pytest.mark.slow  # a worker process of its own, killed

LINES, CHUNK = 120, 8


def _done(rt: Runtime, batch_id: str) -> int:
    return int((rt.jobs.row(batch_id).checkpoint or {}).get("lines", 0))


def create_batch(
    client: TestClient, key: str, lines: int, model: str = "demo-lm", extra: dict[str, Any] | None = None
) -> str:
    """Upload ``lines`` chat requests for ``model`` (with ``extra`` body fields) and batch them."""
    rows = [batch_line(n) for n in range(lines)]
    for row in rows:
        row["body"] |= {"model": model, **(extra or {})}
    upload = client.post(
        "/v1/files",
        files={"file": ("in.jsonl", io.BytesIO(jsonl(rows)))},
        data={"purpose": "batch"},
        headers=bearer(key),
    )
    assert upload.status_code == 200, upload.text
    body = {"input_file_id": upload.json()["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    created = client.post("/v1/batches", json=body, headers=bearer(key))
    assert created.status_code == 200, created.text
    batch_id: str = created.json()["id"]
    return batch_id


def _kill_after_two_chunks(rt: Runtime, settings: Settings, batch_id: str, log_path: Path) -> int:
    env = {
        **os.environ,
        "WINNOW_DATA_DIR": str(settings.data_dir),
        "WINNOW_LOCAL_TORCH_THREADS": "1",
        "WINNOW_BATCH_CHUNK_LINES": str(CHUNK),
    }
    with log_path.open("wb") as log:
        doomed = subprocess.Popen([sys.executable, "-m", "winnow", "worker"], env=env, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 180  # a bound on a hang (the worker loads torch and the model)
            while _done(rt, batch_id) < 2 * CHUNK:
                assert doomed.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.02)
            os.kill(doomed.pid, signal.SIGSTOP)  # frozen: the checkpoint it dies with
            saved = _done(rt, batch_id)
            os.kill(doomed.pid, signal.SIGKILL)
        finally:
            doomed.kill()
            doomed.wait()
    return saved


def test_a_worker_killed_mid_batch_answers_and_bills_each_custom_id_once(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", workers=0, usage_flush_s=0.2, batch_chunk_lines=CHUNK)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        key = rt.keys.create("owner").key
        batch_id = create_batch(client, key, LINES)
        saved = _kill_after_two_chunks(rt, settings, batch_id, tmp_path / "worker.log")
        assert 2 * CHUNK <= saved < LINES, saved
        assert rt.jobs.row(batch_id).status == "running"  # the dead worker still holds it

        with running_worker(settings):  # frees the dead worker's batch (its pid is gone) and resumes it
            status = wait_for(client, key, f"/v1/batches/{batch_id}", until=("completed", "failed"), timeout=300)
        assert status["status"] == "completed", status
        assert status["request_counts"] == {"total": LINES, "completed": LINES, "failed": 0}
        assert rt.jobs.row(batch_id).attempts == 2
        content = client.get(f"/v1/files/{status['output_file_id']}/content", headers=bearer(key))
        answers: list[dict[str, Any]] = [json.loads(line) for line in content.text.splitlines()]
        assert sorted(a["custom_id"] for a in answers) == sorted(f"req-{n}" for n in range(LINES))  # once each
        tokens_in = sum(a["response"]["body"]["usage"]["prompt_tokens"] for a in answers)
        tokens_out = sum(a["response"]["body"]["usage"]["completion_tokens"] for a in answers)
        assert job_usage(rt.db, batch_id) == (LINES, tokens_in, tokens_out)  # billed once each

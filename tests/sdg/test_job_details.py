"""What the job page reads besides the seed's fields: a job's duration and cost in job_status, and
the reference fields (e.g. ``answer``) of a page of its output rows."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import DEMO_LM, JOB_STATUS, bearer, running_worker, wait_for_job
from tests.sdg.jobs import SDG, job_body
from winnow.api.app import create_app
from winnow.config import ModelConfig, Settings
from winnow.runtime import Runtime


def test_job_status_has_duration_and_cost_and_rows_have_their_references(tmp_path: Path) -> None:
    priced = ModelConfig(id="demo-lm", path=str(DEMO_LM), input_price_per_mtok=2.0, output_price_per_mtok=8.0)
    settings = Settings(data_dir=tmp_path / "data", workers=0, models=[priced])
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        key = runtime.keys.create("details").key
        prompts = runtime.settings.data_dir / "answers.jsonl"
        rows = [
            {"id": "q1", "prompt": "What is 2+2?", "answer": "4"},
            {"id": "q2", "prompt": "What is 9+9?", "answer": "18", "level": 2},
        ]
        prompts.write_text("".join(json.dumps(row) + "\n" for row in rows))
        queued = client.post(f"{SDG}/submit_job", json=job_body(prompts), headers=bearer(key)).json()
        assert "duration_seconds" not in queued and "cost_usd" not in queued  # not started, nothing billed
        with running_worker(runtime.settings):
            job = wait_for_job(client, key, queued["job_id"])
        assert job["status"] == "completed", job
        assert (
            0
            < job["duration_seconds"]
            == pytest.approx((_seconds(job["finished"]) - _seconds(job["started"])), abs=0.002)
        )
        counts = job["counts"]
        assert job["cost_usd"] == pytest.approx((counts["input_tokens"] * 2.0 + counts["output_tokens"] * 8.0) / 1e6)
        listed = client.get(f"{SDG}/jobs", headers=bearer(key)).json()["jobs"][0]
        assert "cost_usd" not in listed  # job_status only: it sums the job's usage rows
        page = client.get(f"{SDG}/jobs/{job['job_id']}/rows", headers=bearer(key)).json()
        assert page["references"] == {"q1": {"answer": "4"}, "q2": {"answer": "18", "level": 2}}
        prompts.unlink()  # the prompts file gone since: rows without references, not an error
        gone = client.get(f"{SDG}/jobs/{job['job_id']}/rows", headers=bearer(key))
        assert gone.status_code == 200 and gone.json()["references"] == {}
        status = client.get(JOB_STATUS, params={"job_id": job["job_id"]}, headers=bearer(key)).json()
        assert status["cost_usd"] == job["cost_usd"]


def _seconds(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()

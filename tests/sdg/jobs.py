"""Small SDG jobs for tests that drive the API (a TestClient or an httpx.Client on a live server)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

from tests.conftest import DEMO_PROMPTS, JOB_STATUS, bearer

SDG = "/api/v1/synthetic_data_generation"
SMALL_PROMPTS = DEMO_PROMPTS.with_name("arithmetic_small.jsonl")  # 20 prompts

Client = TestClient | httpx.Client


def job_body(prompts_path: Path | str, **overrides: Any) -> dict[str, Any]:
    """A cheap job: one 4-token response per prompt, every row kept."""
    body = {
        "model": "demo-lm",
        "prompts_path": str(prompts_path),
        "batch_size": 4,
        "temperature": 1.0,
        "top_p": 1.0,
        "max_gen_len": 4,
        "num_generations": 1,
        "reward_model": "demo-rm",
        "scoring_function": "raw",
        "filtering_function": {"name": "none", "params": {}},
        "seed": 7,
    }
    return body | overrides


def submit(client: Client, key: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"{SDG}/submit_job", json=body, headers=bearer(key))
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    assert job["status"] == "queued", job
    return job


def job_status(client: Client, key: str, job_id: str) -> dict[str, Any]:
    response = client.get(JOB_STATUS, params={"job_id": job_id}, headers=bearer(key))
    assert response.status_code == 200, response.text
    status: dict[str, Any] = response.json()
    return status


def wait_running(client: Client, key: str, job_id: str, read: int, timeout: float = 120.0) -> dict[str, Any]:
    """Poll until the job runs with at least ``read`` prompts done (a bound on a hang, not a timing)."""
    deadline = time.monotonic() + timeout
    while True:
        status = job_status(client, key, job_id)
        if status["status"] == "running" and status["counts"]["prompts_read"] >= read:
            return status
        assert status["status"] in ("queued", "running"), status
        assert time.monotonic() < deadline, f"{job_id} did not get {read} prompts in: {status}"
        time.sleep(0.02)


def write_prompts(path: Path, rows: int) -> Path:
    """``rows`` prompts (the demo's, repeated with fresh ids) at ``path``."""
    lines = DEMO_PROMPTS.read_text().splitlines()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        for i in range(rows):
            line = lines[i % len(lines)]
            out.write(line.replace('"id": "add-', f'"id": "r{i}-', 1) + "\n")
    return path

"""A fine-tuning job on a real `winnow serve` (its own worker process), the worker killed (kill -9)
mid-training: the replacement resumes from the last checkpoint the dead one recorded (not step 0),
the job completes, and the new model answers on /api/v1/generate and through the official `openai`
client on /v1."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import psutil
import pytest

from tests.conftest import LiveServer, bearer
from tests.finetune.test_api import FT, training_rows

pytestmark = pytest.mark.slow  # real server and worker processes, one killed

ROWS, BATCH, EVERY = 1600, 8, 20
STEPS = ROWS // BATCH


def _events(live: LiveServer, key: str, job_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while True:
        page = httpx.get(
            f"{live.url}{FT}/{job_id}/events", params={"after": len(events), "limit": 1000}, headers=bearer(key)
        ).json()
        events += page["data"]
        if not page["has_more"]:
            return events


def _saved_steps(events: list[dict[str, Any]]) -> list[int]:
    return [e["data"]["step"] for e in events if e["message"].startswith("checkpoint saved")]


def _job(live: LiveServer, key: str, job_id: str) -> dict[str, Any]:
    job: dict[str, Any] = httpx.get(f"{live.url}{FT}/{job_id}", headers=bearer(key)).json()
    return job


def test_a_killed_worker_s_job_resumes_from_its_checkpoint_and_the_model_serves(tmp_path: Path) -> None:
    data = tmp_path / "data"
    live = LiveServer(data, env={"WINNOW_WORKERS": "1"}).start()
    try:
        key = live.cli("keys", "create", "k", "--admin").stdout.split()[-1]
        train = "".join(json.dumps(r) + "\n" for r in training_rows(ROWS))
        uploaded = httpx.post(
            f"{live.url}/api/v1/files",
            files={"file": ("train.jsonl", train.encode(), "application/jsonl")},
            data={"purpose": "fine-tune"},
            headers=bearer(key),
        )
        assert uploaded.status_code == 201, uploaded.text
        body = {
            "base_model": "demo-lm",
            "training_file": uploaded.json()["path"],
            "suffix": "resumed",
            "hyperparameters": {"epochs": 1, "batch_size": BATCH, "learning_rate": 3e-3, "checkpoint_steps": EVERY},
        }
        job = httpx.post(f"{live.url}{FT}", json=body, headers=bearer(key), timeout=60).json()
        job_id = job["id"]
        assert live.proc is not None
        (worker,) = [p for p in psutil.Process(live.proc.pid).children() if "worker" in " ".join(p.cmdline())]
        deadline = time.monotonic() + 240
        while not _saved_steps(_events(live, key, job_id)):  # a checkpoint is on disk
            assert _job(live, key, job_id)["status"] in ("queued", "running"), _job(live, key, job_id)
            assert time.monotonic() < deadline, "no checkpoint was saved"
            time.sleep(0.05)
        os.kill(worker.pid, signal.SIGSTOP)  # frozen: what it recorded is what it dies with
        saved = _saved_steps(_events(live, key, job_id))[-1]
        before = _job(live, key, job_id)
        assert before["status"] == "running" and saved < STEPS, before
        os.kill(worker.pid, signal.SIGKILL)

        deadline = time.monotonic() + 300
        while (done := _job(live, key, job_id))["status"] not in ("completed", "failed"):
            assert time.monotonic() < deadline, done
            time.sleep(0.2)
        assert done["status"] == "completed", done
        assert done["attempts"] == 2
        assert done["progress"]["resumed_from_step"] == saved
        assert done["progress"]["step"] == STEPS and done["metrics"]["steps"] == STEPS
        events = _events(live, key, job_id)
        messages = [e["message"] for e in events]
        assert f"resumed from step {saved} of {STEPS}" in messages
        resumed_at = messages.index(f"resumed from step {saved} of {STEPS}")
        later_steps = [e["data"]["step"] for e in events[resumed_at:] if e["type"] == "metrics"]
        assert later_steps and min(later_steps) > saved  # went on from the checkpoint, not from step 0

        model = done["fine_tuned_model"]
        answer = httpx.post(
            f"{live.url}/api/v1/generate",
            json={"prompt": "What is 17+25?", "model_id": model, "max_tokens": 6, "temperature": 0.0},
            headers=bearer(key),
            timeout=60,
        )
        assert answer.status_code == 200 and answer.json()["text"].strip() == "42", answer.text
        client = openai.OpenAI(base_url=f"{live.url}/v1", api_key=key)
        assert model in [m.id for m in client.models.list()]
        chat = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "What is 30+12?"}], max_tokens=6, temperature=0
        )
        assert chat.choices[0].message.content is not None and chat.choices[0].message.content.strip() == "42"
    finally:
        live.stop()

"""A `winnow worker` process killed (kill -9) mid-evaluation: the next worker resumes the evaluation
at the chunk after the last checkpoint the dead one saved, not at chunk 0, and every row is billed
once (a chunk's usage rows are written with its checkpoint, so a chunk redone is billed again)."""

from __future__ import annotations

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

from tests.conftest import DEMO_PROMPTS, bearer, running_worker, wait_for
from tests.usage.test_usage_once import job_usage
from winnow.api.app import create_app
from winnow.config import Settings
from winnow.evals.runner import EvalRunner
from winnow.runtime import Runtime

pytestmark = pytest.mark.slow  # a worker process of its own, killed

ROWS, BATCH = 400, 8
CHUNKS = ROWS // BATCH
TEMPLATES = [{"name": "plain", "template": "{prompt}"}, {"name": "terse", "template": "Only the number: {prompt}"}]


def _checkpoint(rt: Runtime, eval_id: str) -> dict[str, Any]:
    return rt.jobs.row(eval_id).checkpoint or {}


def test_a_worker_killed_mid_evaluation_is_resumed_from_its_checkpoint_and_bills_each_row_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=tmp_path / "data", workers=0, usage_flush_s=0.2)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        key = rt.keys.create("owner").key
        lines = DEMO_PROMPTS.read_text().splitlines()[:ROWS]
        (settings.data_dir / "rows.jsonl").write_text("".join(line + "\n" for line in lines))
        body = {
            "dataset_path": "rows.jsonl",
            "templates": TEMPLATES,
            "models": ["demo-lm"],
            "scoring_function": "exact_match",
            "max_tokens": 4,
            "temperature": 0,
            "batch_size": BATCH,
        }
        created = client.post("/api/v1/evaluations", json=body, headers=bearer(key))
        assert created.status_code == 202, created.text
        eval_id = created.json()["id"]

        env = {**os.environ, "WINNOW_DATA_DIR": str(settings.data_dir), "WINNOW_LOCAL_TORCH_THREADS": "1"}
        with (tmp_path / "worker.log").open("wb") as log:
            doomed = subprocess.Popen([sys.executable, "-m", "winnow", "worker"], env=env, stdout=log, stderr=log)
            try:
                # Once it has saved two chunks, freeze it (SIGSTOP) and read its checkpoint: a frozen
                # worker saves nothing more, so that is the checkpoint it dies with.
                deadline = time.monotonic() + 120  # a bound on a hang (the worker loads torch and the model)
                while _checkpoint(rt, eval_id).get("chunks_done", 0) < 2:
                    assert doomed.poll() is None, (tmp_path / "worker.log").read_text()
                    assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
                    time.sleep(0.02)
                os.kill(doomed.pid, signal.SIGSTOP)
                saved = int(_checkpoint(rt, eval_id)["chunks_done"])
                os.kill(doomed.pid, signal.SIGKILL)
            finally:
                doomed.kill()
                doomed.wait()
        assert 2 <= saved < CHUNKS, saved
        assert rt.jobs.row(eval_id).status == "running"  # the dead worker still holds it

        started: list[int] = []  # the chunks the resumed run works on, in order
        chunk = EvalRunner._chunk

        async def noted(runner: EvalRunner, rows: Any, index: int, *args: Any) -> list[bytes]:
            started.append(index)
            return await chunk(runner, rows, index, *args)

        monkeypatch.setattr(EvalRunner, "_chunk", noted)
        with running_worker(settings):  # frees the dead worker's job (its pid is gone) and resumes it
            status = wait_for(client, key, f"/api/v1/evaluations/{eval_id}", timeout=180)
        assert status["status"] == "completed", status
        assert started == list(range(saved, CHUNKS))  # from the checkpoint on, not from chunk 0
        assert rt.jobs.row(eval_id).attempts == 2

        results = [json.loads(line) for line in Path(status["results_path"]).read_text().splitlines()]
        assert sorted((r["id"], r["template"]) for r in results) == sorted(
            (json.loads(line)["id"], t["name"]) for line in lines for t in TEMPLATES
        )
        assert status["counts"]["rows_done"] == ROWS
        tokens_in = sum(r["input_tokens"] for r in results)
        tokens_out = sum(r["output_tokens"] for r in results)
        assert job_usage(rt.db, eval_id) == (ROWS * len(TEMPLATES), tokens_in, tokens_out)  # each row once

"""A job at temperature 1 writes the same bytes whatever its batch size, and after a kill -9 of its
worker mid-job and the resume by the replacement: every row's seed comes from the job's seed and
the prompt's id, never from its chunk, and the reward model scores in passes of one fixed shape."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.conftest import TEST_KEY_LIMITS, LiveServer, wait_for_job
from tests.sdg.jobs import job_body, job_status, submit, wait_running, write_prompts

pytestmark = pytest.mark.slow  # a real `winnow serve` and its worker process, kill -9

PROMPTS = 120


def _done(client: httpx.Client, key: str, job_id: str) -> dict[str, Any]:
    status = wait_for_job(client, key, job_id, timeout=300)
    assert status["status"] == "completed", status
    assert status["counts"]["prompts_read"] == PROMPTS
    return status


def test_a_job_writes_the_same_bytes_at_any_batch_size_and_after_a_kill_9(tmp_path: Path) -> None:
    data = tmp_path / "data"
    live = LiveServer(data, env={"WINNOW_WORKERS": "1"}).start()
    try:
        key = live.cli("keys", "create", "k", "--rate-limits", TEST_KEY_LIMITS).stdout.split()[-1]
        prompts = write_prompts(data / "prompts.jsonl", PROMPTS)
        body = job_body(prompts, temperature=1.0, num_generations=3, max_gen_len=6, seed=11)
        with httpx.Client(base_url=live.url, timeout=120) as client:
            killed = submit(client, key, body | {"batch_size": 4})
            wait_running(client, key, killed["job_id"], read=8)
            assert live.proc is not None
            (worker,) = [p for p in psutil.Process(live.proc.pid).children() if "worker" in " ".join(p.cmdline())]
            worker.kill()  # SIGKILL: no cleanup, the job's lease runs out and the replacement resumes it
            worker.wait(30)
            status = job_status(client, key, killed["job_id"])
            assert status["status"] == "running" and status["counts"]["prompts_read"] < PROMPTS  # died mid-job
            resumed = _done(client, key, killed["job_id"])
            reference = _done(client, key, submit(client, key, body | {"batch_size": 7})["job_id"])
        resumed_bytes = Path(resumed["output_file_path"]).read_bytes()
        assert resumed_bytes == Path(reference["output_file_path"]).read_bytes()
        assert len(resumed_bytes.splitlines()) == PROMPTS * 3
    finally:
        live.stop()

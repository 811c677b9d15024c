"""SDG over HTTP with a real server and its worker process: upload, submit (the seed's exact body),
poll, download; isolation between keys; and a kill -9 in the middle of a job."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import DEMO_PROMPTS, TEST_KEY_LIMITS, LiveServer, bearer, wait_for_job
from tests.sdg.jobs import wait_running
from tests.spec import assert_error
from winnow.schemas.sdg import PromptResponseScore

pytestmark = pytest.mark.slow  # real `winnow serve` and worker processes, kill -9

SEED_BODY_KEYS = {
    "model",
    "prompts_path",
    "batch_size",
    "temperature",
    "top_p",
    "max_gen_len",
    "num_generations",
    "reward_model",
    "scoring_function",
    "filtering_function",
}


# submit_job counts every prompt's tokens with the model's tokenizer (loaded on the first submit of a
# fresh server): on a loaded 2-core box that may take longer than httpx's default 5 s.
SUBMIT_TIMEOUT = 120.0


def _wait(server: LiveServer, key: str, job_id: str, until: set[str], timeout: float = 120) -> dict[str, Any]:
    with httpx.Client(base_url=server.url, timeout=SUBMIT_TIMEOUT) as client:
        return wait_for_job(client, key, job_id, tuple(until), timeout)


def _assert_billed_once(server: LiveServer, key: str, prompts: int) -> None:
    """One usage row per prompt: a resume that redid checkpointed chunks (or restarted the job from
    zero) would bill them again, since a chunk's usage is written with its checkpoint."""
    usage = httpx.get(f"{server.url}/api/v1/usage", headers=bearer(key), timeout=SUBMIT_TIMEOUT).json()
    assert usage["total"]["requests"] == prompts, usage


def _wait_until_running(server: LiveServer, key: str, job_id: str, read: int = 50) -> None:
    """Until the job is running with at least ``read`` prompts done (and not all 500); the bound is on
    a hang (it includes the worker loading torch and the model), not a timing."""
    with httpx.Client(base_url=server.url, timeout=SUBMIT_TIMEOUT) as client:
        status = wait_running(client, key, job_id, read)
    assert status["counts"]["prompts_read"] < 500, status


def _upload(server: LiveServer, key: str, path: Path) -> dict[str, Any]:
    with path.open("rb") as handle:
        response = httpx.post(f"{server.url}/api/v1/files", files={"file": (path.name, handle)}, headers=bearer(key))
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def _body(prompts_path: str, **overrides: Any) -> dict[str, Any]:
    body = {
        "model": "demo-lm",
        "prompts_path": prompts_path,
        "batch_size": 8,
        "temperature": 1.0,
        "top_p": 1.0,
        "max_gen_len": 8,
        "num_generations": 4,
        "reward_model": "demo-rm",
        "scoring_function": "raw",
        "filtering_function": {"name": "best_of_n", "params": {}},
    }
    return body | overrides


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    live = LiveServer(tmp_path_factory.mktemp("sdg") / "data", env={"WINNOW_WORKERS": "1"}).start()
    key = live.cli("keys", "create", "owner", "--rate-limits", TEST_KEY_LIMITS).stdout.split()[-1]
    other = live.cli("keys", "create", "other", "--rate-limits", TEST_KEY_LIMITS).stdout.split()[-1]
    yield live, key, other
    live.stop()


def test_upload_submit_poll_download(server: Any) -> None:
    live, key, other = server
    uploaded = _upload(live, key, DEMO_PROMPTS.with_name("arithmetic_small.jsonl"))
    assert uploaded["rows"] == 20
    body = _body(uploaded["path"])
    assert set(body) == SEED_BODY_KEYS
    submitted = httpx.post(
        f"{live.url}/api/v1/synthetic_data_generation/submit_job",
        json=body,
        headers=bearer(key),
        timeout=SUBMIT_TIMEOUT,
    )
    assert submitted.status_code == 200, submitted.text
    job = submitted.json()
    assert job["status"] == "queued" and job["job_id"].startswith("job-")  # answered before the job runs
    done = _wait(live, key, job["job_id"], {"completed", "failed"})
    assert done["status"] == "completed", done
    assert done["counts"]["prompts_read"] == 20 and done["counts"]["rows_kept"] == 20
    output = httpx.get(f"{live.url}/api/v1/synthetic_data_generation/jobs/{job['job_id']}/output", headers=bearer(key))
    rows = [json.loads(line) for line in output.text.splitlines()]
    assert len(rows) == 20 and len({r["id"] for r in rows}) == 20
    for row in rows:
        PromptResponseScore.model_validate(row)
    summary = httpx.get(
        f"{live.url}/api/v1/synthetic_data_generation/jobs/{job['job_id']}/summary", headers=bearer(key)
    )
    assert summary.json()["counts"]["rows_kept"] == 20
    listed = httpx.get(f"{live.url}/api/v1/synthetic_data_generation/jobs", headers=bearer(key)).json()
    assert job["job_id"] in [j["job_id"] for j in listed["jobs"]]
    # another key sees nothing of it
    status_url = f"{live.url}/api/v1/synthetic_data_generation/job_status"
    assert_error(httpx.get(status_url, params={"job_id": job["job_id"]}, headers=bearer(other)), 404, "not_found")
    assert httpx.get(f"{live.url}/api/v1/synthetic_data_generation/jobs", headers=bearer(other)).json()["count"] == 0
    assert_error(httpx.get(status_url, params={"job_id": "nope"}, headers=bearer(key)), 400, "validation_error")
    assert_error(httpx.get(status_url, params={"job_id": "job-" + "0" * 24}, headers=bearer(key)), 404)
    stolen = httpx.post(
        f"{live.url}/api/v1/synthetic_data_generation/submit_job", json=_body(uploaded["path"]), headers=bearer(other)
    )
    assert_error(stolen, 400, "validation_error")


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"prompts_path": "/etc/passwd"}, "outside"),
        ({"prompts_path": "../../x.jsonl"}, "outside"),
        ({"filtering_function": {"name": "nope", "params": {}}}, "nope"),
        ({"filtering_function": {"name": "top_k", "params": {"k": 0}}}, "k"),
        ({"scoring_function": "bogus"}, "bogus"),
        ({"reward_model": "rm-9"}, "rm-9"),
        ({"model": "gpt-9"}, "gpt-9"),
        ({"num_generations": 0}, "num_generations"),
    ],
)
def test_bad_submissions_are_400_and_start_nothing(server: Any, override: dict[str, Any], needle: str) -> None:
    live, key, _ = server
    uploaded = _upload(live, key, DEMO_PROMPTS.with_name("arithmetic_small.jsonl"))
    jobs_url = f"{live.url}/api/v1/synthetic_data_generation/jobs"
    before = httpx.get(jobs_url, headers=bearer(key)).json()["count"]
    response = httpx.post(
        f"{live.url}/api/v1/synthetic_data_generation/submit_job",
        json=_body(uploaded["path"]) | override,
        headers=bearer(key),
    )
    error = assert_error(response, 400)
    assert needle in error["message"] + error.get("details", ""), error
    assert httpx.get(jobs_url, headers=bearer(key)).json()["count"] == before


def test_invalid_upload_is_400_with_line_numbers(server: Any, tmp_path: Path) -> None:
    live, key, _ = server
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "prompt": "x"}\n{oops\n')
    with bad.open("rb") as handle:
        response = httpx.post(f"{live.url}/api/v1/files", files={"file": ("bad.jsonl", handle)}, headers=bearer(key))
    assert "line 2" in assert_error(response, 400)["details"]


def test_kill_9_mid_job_then_restart_completes_without_loss_or_duplicates(tmp_path: Path) -> None:
    data = tmp_path / "data"
    live = LiveServer(data, env={"WINNOW_WORKERS": "1"}).start()
    key = live.cli("keys", "create", "k").stdout.split()[-1]
    prompts = data / "prompts.jsonl"
    prompts.write_text(DEMO_PROMPTS.read_text())
    body = _body(str(prompts), batch_size=10, num_generations=8, seed=5)
    job_id = httpx.post(
        f"{live.url}/api/v1/synthetic_data_generation/submit_job",
        json=body,
        headers=bearer(key),
        timeout=SUBMIT_TIMEOUT,
    ).json()["job_id"]
    _wait_until_running(live, key, job_id)
    assert live.proc is not None
    os.kill(live.proc.pid, signal.SIGKILL)
    live.proc.wait()
    restarted = LiveServer(data, env={"WINNOW_WORKERS": "1"})
    restarted.start()
    try:
        done = _wait(restarted, key, job_id, {"completed", "failed"}, timeout=180)
        assert done["status"] == "completed", done
        rows = [json.loads(line) for line in Path(done["output_file_path"]).read_text().splitlines()]
        assert len(rows) == 500 and len({r["id"] for r in rows}) == 500
        assert done["counts"]["prompts_read"] == 500
        _assert_billed_once(restarted, key, 500)
    finally:
        restarted.stop()


def test_kill_9_of_the_worker_mid_job_is_resumed_by_its_replacement(tmp_path: Path) -> None:
    import psutil

    data = tmp_path / "data"
    live = LiveServer(data, env={"WINNOW_WORKERS": "1"}).start()
    try:
        key = live.cli("keys", "create", "k").stdout.split()[-1]
        prompts = data / "prompts.jsonl"
        prompts.write_text(DEMO_PROMPTS.read_text())
        body = _body(str(prompts), batch_size=10, num_generations=8, seed=9)
        submitted = httpx.post(
            f"{live.url}/api/v1/synthetic_data_generation/submit_job",
            json=body,
            headers=bearer(key),
            timeout=SUBMIT_TIMEOUT,
        )
        job_id = submitted.json()["job_id"]
        _wait_until_running(live, key, job_id)
        assert live.proc is not None
        (worker,) = [p for p in psutil.Process(live.proc.pid).children() if "worker" in " ".join(p.cmdline())]
        worker.kill()
        done = _wait(live, key, job_id, {"completed", "failed"}, timeout=180)
        assert done["status"] == "completed", done
        rows = [json.loads(line) for line in Path(done["output_file_path"]).read_text().splitlines()]
        assert len(rows) == 500 and len({r["id"] for r in rows}) == 500
        _assert_billed_once(live, key, 500)
        assert [p.pid for p in psutil.Process(live.proc.pid).children()] != [worker.pid]  # replaced
    finally:
        live.stop()

"""Input tokens of a job's prompts: one count for the dry run, job_status and the usage rows; prompts
longer than the model's context refused at submit; per-row errors kept and served with the job."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tests.conftest import DEMO_LM, DEMO_PROMPTS, LiveServer, bearer, closed_port, running_worker, wait_for_job
from tests.spec import assert_error
from winnow.api.app import create_app
from winnow.config import ModelConfig, Settings
from winnow.db import UsageRecord
from winnow.models.base import ChatMessage
from winnow.runtime import Runtime

SUBMIT = "/api/v1/synthetic_data_generation/submit_job"


def _runtime(client: TestClient) -> Runtime:
    rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    return rt


def _body(path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "model": "demo-lm",
        "prompts_path": str(path),
        "batch_size": 4,
        "max_gen_len": 4,
        "num_generations": 3,
        "temperature": 1.0,
        "reward_model": "demo-rm",
        "filtering_function": {"name": "none"},
        "seed": 7,
    } | extra


def _write(path: Path, prompts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"id": f"p{i}", "prompt": p}) + "\n" for i, p in enumerate(prompts)))
    return path


def test_a_prompt_longer_than_the_context_is_refused_at_submit_with_its_line(client: TestClient) -> None:
    rt = _runtime(client)
    key = rt.keys.create("owner").key
    prompts = _write(
        rt.settings.data_dir / "long.jsonl",
        ["What is 1+2?", "What is 3+4?", "What is 5+6? " * 10, "What is 7+8?", "x" * 1_000_000],
    )
    for dry_run in (False, True):
        response = client.post(SUBMIT, json=_body(prompts, dry_run=dry_run), headers=bearer(key))
        error = assert_error(response, 400, "validation_error")
        assert "2 invalid line(s)" in error["message"], error
        assert "line 3:" in error["details"] and "line 5:" in error["details"], error
        assert "context" in error["details"] and "line 1:" not in error["details"], error
    assert client.get("/api/v1/synthetic_data_generation/jobs", headers=bearer(key)).json()["count"] == 0


def test_job_status_usage_rows_and_the_dry_run_count_the_same_input_tokens(client: TestClient) -> None:
    rt = _runtime(client)
    key = rt.keys.create("owner").key
    lines = DEMO_PROMPTS.read_text().splitlines()[:6]
    prompts = rt.settings.data_dir / "six.jsonl"
    prompts.write_text("".join(line + "\n" for line in lines))
    body = _body(prompts, system_prompt="Add.")
    dry = client.post(SUBMIT, json=body | {"dry_run": True}, headers=bearer(key)).json()
    estimate = dry["estimate"]
    job = client.post(SUBMIT, json=body, headers=bearer(key)).json()
    with running_worker(rt.settings):
        status = wait_for_job(client, key, job["job_id"], timeout=60)
    assert status["status"] == "completed", status
    with rt.db.session() as session:
        billed_in, billed_out, rows = session.execute(
            select(func.sum(UsageRecord.input_tokens), func.sum(UsageRecord.output_tokens), func.count()).where(
                UsageRecord.job_id == job["job_id"]
            )
        ).one()
    assert rows == 6  # one usage row per prompt (its 3 generations share one call)
    assert status["counts"]["input_tokens"] == billed_in == estimate["input_tokens"]
    assert status["counts"]["output_tokens"] == billed_out <= estimate["max_output_tokens"]
    # the demo tokenizer's own count, with the system prompt and the chat template
    from winnow.usage.tokens import prompt_tokens

    counter = prompt_tokens(rt.models.config("demo-lm"))
    chats = [[ChatMessage("system", "Add."), ChatMessage("user", json.loads(line)["prompt"])] for line in lines]
    assert sum(counter.measure(chats)) == estimate["input_tokens"]  # type: ignore[arg-type]


def test_the_upstream_estimate_is_never_below_what_a_byte_level_tokenizer_counts() -> None:
    """Upstreams have no tokenizer here: their estimate (UTF-8 bytes + chat overhead) bounds the count
    from above, so a dry run's fits_budget is never wrong in the user's favour."""
    from winnow.usage.tokens import prompt_tokens, upstream_estimate

    counter = prompt_tokens(ModelConfig(id="demo", path=str(DEMO_LM), context_length=64))
    for text in ("What is 13+54?", "ünïcödé 1+1", "a" * 40):
        chat = [ChatMessage("system", "Be brief."), ChatMessage("user", text)]
        (exact,) = counter.measure([chat])
        assert isinstance(exact, int) and upstream_estimate(chat) >= exact
    upstream = prompt_tokens(
        ModelConfig(id="up", provider="openai", base_url=f"http://127.0.0.1:{closed_port()}/v1", context_length=50)
    )
    fits, too_long = upstream.measure([[ChatMessage("user", "hi")], [ChatMessage("user", "é" * 30)]])
    assert fits == upstream_estimate([ChatMessage("user", "hi")])
    assert not isinstance(too_long, int) and "context" in too_long.message


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    """Another Winnow serving demo-lm (context 64) on /v1: prompts longer than that fail there, per row."""
    server = LiveServer(tmp_path_factory.mktemp("upstream") / "data").start()
    yield server, server.cli("keys", "create", "relay").stdout.split()[-1]
    server.stop()


@pytest.fixture
def relayed(
    tmp_path: Path, upstream: tuple[LiveServer, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[TestClient, str]]:
    server, relay_key = upstream
    monkeypatch.setenv("RELAY_KEY", relay_key)
    model = ModelConfig(
        id="up", provider="openai", base_url=f"{server.url}/v1", upstream_model="demo-lm", api_key_env="RELAY_KEY"
    )
    settings = Settings(data_dir=tmp_path / "data", workers=0, models=[model])
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client, _runtime(client).keys.create("owner").key


def _errors(client: TestClient, key: str, job_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/api/v1/synthetic_data_generation/jobs/{job_id}/errors", headers=bearer(key))
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines()]


@pytest.mark.slow  # a real `winnow serve` as the upstream
def test_rows_that_fail_during_a_run_are_kept_counted_and_served(relayed: tuple[TestClient, str]) -> None:
    client, key = relayed
    rt = _runtime(client)
    prompts = _write(rt.settings.data_dir / "mixed.jsonl", ["What is 1+2?", "What is 5+6? " * 10, "What is 3+4?"])
    job = client.post(SUBMIT, json=_body(prompts, model="up", num_generations=1), headers=bearer(key)).json()
    with running_worker(rt.settings):
        status = wait_for_job(client, key, job["job_id"], timeout=60)
    assert status["status"] == "completed" and status.get("error") is None, status
    assert status["counts"]["errors"] == 1 and status["counts"]["prompts_generated"] == 2
    (error,) = _errors(client, key, job["job_id"])
    assert (error["id"], error["index"], error["line"]) == ("p1", 1, 2) and "context" in error["error"], error
    output = client.get(f"/api/v1/synthetic_data_generation/jobs/{job['job_id']}/output", headers=bearer(key))
    assert sorted(json.loads(line)["id"] for line in output.text.splitlines()) == ["p0", "p2"]


@pytest.mark.slow  # a real `winnow serve` as the upstream
def test_a_job_whose_every_row_failed_is_failed_and_says_why(relayed: tuple[TestClient, str]) -> None:
    client, key = relayed
    rt = _runtime(client)
    prompts = _write(rt.settings.data_dir / "all-long.jsonl", ["What is 5+6? " * 10, "What is 7+8? " * 10])
    job = client.post(SUBMIT, json=_body(prompts, model="up", num_generations=1), headers=bearer(key)).json()
    with running_worker(rt.settings):
        status = wait_for_job(client, key, job["job_id"], timeout=60)
    assert status["status"] == "failed", status
    assert "all 2 prompts failed" in status["error"] and "context" in status["error"], status
    assert status["counts"]["errors"] == 2 and status["counts"]["prompts_read"] == 2
    assert [e["id"] for e in _errors(client, key, job["job_id"])] == ["p0", "p1"]
    output = client.get(f"/api/v1/synthetic_data_generation/jobs/{job['job_id']}/output", headers=bearer(key))
    assert_error(output, 409, "conflict")

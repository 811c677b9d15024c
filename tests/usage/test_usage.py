"""Usage rows, cost, budgets (402 budget_exceeded before any model call), dry runs and job pausing."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.conftest import (
    DEMO_LM,
    DEMO_PROMPTS,
    TEST_KEY_LIMITS,
    bearer,
    closed_port,
    running_worker,
    until,
    wait_for_job,
)
from tests.spec import assert_error
from winnow.api.app import create_app
from winnow.config import ModelConfig, ModelPrice, Settings
from winnow.db import UsageRecord
from winnow.runtime import Runtime
from winnow.usage.prices import PriceBook, default_table

PRICE = 20.0  # USD per million tokens, in and out: a demo-lm request (~16 tokens) costs ~$0.0003


def _priced(tmp_path: Path, **extra: Any) -> Settings:
    model = ModelConfig(id="demo-lm", path=str(DEMO_LM), input_price_per_mtok=PRICE, output_price_per_mtok=PRICE)
    return Settings(data_dir=tmp_path / "data", workers=0, models=[model], usage_flush_s=0.2, **extra)


@pytest.fixture
def priced(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(_priced(tmp_path)), raise_server_exceptions=False) as client:
        yield client


def _runtime(client: TestClient) -> Runtime:
    rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    return rt


def _generate(client: TestClient, key: str, prompt: str = "What is 17+25?") -> Any:
    body = {"prompt": prompt, "model_id": "demo-lm", "max_tokens": 8, "temperature": 0}
    return client.post("/api/v1/generate", json=body, headers=bearer(key))


def test_every_generation_records_tokens_and_cost_and_a_key_sees_only_its_own(priced: TestClient) -> None:
    rt = _runtime(priced)
    admin, alice, bob = (rt.keys.create(n, admin=n == "admin").key for n in ("admin", "alice", "bob"))
    tokens = 0
    for prompt in ("What is 1+2?", "What is 30+12?"):
        metrics = _generate(priced, alice, prompt).json()["metrics"]
        tokens += metrics["total_tokens"]
    chat = priced.post(
        "/v1/chat/completions",
        json={"model": "demo-lm", "messages": [{"role": "user", "content": "What is 5+5?"}], "max_tokens": 8},
        headers=bearer(alice),
    ).json()
    tokens += chat["usage"]["total_tokens"]
    batch = priced.post(
        "/api/v1/generate/batch",
        json={"prompts": ["What is 2+2?", "What is 3+3?"], "model_id": "demo-lm", "max_tokens": 8},
        headers=bearer(bob),
    )
    assert batch.status_code == 200

    mine = priced.get("/api/v1/usage", params={"group_by": "model"}, headers=bearer(alice)).json()
    assert mine["rows"] == [
        {
            "group": "demo-lm",
            "requests": 3,
            "input_tokens": mine["rows"][0]["input_tokens"],
            "output_tokens": mine["rows"][0]["output_tokens"],
            "total_tokens": tokens,
            "cost_usd": pytest.approx(tokens * PRICE / 1e6, abs=1e-12),
            "avg_latency_ms": mine["rows"][0]["avg_latency_ms"],
        }
    ]
    assert mine["prices_as_of"] == default_table()["as_of"]

    everyone = priced.get("/api/v1/usage", params={"group_by": "key"}, headers=bearer(admin)).json()
    assert {r["group"]: r["requests"] for r in everyone["rows"]} == {"alice": 3, "bob": 2}
    by_day = priced.get("/api/v1/usage", params={"group_by": "day"}, headers=bearer(admin)).json()
    with rt.db.session() as session:  # the UTC days the rows fell on: one, or two if midnight passed
        days = sorted(set(session.scalars(select(UsageRecord.day))))
    assert [r["group"] for r in by_day["rows"]] == days
    assert by_day["total"]["requests"] == sum(r["requests"] for r in by_day["rows"]) == 5
    only_bob = priced.get("/api/v1/usage", params={"key": "bob"}, headers=bearer(admin)).json()
    assert only_bob["total"]["requests"] == 2
    assert_error(priced.get("/api/v1/usage", params={"key": "bob"}, headers=bearer(alice)), 400, "validation_error")
    future = priced.get("/api/v1/usage", params={"from": "2999-01-01T00:00:00Z"}, headers=bearer(admin)).json()
    assert future["rows"] == [] and future["total"]["requests"] == 0


def test_a_spent_budget_is_refused_with_budget_exceeded_and_usage_shows_the_spend(priced: TestClient) -> None:
    """The issue's acceptance: a $0.001 budget against a priced model."""
    rt = _runtime(priced)
    admin = rt.keys.create("admin", admin=True).key
    created = priced.post(
        "/api/v1/keys", json={"name": "capped", "budget": {"usd": 0.001, "period": "total"}}, headers=bearer(admin)
    )
    assert created.status_code == 201 and created.json()["budget"] == {"usd": 0.001, "tokens": None, "period": "total"}
    key = created.json()["key"]
    spent = 0.0
    for _ in range(20):
        response = _generate(priced, key)
        if response.status_code != 200:
            break
        spent += response.json()["metrics"]["total_tokens"] * PRICE / 1e6
    body = assert_error(response, 402, "budget_exceeded")
    assert "0.001" in body["details"]
    # Refused as soon as the next request's input alone would go over: within one request of the cap.
    assert 0.001 - 0.0004 < spent <= 0.001 + 0.0004

    usage = priced.get("/api/v1/usage", headers=bearer(key)).json()
    assert round(usage["total"]["cost_usd"], 2) == round(spent, 2)
    assert usage["total"]["cost_usd"] == pytest.approx(spent, abs=1e-12)
    standing = priced.get("/api/v1/usage/budget", headers=bearer(key)).json()
    assert standing["remaining_usd"] == pytest.approx(max(0.001 - spent, 0.0), abs=1e-12)
    assert standing["spent_usd"] == pytest.approx(spent, abs=1e-12)

    # The OpenAI surface refuses too, as OpenAI refuses a spent quota (429 insufficient_quota); nothing reached the model.
    v1 = priced.post(
        "/v1/chat/completions",
        json={"model": "demo-lm", "messages": [{"role": "user", "content": "hi"}]},
        headers=bearer(key),
    )
    assert v1.status_code == 429 and v1.json()["error"]["code"] == "insufficient_quota"
    assert rt.metrics.budget_rejections.labels("demo-lm")._value.get() == 2
    assert priced.get("/api/v1/usage", headers=bearer(key)).json()["total"]["cost_usd"] == pytest.approx(spent)

    # Raising the budget lets the key through again.
    raised = priced.put("/api/v1/keys/capped/budget", json={"usd": 1.0, "period": "total"}, headers=bearer(admin))
    assert raised.status_code == 200
    assert _generate(priced, key).status_code == 200


def test_a_token_budget_counts_tokens(priced: TestClient) -> None:
    rt = _runtime(priced)
    admin = rt.keys.create("admin", admin=True).key
    key = rt.keys.create("tokens").key
    assert priced.put("/api/v1/keys/tokens/budget", json={"tokens": 30}, headers=bearer(admin)).status_code == 200
    statuses = [_generate(priced, key).status_code for _ in range(4)]
    assert statuses[:2] == [200, 200] and statuses[-1] == 402
    assert priced.put("/api/v1/keys/nobody/budget", json={"tokens": 1}, headers=bearer(admin)).status_code == 404
    assert priced.put("/api/v1/keys/tokens/budget", json={"tokens": 1}, headers=bearer(key)).status_code == 403


def test_budget_is_enforced_across_two_servers_sharing_one_database(tmp_path: Path) -> None:
    settings = _priced(tmp_path)
    with (
        TestClient(create_app(settings), raise_server_exceptions=False) as one,
        TestClient(create_app(settings), raise_server_exceptions=False) as two,
    ):
        rt = _runtime(one)
        admin = rt.keys.create("admin", admin=True).key
        body = {"name": "shared", "budget": {"usd": 0.001}, "rate_limits": json.loads(TEST_KEY_LIMITS)}  # it polls
        key = one.post("/api/v1/keys", json=body, headers=bearer(admin)).json()["key"]

        def standing(server: TestClient) -> dict[str, Any]:  # what that server's ledger holds for the key
            return dict(server.get("/api/v1/usage/budget", headers=bearer(key)).json())

        until("the second server to learn the budget", lambda: standing(two)["budget"] is not None)
        spent = 0.0
        for i in range(20):
            response = _generate(one if i % 2 else two, key)
            if response.status_code != 200:
                break
            spent += response.json()["metrics"]["total_tokens"] * PRICE / 1e6
            # Each server sees the other's spend (through the database) before the next request.
            until(
                f"both servers to see ${spent}",
                lambda total=spent: all(standing(s)["spent_usd"] == pytest.approx(total, abs=1e-9) for s in (one, two)),
            )
        assert_error(response, 402, "budget_exceeded")
        assert 0.001 - 0.0004 < spent < 0.001 + 0.0004


def test_price_table_defaults_and_overrides(tmp_path: Path) -> None:
    table = default_table()
    assert table["as_of"] and table["models"]["gpt-4o"] == {"input": 2.5, "output": 10.0}
    settings = Settings(
        data_dir=tmp_path,
        models=[
            ModelConfig(
                id="gpt", provider="openai", base_url=f"http://127.0.0.1:{closed_port()}/v1", upstream_model="gpt-4o"
            ),
            ModelConfig(
                id="mini",
                provider="openai",
                base_url=f"http://127.0.0.1:{closed_port()}/v1",
                upstream_model="gpt-4o-mini",
            ),
            ModelConfig(id="local", path=str(DEMO_LM)),
            ModelConfig(id="own", path=str(DEMO_LM), input_price_per_mtok=1.0),
        ],
        prices={"gpt-4o-mini": ModelPrice(input=9.0, output=9.0)},
    )
    book = PriceBook(settings)
    assert book.for_model("gpt").cost(1_000_000, 1_000_000) == 12.5
    assert book.for_model("mini").input == 9.0
    assert book.for_model("local").cost(10**6, 10**6) == 0.0
    assert (book.for_model("own").input, book.for_model("own").output) == (1.0, 0.0)


def _job_body(path: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": "demo-lm",
        "prompts_path": path,
        "batch_size": 10,
        "max_gen_len": 8,
        "num_generations": 2,
        "temperature": 1.0,
        "reward_model": "demo-rm",
        "filtering_function": {"name": "best_of_n"},
        "seed": 3,
    } | extra


def test_dry_run_estimates_without_queueing(priced: TestClient, tmp_path: Path) -> None:
    rt = _runtime(priced)
    key = rt.keys.create("planner").key
    prompts = rt.settings.data_dir / "prompts.jsonl"
    shutil.copy(DEMO_PROMPTS, prompts)
    response = priced.post(
        "/api/v1/synthetic_data_generation/submit_job",
        json=_job_body(str(prompts), dry_run=True),
        headers=bearer(key),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "dry_run" and "output_file_path" not in body
    estimate = body["estimate"]
    assert estimate["prompts"] == 500 and estimate["generations"] == 1000
    assert estimate["max_output_tokens"] == 500 * 2 * 8
    assert estimate["max_cost_usd"] == pytest.approx((estimate["input_tokens"] + 8000) * PRICE / 1e6)
    assert estimate["fits_budget"] is True
    jobs = priced.get("/api/v1/synthetic_data_generation/jobs", headers=bearer(key)).json()
    assert jobs["count"] == 0


def test_a_job_pauses_on_its_budget_and_resumes_when_raised_without_loss(priced: TestClient) -> None:
    rt = _runtime(priced)
    admin = rt.keys.create("admin", admin=True).key
    key = rt.keys.create("jobs").key
    prompts = rt.settings.data_dir / "prompts.jsonl"
    prompts.write_text("".join(line + "\n" for line in DEMO_PROMPTS.read_text().splitlines()[:60]))
    # ~20 input + ~4 output tokens a prompt x 2 generations: 60 prompts cost ~$0.04; cap at $0.01.
    assert priced.put("/api/v1/keys/jobs/budget", json={"usd": 0.01}, headers=bearer(admin)).status_code == 200
    job = priced.post(
        "/api/v1/synthetic_data_generation/submit_job", json=_job_body(str(prompts)), headers=bearer(key)
    ).json()

    with running_worker(rt.settings):
        current = wait_for_job(priced, key, job["job_id"], ("paused", "completed", "failed"), timeout=60)
        assert current["status"] == "paused", current
        assert current["error"].startswith("budget_exceeded")
        assert 0 < current["counts"]["prompts_read"] < 60
        spent = priced.get("/api/v1/usage", headers=bearer(key)).json()["total"]
        assert spent["cost_usd"] >= 0.01 - 0.004  # stopped at the chunk that would go over

        assert priced.put("/api/v1/keys/jobs/budget", json={"usd": 10.0}, headers=bearer(admin)).status_code == 200
        current = wait_for_job(priced, key, job["job_id"], ("completed",), timeout=60)
        assert current["status"] == "completed", current
    rows = [json.loads(line) for line in Path(current["output_file_path"]).read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted({r["id"] for r in rows}) and len(rows) == 60
    usage = priced.get("/api/v1/usage", params={"group_by": "model"}, headers=bearer(key)).json()["total"]
    assert usage["requests"] == 60  # one row a prompt: a chunk redone after the pause would count twice

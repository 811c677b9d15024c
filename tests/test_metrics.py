"""GET /metrics parses with prometheus-client's parser and moves when traffic flows."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import DEMO_LM, bearer
from winnow.api.app import create_app
from winnow.config import ModelConfig, Settings
from winnow.db import Database
from winnow.runtime import Runtime
from winnow.schemas.keys import KeyBudget
from winnow.usage import UsageService


def _samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_metrics_move_with_traffic(client: TestClient, runtime: Runtime) -> None:
    key = runtime.keys.create("m", rate_limits={"other": "2/minute"}).key
    before = _samples(client)
    assert before[("winnow_jobs", (("status", "queued"),))] == 0
    for _ in range(3):
        client.get("/api/v1/status", headers=bearer(key))
    generated = client.post(
        "/api/v1/generate",
        json={"model_id": "demo-lm", "prompt": "What is 2+2?", "max_tokens": 4, "temperature": 0},
        headers=bearer(key),
    ).json()
    streamed = client.post(
        "/v1/chat/completions",
        json={
            "model": "demo-lm",
            "messages": [{"role": "user", "content": "What is 3+3?"}],
            "stream": True,
            "max_tokens": 4,
        },
        headers=bearer(key),
    )
    assert streamed.status_code == 200
    after = _samples(client)

    def value(name: str, **labels: str) -> float:
        return after.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("winnow_http_requests_total", method="GET", route="/api/v1/status", status="200") == 2
    assert value("winnow_http_requests_total", method="GET", route="/api/v1/status", status="429") == 1
    assert value("winnow_rate_limit_rejections_total", rate_class="other") == 1
    assert value("winnow_http_request_duration_seconds_count", method="POST", route="/api/v1/generate") == 1
    output = generated["metrics"]["output_tokens"]
    assert value("winnow_generation_tokens_total", model="demo-lm", direction="output") >= output + 1
    assert (
        value("winnow_generation_tokens_total", model="demo-lm", direction="input")
        >= generated["metrics"]["input_tokens"]
    )
    assert value("winnow_time_to_first_token_seconds_count", model="demo-lm") == 1
    assert value("winnow_local_batches_total", model="demo-lm") >= 1
    assert value("winnow_local_batch_rows_total", model="demo-lm") >= 1
    assert ("winnow_local_queue_rows", (("model", "demo-lm"),)) in after


def test_usage_spend_and_budget_metrics_count_every_process(tmp_path: Path) -> None:
    priced = ModelConfig(id="demo-lm", path=str(DEMO_LM), input_price_per_mtok=3.0, output_price_per_mtok=5.0)
    settings = Settings(data_dir=tmp_path / "data", workers=0, models=[priced])
    with TestClient(create_app(settings)) as client:
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        key = runtime.keys.create("spender")
        body = {"model_id": "demo-lm", "prompt": "What is 2+2?", "max_tokens": 4, "temperature": 0}
        served = client.post("/api/v1/generate", json=body, headers=bearer(key.key)).json()["metrics"]
        # What a job worker (another process, its own UsageService) records reaches this /metrics too.
        worker = UsageService(Database(settings.effective_database_url), settings)
        worker.record(key.id, "demo-lm", "job", 100, 50, 12.0, job_id="job-0")
        worker.close()
        runtime.keys.set_budget("spender", KeyBudget(usd=0.0))
        runtime.usage.recorder.flush()
        assert client.post("/api/v1/generate", json=body, headers=bearer(key.key)).status_code == 402
        after = _samples(client)

    def value(name: str, **labels: str) -> float:
        return after.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("winnow_usage_generations_total", model="demo-lm", source="api") == 1
    assert value("winnow_usage_generations_total", model="demo-lm", source="job") == 1
    tokens = value("winnow_usage_tokens_total", model="demo-lm", source="api", direction="input")
    assert tokens == served["input_tokens"]
    assert value("winnow_spend_usd_total", model="demo-lm", source="job") == pytest.approx((100 * 3 + 50 * 5) / 1e6)
    api_cost = (served["input_tokens"] * 3 + served["output_tokens"] * 5) / 1e6
    assert value("winnow_spend_usd_total", model="demo-lm", source="api") == pytest.approx(api_cost)
    assert value("winnow_budget_rejections_total", model="demo-lm") == 1

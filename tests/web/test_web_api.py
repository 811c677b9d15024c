"""API routes the console needs: usage per day and model, a job's output by byte offset, and the
names a job may use. Plain API tests (no browser)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.conftest import bearer, running_worker, wait_for_job
from tests.sdg.jobs import SDG, job_body, submit, write_prompts
from winnow.config import Settings
from winnow.db import UsageRecord
from winnow.runtime import Runtime


def _generate(client: TestClient, key: str, prompt: str) -> None:
    body = {"model_id": "demo-lm", "prompt": prompt, "max_tokens": 4, "temperature": 0}
    assert client.post("/api/v1/generate", json=body, headers=bearer(key)).status_code == 200


def test_usage_daily_is_usage_by_day_and_model(
    client: TestClient, runtime: Runtime, admin_key: str, user_key: str
) -> None:
    _generate(client, admin_key, "What is 1+1?")
    _generate(client, user_key, "What is 2+2?")
    _generate(client, user_key, "What is 3+3?")
    daily = client.get("/api/v1/usage/daily", params={"days": 3}, headers=bearer(admin_key))
    assert daily.status_code == 200, daily.text
    body = daily.json()
    today = date.fromisoformat(body["days"][-1])  # the server's UTC day, not this process's clock
    assert today - datetime.now(UTC).date() in (timedelta(0), timedelta(days=-1))
    assert body["days"] == [(today - timedelta(days=d)).isoformat() for d in (2, 1, 0)]
    assert body["models"] == ["demo-lm"]
    by_model = client.get(
        "/api/v1/usage", params={"group_by": "model", "from": body["from"]}, headers=bearer(admin_key)
    ).json()
    (group,) = by_model["rows"]
    with runtime.db.session() as session:  # the UTC days the rows fell on: one, or two if midnight passed
        days = sorted(set(session.scalars(select(UsageRecord.day))))
    assert [(row["day"], row["model"]) for row in body["rows"]] == [(day, "demo-lm") for day in days]
    assert set(days) <= set(body["days"])
    for name in ("requests", "input_tokens", "output_tokens", "total_tokens", "cost_usd"):
        assert sum(row[name] for row in body["rows"]) == pytest.approx(group[name], abs=1e-12), name
    assert group["requests"] == 3

    mine = client.get("/api/v1/usage/daily", headers=bearer(user_key)).json()
    assert len(mine["days"]) == 14
    assert sum(r["requests"] for r in mine["rows"]) == 2  # a key sees its own usage only
    other = client.get("/api/v1/usage/daily", params={"key": "admin"}, headers=bearer(user_key))
    assert other.status_code == 400 and "own usage" in other.json()["message"]


def test_usage_daily_is_in_the_openapi_document(client: TestClient) -> None:
    doc = client.get("/api/v1/openapi.json").json()
    for path in ("/api/v1/usage/daily", f"{SDG}/jobs/{{job_id}}/rows", f"{SDG}/functions"):
        operation = doc["paths"][path]["get"]
        assert operation["summary"] and operation["security"] == [{"ApiKeyAuth": []}], path
    assert "next_offset" in doc["components"]["schemas"]["JobRows"]["properties"]


def test_functions_name_what_a_job_may_use(client: TestClient, user_key: str) -> None:
    body = client.get(f"{SDG}/functions", headers=bearer(user_key)).json()
    assert body["reward_models"] == ["demo-rm"]
    assert {"raw", "sigmoid", "zscore"} <= set(body["scoring_functions"])
    assert {"none", "threshold", "best_of_n", "top_k"} <= set(body["filters"])


def _pages(client: TestClient, key: str, job_id: str, limit: int) -> list[dict[str, Any]]:
    pages, offset = [], 0
    while True:
        response = client.get(
            f"{SDG}/jobs/{job_id}/rows", params={"offset": offset, "limit": limit}, headers=bearer(key)
        )
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["offset"] == offset
        pages.append(page)
        if page["next_offset"] is None:
            return pages
        assert page["next_offset"] > offset
        offset = page["next_offset"]


def test_job_rows_page_through_the_output_by_byte_offset(
    client: TestClient, settings: Settings, runtime: Runtime, user_key: str
) -> None:
    prompts = write_prompts(settings.data_dir / "small.jsonl", 11)
    job = submit(client, user_key, job_body(prompts, num_generations=2))
    job_id = job["job_id"]
    early = client.get(f"{SDG}/jobs/{job_id}/rows", headers=bearer(user_key))
    assert early.status_code == 409  # no output before the job completes
    with running_worker(settings):
        done = wait_for_job(client, user_key, job_id, ("completed", "failed", "cancelled"))
    assert done["status"] == "completed", done

    output = client.get(f"{SDG}/jobs/{job_id}/output", headers=bearer(user_key)).content
    written = [json.loads(line) for line in output.splitlines()]
    assert len(written) == done["counts"]["rows_kept"] == 22

    pages = _pages(client, user_key, job_id, limit=5)
    assert [len(p["rows"]) for p in pages] == [5, 5, 5, 5, 2]
    assert [row for p in pages for row in p["rows"]] == written  # every row once, in the order written
    assert {p["size_bytes"] for p in pages} == {len(output)}
    assert pages[1]["offset"] == output.index(b"\n", sum(len(line) + 1 for line in output.splitlines()[:4])) + 1

    mid_row = client.get(f"{SDG}/jobs/{job_id}/rows", params={"offset": 1}, headers=bearer(user_key))
    assert mid_row.status_code == 400 and "start of a row" in mid_row.json()["message"]
    past_end = client.get(f"{SDG}/jobs/{job_id}/rows", params={"offset": len(output) + 1}, headers=bearer(user_key))
    assert past_end.status_code == 400
    too_many = client.get(f"{SDG}/jobs/{job_id}/rows", params={"limit": 501}, headers=bearer(user_key))
    assert too_many.status_code == 400
    stranger = runtime.keys.create("stranger").key
    assert client.get(f"{SDG}/jobs/{job_id}/rows", headers=bearer(stranger)).status_code == 404

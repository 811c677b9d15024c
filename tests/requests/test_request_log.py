"""The request log: every /v1 and /generate call with its fields, failed calls too, bodies only where
enabled (capped, redacted), one key's calls invisible to another, filters and cursor paging,
retention, and a routed call's failed attempt beside the one that answered."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert

from tests.api.test_passthrough import FakeUpstream
from tests.conftest import DEMO_LM, bearer, closed_port, until
from tests.spec import assert_error
from winnow.api.app import create_app
from winnow.config import ModelConfig, Settings
from winnow.requests.config import RequestLogConfig
from winnow.requests.table import RequestRecord
from winnow.runtime import Runtime

PRICE = 20.0
CHAT = {"model": "demo-lm", "messages": [{"role": "user", "content": "What is 5+5?"}], "max_tokens": 4}


def _settings(tmp_path: Path, upstream: str, **log: Any) -> Settings:
    local = ModelConfig(id="demo-lm", path=str(DEMO_LM), input_price_per_mtok=PRICE, output_price_per_mtok=PRICE)
    routed = ModelConfig(
        id="routed",
        type="commercial",
        provider="openai",
        upstream_model="up-model-1",
        max_retries=0,
        input_price_per_mtok=1.0,
        output_price_per_mtok=2.0,
        deployments=[  # the first one round robin picks refuses connections
            {"id": "dead", "base_url": f"http://127.0.0.1:{closed_port()}/v1"},
            {"id": "live", "base_url": f"{upstream}/v1"},
        ],
        log_bodies=True,
    )
    return Settings(data_dir=tmp_path / "data", workers=0, models=[local, routed], request_log=RequestLogConfig(**log))


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


def _client(settings: Settings) -> TestClient:
    return TestClient(create_app(settings), raise_server_exceptions=False)


def _keys(client: TestClient) -> tuple[Runtime, str, str, str]:
    rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    return rt, *(rt.keys.create(n, admin=n == "admin").key for n in ("admin", "alice", "bob"))  # type: ignore[return-value]


def _log(client: TestClient, caller: str, **params: Any) -> list[dict[str, Any]]:
    answer = client.get("/api/v1/requests", params=params, headers=bearer(caller))
    assert answer.status_code == 200, answer.text
    data: list[dict[str, Any]] = answer.json()["data"]
    return data


def test_calls_are_logged_with_their_fields_and_a_key_sees_only_its_own(tmp_path: Path, upstream: FakeUpstream) -> None:
    with _client(_settings(tmp_path, upstream.url)) as client:
        _, admin, alice, bob = _keys(client)
        chat = client.post("/v1/chat/completions", json=CHAT, headers={**bearer(alice), "x-request-id": "r-1"})
        assert chat.status_code == 200
        body = {"prompt": "What is 1+2?", "model_id": "demo-lm", "max_tokens": 4}
        assert client.post("/api/v1/generate", json=body, headers=bearer(bob)).status_code == 200
        missing = client.post("/v1/chat/completions", json={**CHAT, "model": "nope"}, headers=bearer(alice))
        assert missing.status_code == 404
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 401

        mine = _log(client, alice)
        assert [(r["path"], r["status"], r["error_code"], r["model"]) for r in mine] == [
            ("/v1/chat/completions", 404, "model_not_found", "nope"),
            ("/v1/chat/completions", 200, None, "demo-lm"),
        ]
        call = mine[1]
        usage = chat.json()["usage"]
        assert call["request_id"] == "r-1" and call["key"] == "alice" and call["method"] == "POST"
        assert (call["input_tokens"], call["output_tokens"]) == (usage["prompt_tokens"], usage["completion_tokens"])
        assert call["cost_usd"] == pytest.approx(usage["total_tokens"] * PRICE / 1e6)
        assert call["latency_ms"] > 0 and 0 < call["ttft_ms"] <= call["latency_ms"]
        assert call["generation_id"] and not call["bodies_stored"] and call["cached"] is False
        detail = client.get(f"/api/v1/requests/{call['id']}", headers=bearer(alice)).json()
        assert detail["request_body"] is None and detail["response_body"] is None

        # bob's call and the keyless 401 are invisible to alice, in the list and one by one
        everyone = _log(client, admin)
        assert len(everyone) == 4 and {r["key"] for r in everyone} == {"alice", "bob", None}
        bobs = [r for r in everyone if r["key"] == "bob"]
        assert bobs[0]["path"] == "/api/v1/generate" and bobs[0]["input_tokens"] > 0
        assert_error(client.get(f"/api/v1/requests/{bobs[0]['id']}", headers=bearer(alice)), 404, "not_found")
        assert _log(client, admin, key="bob") == bobs
        assert_error(client.get("/api/v1/requests", params={"key": "bob"}, headers=bearer(alice)), 400)


def test_filters_and_cursor_paging(tmp_path: Path, upstream: FakeUpstream) -> None:
    with _client(_settings(tmp_path, upstream.url)) as client:
        _, admin, alice, _bob = _keys(client)
        for n in range(5):
            body = {"prompt": f"What is {n}+1?", "model_id": "demo-lm", "max_tokens": 2}
            assert client.post("/api/v1/generate", json=body, headers=bearer(alice)).status_code == 200
        client.post("/api/v1/generate", json={"prompt": "x", "model_id": "nope"}, headers=bearer(alice))
        assert [r["status"] for r in _log(client, alice, status="error")] == [404]
        assert len(_log(client, alice, status="ok", model="demo-lm")) == 5
        assert _log(client, alice, status="404")[0]["error_code"] == "model_not_found"
        later = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
        assert _log(client, alice, since=later) == [] and len(_log(client, alice, until=later)) == 6
        assert_error(client.get("/api/v1/requests", params={"status": "bad"}, headers=bearer(alice)), 400)

        seen: list[str] = []
        after = None
        while True:
            params = {"limit": 2, **({"after": after} if after else {})}
            page = client.get("/api/v1/requests", params=params, headers=bearer(admin)).json()
            seen += [r["id"] for r in page["data"]]
            if not page["has_more"]:
                break
            after = page["last_id"]
        assert seen == [r["id"] for r in _log(client, admin)] and len(seen) == 6 and len(set(seen)) == 6


def test_bodies_only_where_enabled_capped_and_redacted(tmp_path: Path, upstream: FakeUpstream) -> None:
    settings = _settings(tmp_path, upstream.url, body_keys=["alice"], body_max_bytes=200)
    with _client(settings) as client:
        _, admin, alice, bob = _keys(client)
        secret = "sk-" + "s3cr3t" * 4
        chat = {**CHAT, "messages": [{"role": "user", "content": f"my key is {secret} " + "pad " * 80}]}
        client.post("/v1/chat/completions", json=chat, headers=bearer(alice))
        client.post("/v1/chat/completions", json=chat, headers=bearer(bob))
        kept, dropped = _log(client, alice)[0], _log(client, bob)[0]
        assert kept["bodies_stored"] and not dropped["bodies_stored"]
        detail = client.get(f"/api/v1/requests/{kept['id']}", headers=bearer(alice)).json()
        assert secret not in detail["request_body"] and "sk-***" in detail["request_body"]
        assert len(detail["request_body"].encode()) <= 210 and detail["request_body"].endswith("…")
        assert detail["response_body"].startswith("{")
        assert [r["id"] for r in _log(client, admin, q="my key is")] == [kept["id"]]
        assert _log(client, admin, q="100%_") == []


def test_a_routed_call_shows_its_failed_attempt_and_the_one_that_answered(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    with _client(_settings(tmp_path, upstream.url)) as client:
        _, _admin, alice, _bob = _keys(client)
        answer = client.post("/v1/chat/completions", json={**CHAT, "model": "routed"}, headers=bearer(alice))
        assert answer.status_code == 200 and answer.headers["x-winnow-attempts"] == "2"
        (row,) = _log(client, alice)
        assert (row["model"], row["deployment"], row["attempts"]) == ("routed", "live", 2)
        detail = client.get(f"/api/v1/requests/{row['id']}", headers=bearer(alice)).json()
        dead, live = detail["attempt_log"]
        assert (dead["deployment"], live["deployment"]) == ("dead", "live")
        assert dead["error"] and live["error"] is None
        assert 0 <= dead["start_ms"] <= live["start_ms"] and live["duration_ms"] > 0
        assert detail["bodies_stored"] and '"routed"' in detail["request_body"]  # the model's log_bodies


def test_retention_deletes_old_rows_and_clears_old_bodies(tmp_path: Path, upstream: FakeUpstream) -> None:
    settings = _settings(tmp_path, upstream.url, bodies=True, retention_days=10, body_retention_days=2)
    with _client(settings) as client:
        rt, _admin, alice, _bob = _keys(client)
        client.post("/v1/chat/completions", json=CHAT, headers=bearer(alice))
        assert _log(client, alice)[0]["bodies_stored"]
        assert rt.requests.sweep() == (0, 0)
        assert rt.requests.sweep(datetime.now(UTC) + timedelta(days=3)) == (0, 1)
        (row,) = _log(client, alice)
        assert not row["bodies_stored"]
        assert rt.requests.sweep(datetime.now(UTC) + timedelta(days=11)) == (1, 0)
        assert _log(client, alice) == []


def test_the_routes_are_in_the_openapi_document(client: TestClient) -> None:
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    listed = paths["/api/v1/requests"]["get"]
    assert {"400", "401"} <= set(listed["responses"])
    assert listed["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("ErrorResponse")
    assert "404" in paths["/api/v1/requests/{request_id}"]["get"]["responses"]


def test_stats_keep_job_traffic_out_of_the_api_latency(tmp_path: Path, upstream: FakeUpstream) -> None:
    with _client(_settings(tmp_path, upstream.url)) as client:
        rt, admin, alice, bob = _keys(client)
        for _ in range(3):
            assert client.post("/v1/chat/completions", json=CHAT, headers=bearer(alice)).status_code == 200
        alice_id = rt.keys.authenticate(alice).id
        rt.usage.recorder.record(rt.usage.event(alice_id, "demo-lm", "job", 100, 100, 4000.0, "job-1"))
        stats = client.get("/api/v1/requests/stats", headers=bearer(admin)).json()
        assert stats["api"]["requests"] == 3 and stats["api"]["errors"] == 0
        assert stats["api"]["p99_ms"] < 4000.0  # the job's generation is not an API call
        traffic = {t["kind"]: t for t in stats["traffic"]}
        assert (traffic["api"]["requests"], traffic["jobs"]["requests"]) == (3, 1)
        assert traffic["jobs"]["cost_usd"] == pytest.approx(200 * PRICE / 1e6)
        assert {(s["key"], s["model"]) for s in stats["spend"]} == {("alice", "demo-lm")}
        (alice_row,) = stats["keys"]
        assert alice_row["key"] == "alice" and alice_row["last_used"] is not None
        mine = client.get("/api/v1/requests/stats", headers=bearer(bob)).json()
        assert mine["api"]["requests"] == 0 and mine["keys"] == []


def test_the_background_task_applies_retention_and_batches_add_up(tmp_path: Path, upstream: FakeUpstream) -> None:
    settings = _settings(tmp_path, upstream.url, flush_s=0.1, sweep_s=0.2, retention_days=1)
    with _client(settings) as client:
        rt, admin, alice, _bob = _keys(client)
        batch = {"prompts": ["What is 1+1?", "What is 2+2?"], "model_id": "demo-lm", "max_tokens": 2}
        answer = client.post("/api/v1/generate/batch", json=batch, headers=bearer(alice))
        assert answer.status_code == 200
        (row,) = _log(client, alice)
        assert row["path"] == "/api/v1/generate/batch" and row["input_tokens"] > 0
        assert row["cost_usd"] == pytest.approx((row["input_tokens"] + row["output_tokens"]) * PRICE / 1e6)
        with rt.db.session() as session:  # a call from before the retention period
            session.execute(
                insert(RequestRecord),
                [
                    {
                        **_old_row(),
                        "key_id": rt.keys.authenticate(alice).id,
                        "created_at": datetime.now(UTC) - timedelta(days=2),
                    }
                ],
            )
        until("the old call swept", lambda: [r["id"] for r in _log(client, admin)] == [row["id"]] or None)


def _old_row() -> dict[str, Any]:
    return {
        "id": "req_old",
        "request_id": "r-old",
        "method": "POST",
        "path": "/v1/completions",
        "cached": False,
        "status": 200,
        "latency_ms": 1.0,
    }

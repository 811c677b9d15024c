"""A batch for an upstream model: each line forwarded as written through the model's router (the
upstream's own fields and errors passed on), answered once, billed from the upstream's usage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.api.test_passthrough import ECHO_USAGE, Answer, FakeUpstream, _error
from tests.batches.test_worker_killed import create_batch
from tests.conftest import bearer, running_worker, wait_for
from tests.usage.test_usage_once import job_usage
from winnow.api.app import create_app
from winnow.config import ModelConfig, Settings
from winnow.runtime import Runtime

LINES = 6


def test_an_upstream_models_lines_go_through_its_router(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-fake")
    with FakeUpstream() as fake:
        model = ModelConfig.model_validate(
            {
                "id": "fake",
                "type": "commercial",
                "provider": "openai",
                "base_url": f"{fake.url}/v1",
                "upstream_model": "up-model-1",
                "api_key_env": "FAKE_UPSTREAM_KEY",
                "max_retries": 0,
            }
        )
        settings = Settings(data_dir=tmp_path / "data", workers=0, models=[model], batch_upstream_concurrency=2)
        fake.answers.append(Answer(status=400, body=_error(400, "bad temperature", "invalid_request_error", "bad")))
        with TestClient(create_app(settings)) as client:
            rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
            key = rt.keys.create("owner").key
            batch_id = create_batch(client, key, LINES, model="fake", extra={"x_upstream_only": 1})
            with running_worker(settings):
                status = wait_for(client, key, f"/v1/batches/{batch_id}", timeout=120)
            assert status["status"] == "completed", status
            assert status["request_counts"] == {"total": LINES, "completed": LINES - 1, "failed": 1}
            read = client.get(f"/v1/files/{status['error_file_id']}/content", headers=bearer(key)).text
            (failed,) = [json.loads(line) for line in read.splitlines()]
            assert failed["response"]["status_code"] == 400
            assert failed["response"]["body"]["error"]["message"] == "bad temperature"
            assert len(fake.received) == LINES and all(r["body"]["x_upstream_only"] == 1 for r in fake.received)
            assert {r["path"] for r in fake.received} == {"/v1/chat/completions"}
            usage = (
                LINES - 1,
                (LINES - 1) * ECHO_USAGE["prompt_tokens"],
                (LINES - 1) * ECHO_USAGE["completion_tokens"],
            )
            assert job_usage(rt.db, batch_id) == usage

"""The completion window, driven by the official ``openai`` client: a batch not finished by its
``expires_at`` ends ``expired``, the lines it answered in its output file and every other line in its
error file as OpenAI's ``batch_expired``. The window is the setting ``batch_completion_window_s``; a
window that ends mid-batch is the worker's clock moved past it after two chunks (no sleeping)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import count
from pathlib import Path
from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient

from tests.api.test_openai_files import batch_line, jsonl
from tests.conftest import running_worker, until
from winnow.api.app import create_app
from winnow.batches import job as batch_job
from winnow.config import Settings

pytestmark = pytest.mark.slow  # a job worker answering on demo-lm

LINES, CHUNK = 12, 4


@contextmanager
def _batch(settings: Settings) -> Iterator[tuple[openai.OpenAI, Any]]:
    with TestClient(create_app(settings)) as http:
        key = http.app.state.runtime.keys.create("owner").key  # type: ignore[attr-defined]
        client = openai.OpenAI(base_url="http://testserver/v1", api_key=key, http_client=http, max_retries=0)
        rows = [batch_line(n) for n in range(LINES)]
        upload = client.files.create(file=("in.jsonl", io.BytesIO(jsonl(rows))), purpose="batch")
        batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
        with running_worker(settings):
            yield client, until("the batch to end", lambda: _ended(client, batch.id), timeout=120)


def _ended(client: openai.OpenAI, batch_id: str) -> Any:
    batch = client.batches.retrieve(batch_id)
    return batch if batch.status in ("completed", "failed", "cancelled", "expired") else None


def _lines(client: openai.OpenAI, file_id: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def _assert_expired(client: openai.OpenAI, batch: Any, answered: int) -> None:
    assert batch.status == "expired" and batch.expired_at and batch.completed_at is None, batch
    assert batch.request_counts.model_dump() == {"total": LINES, "completed": answered, "failed": LINES - answered}
    expired = _lines(client, batch.error_file_id)
    assert [line["custom_id"] for line in expired] == [f"req-{n}" for n in range(answered, LINES)]
    for line in expired:
        assert line["response"] is None and line["error"]["code"] == "batch_expired", line
    if answered:
        done = _lines(client, batch.output_file_id)
        assert [line["custom_id"] for line in done] == [f"req-{n}" for n in range(answered)]
        assert all(line["response"]["status_code"] == 200 for line in done)
    else:
        assert batch.output_file_id is None


def test_a_window_ended_before_the_batch_ran_expires_every_line(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", workers=0, batch_chunk_lines=CHUNK, batch_completion_window_s=0)
    with _batch(settings) as (client, batch):
        assert abs(batch.expires_at - batch.created_at) <= 1  # (whole seconds apart)
        _assert_expired(client, batch, 0)


def test_a_window_ending_mid_batch_publishes_what_was_answered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checks = count()
    real = batch_job.now
    monkeypatch.setattr(batch_job, "now", lambda: real() + (0 if next(checks) < 2 else 2 * 86_400))
    settings = Settings(data_dir=tmp_path / "data", workers=0, batch_chunk_lines=CHUNK)
    with _batch(settings) as (client, batch):
        assert abs(batch.expires_at - batch.created_at - 86_400) <= 1
        _assert_expired(client, batch, 2 * CHUNK)

"""A batch of ``/v1/embeddings`` lines driven by the official ``openai`` client: local minilm-l6 lines
answered together exactly as the live route answers them, upstream lines through the router, bad
lines in the error file, every answer a valid CreateEmbeddingResponse, billed once per input token."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
from fastapi.testclient import TestClient

from tests.api.test_openai_fidelity import assert_openai
from tests.api.test_openai_files import jsonl
from tests.api.test_passthrough import EMBED_TOKENS, FakeUpstream
from tests.conftest import running_worker, until
from tests.usage.test_usage_once import job_usage
from winnow.api.app import create_app
from winnow.config import ModelConfig, Settings
from winnow.runtime import Runtime

pytestmark = pytest.mark.slow  # a worker and a sentence-transformers model

TEXTS = ["The cat sat on the mat.", "A dog barked.", "Stock markets fell today."]


def _line(n: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"custom_id": f"emb-{n}", "method": "POST", "url": "/v1/embeddings", "body": body}


def _rows() -> list[dict[str, Any]]:
    local: list[dict[str, Any]] = [
        {"model": "minilm-l6", "input": TEXTS[0]},
        {"model": "minilm-l6", "input": TEXTS[1:]},
        {"model": "minilm-l6", "input": TEXTS, "encoding_format": "base64", "dimensions": 384},
        {"model": "minilm-l6", "input": TEXTS[0], "dimensions": 100},  # minilm cannot shorten: 400
        {"model": "demo-lm", "input": TEXTS[0]},  # not an embedding model: 400
        {"model": "up-embed", "input": TEXTS[:2]},
    ]
    return [_line(n, body) for n, body in enumerate(local)]


def _settings(data: Path, upstream_url: str) -> Settings:
    defaults = {m.id: m for m in Settings(data_dir=data).models}
    upstream = ModelConfig(
        id="up-embed",
        type="embedding",
        provider="openai",
        base_url=f"{upstream_url}/v1",
        upstream_model="text-embedding-3-small",
        api_key_env="FAKE_EMBED_KEY",
        max_retries=0,
    )
    models = [defaults["demo-lm"], defaults["minilm-l6"], upstream]
    return Settings(data_dir=data, workers=0, models=models, usage_flush_s=0.2, batch_chunk_lines=4)


def _ended(client: openai.OpenAI, batch_id: str) -> Any:
    batch = client.batches.retrieve(batch_id)
    return batch if batch.status in ("completed", "failed", "cancelled", "expired") else None


def _responses(client: openai.OpenAI, file_id: str) -> dict[str, Any]:
    lines = [json.loads(line) for line in client.files.content(file_id).text.splitlines()]
    return {line["custom_id"]: line["response"] for line in lines}


def test_a_batch_of_embeddings_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_EMBED_KEY", "sk-fake-embed")
    with FakeUpstream() as fake, TestClient(create_app(_settings(tmp_path / "data", fake.url))) as http:
        settings = http.app.state.runtime.settings  # type: ignore[attr-defined]
        rt: Runtime = http.app.state.runtime  # type: ignore[attr-defined]
        oai = openai.OpenAI(base_url="http://testserver/v1", api_key=rt.keys.create("o").key, http_client=http)
        upload = oai.files.create(file=("in.jsonl", io.BytesIO(jsonl(_rows()))), purpose="batch")
        batch = oai.batches.create(input_file_id=upload.id, endpoint="/v1/embeddings", completion_window="24h")
        with running_worker(settings):
            done = until("the batch to end", lambda: _ended(oai, batch.id), timeout=120)
        assert done.status == "completed" and done.request_counts is not None
        assert (done.request_counts.completed, done.request_counts.failed) == (4, 2)
        assert done.output_file_id and done.error_file_id
        answers = _responses(oai, done.output_file_id)
        assert all(answer["status_code"] == 200 for answer in answers.values())
        for custom_id in ("emb-0", "emb-1", "emb-5"):  # (the schema types only float vectors)
            assert_openai("CreateEmbeddingResponse", answers[custom_id]["body"])
        live = oai.embeddings.create(model="minilm-l6", input=TEXTS)  # the live route, for the same texts
        vectors = [d.embedding for d in live.data]
        assert np.allclose(answers["emb-0"]["body"]["data"][0]["embedding"], vectors[0], atol=1e-5)
        assert np.allclose([d["embedding"] for d in answers["emb-1"]["body"]["data"]], vectors[1:], atol=1e-5)
        packed = [np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in answers["emb-2"]["body"]["data"]]
        assert np.allclose(packed, vectors, atol=1e-5)
        assert answers["emb-2"]["body"]["usage"]["prompt_tokens"] == live.usage.prompt_tokens
        assert answers["emb-5"]["body"]["usage"]["prompt_tokens"] == 2 * EMBED_TOKENS
        assert [r["path"] for r in fake.received] == ["/v1/embeddings"]
        errors = _responses(oai, done.error_file_id)
        assert errors["emb-3"]["status_code"] == 400 and errors["emb-3"]["body"]["error"]["param"] == "dimensions"
        assert errors["emb-4"]["status_code"] == 400
        assert "not an embedding model" in errors["emb-4"]["body"]["error"]["message"]
        tokens = sum(a["body"]["usage"]["prompt_tokens"] for a in answers.values())
        assert job_usage(rt.db, batch.id) == (4, tokens, 0)  # one row a line, per input token, once

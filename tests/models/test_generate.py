"""/generate and /generate/batch with the shipped demo-lm: spec shapes, bounds, tokens, batching."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from transformers import AutoTokenizer

from tests.conftest import DEMO_LM, DEMO_PROMPTS, bearer
from tests.spec import assert_error, assert_valid
from winnow.config import ModelConfig, Settings
from winnow.models.base import SamplingParams
from winnow.models.providers.transformers import TransformersProvider
from winnow.runtime import Runtime


def _rows(count: int) -> list[dict[str, str]]:
    return [json.loads(line) for line in DEMO_PROMPTS.read_text().splitlines()[:count]]


def test_generate_returns_spec_valid_text_and_real_token_counts(client: TestClient, user_key: str) -> None:
    response = client.post(
        "/api/v1/generate",
        json={"prompt": "What is 17+25?", "model_id": "demo-lm", "max_tokens": 8, "temperature": 0},
        headers=bearer(user_key),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert_valid("GenerateResponse", body)
    tokenizer = AutoTokenizer.from_pretrained(DEMO_LM)
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 17+25?"}], add_generation_prompt=True, tokenize=False
    )
    metrics = body["metrics"]
    assert metrics["input_tokens"] == len(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    assert 1 <= metrics["output_tokens"] <= 8
    assert metrics["total_tokens"] == metrics["input_tokens"] + metrics["output_tokens"]
    assert body["metadata"]["finish_reason"] in ("stop", "length")
    assert body["metadata"]["generation_id"].startswith("gen-")
    assert body["parameters"] == {"max_tokens": 8, "temperature": 0.0, "top_p": 1.0}
    assert response.headers["x-ratelimit-limit"] == "100"


def test_greedy_is_deterministic_and_answers_arithmetic(client: TestClient, user_key: str) -> None:
    rows = _rows(20)
    correct = 0
    for row in rows:
        body = {"prompt": row["prompt"], "model_id": "demo-lm", "max_tokens": 8, "temperature": 0}
        first = client.post("/api/v1/generate", json=body, headers=bearer(user_key)).json()["text"]
        second = client.post("/api/v1/generate", json=body, headers=bearer(user_key)).json()["text"]
        assert first == second
        correct += first.strip() == row["answer"]
    assert correct >= 16, f"greedy demo-lm answered {correct}/20 correctly"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_tokens", 0),
        ("max_tokens", 2049),
        ("temperature", 2.5),
        ("top_p", 1.5),
        ("prompt", ""),
        ("prompt", "x" * 10001),
    ],
)
def test_parameter_bounds_are_400_naming_the_field(
    client: TestClient, user_key: str, field: str, value: object
) -> None:
    body = {"prompt": "What is 1+1?", "model_id": "demo-lm", field: value}
    error = assert_error(client.post("/api/v1/generate", json=body, headers=bearer(user_key)), 400, "validation_error")
    assert error["details"].startswith(f"{field}:")


def test_unknown_model_is_404(client: TestClient, user_key: str) -> None:
    response = client.post("/api/v1/generate", json={"prompt": "hi", "model_id": "gpt-9"}, headers=bearer(user_key))
    assert_error(response, 404, "model_not_found")


def test_too_long_prompt_is_400(client: TestClient, user_key: str) -> None:
    response = client.post(
        "/api/v1/generate", json={"prompt": "1+" * 400, "model_id": "demo-lm"}, headers=bearer(user_key)
    )
    assert "context length" in assert_error(response, 400, "validation_error")["message"]


def test_batch_reports_each_item_without_failing_the_others(client: TestClient, user_key: str) -> None:
    prompts = ["What is 2+2?", "1+" * 400, "What is 30+12?"]
    response = client.post(
        "/api/v1/generate/batch",
        json={"prompts": prompts, "model_id": "demo-lm", "max_tokens": 6, "temperature": 0},
        headers=bearer(user_key),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert_valid("BatchGenerateResponse", body)
    assert [r["success"] for r in body["results"]] == [True, False, True]
    assert body["results"][1]["text"] is None and "context length" in body["results"][1]["error"]
    assert [r["index"] for r in body["results"]] == [0, 1, 2]
    assert body["metrics"]["successful_generations"] == 2 and body["metrics"]["failed_generations"] == 1
    assert response.headers["x-ratelimit-limit"] == "10"  # a batch operation


def test_batch_of_eleven_is_400(client: TestClient, user_key: str) -> None:
    response = client.post(
        "/api/v1/generate/batch", json={"prompts": ["a"] * 11, "model_id": "demo-lm"}, headers=bearer(user_key)
    )
    assert_error(response, 400, "validation_error")


def test_requests_that_arrive_while_a_batch_runs_go_into_the_next_batch_together(tmp_path: Path) -> None:
    """Event-based: the first batch is held on the inference thread until 24 more requests are
    queued; when it is let go, those 24 run as one batch (the batch wait is not involved)."""
    provider = TransformersProvider(ModelConfig(id="demo-lm", path=str(DEMO_LM)), Settings(data_dir=tmp_path))
    params = SamplingParams(max_tokens=6, temperature=0.0)
    prompts = [row["prompt"] for row in _rows(25)]

    async def run() -> None:
        alone = [(await provider.generate([p], params))[0].completions[0].text for p in prompts[1:5]]
        engine = provider.loaded().engine
        held, release = threading.Event(), threading.Event()
        generate = engine._run

        def first_held(items: list[Any], merged: SamplingParams) -> list[Any]:
            if not held.is_set():
                held.set()
                release.wait()
            return generate(items, merged)

        engine._run = first_held  # type: ignore[method-assign]
        before = engine.stats.batches
        first = asyncio.create_task(provider.generate(prompts[:1], params))
        await asyncio.to_thread(held.wait)  # the first batch is on the inference thread
        rest = [asyncio.create_task(provider.generate([p], params)) for p in prompts[1:]]
        while engine.queue_depth < 24:  # each request is tokenized on its way to the queue
            await asyncio.sleep(0.01)
            assert not any(task.done() for task in rest)
        release.set()
        results = await asyncio.gather(first, *rest)
        assert engine.stats.batches - before == 2  # the held one, then the 24 together
        await provider.close()
        assert [r[0].completions[0].text for r in results[1:5]] == alone  # batching changes nothing

    asyncio.run(run())


def test_sampling_params_reach_the_model(runtime: Runtime) -> None:
    provider = runtime.models.provider("demo-lm")

    async def run() -> None:
        one = await provider.generate(["What is 45+38?"], SamplingParams(max_tokens=8, temperature=1.0, n=16, seed=7))
        again = await provider.generate(["What is 45+38?"], SamplingParams(max_tokens=8, temperature=1.0, n=16, seed=7))
        texts = [c.text for c in one[0].completions]
        assert len(texts) == 16 and texts == [c.text for c in again[0].completions]
        full = (await provider.generate(["What is 45+38?"], SamplingParams(max_tokens=8, temperature=0)))[0]
        text = full.completions[0].text
        assert len(text) >= 2
        stopped = await provider.generate(
            ["What is 45+38?"], SamplingParams(max_tokens=8, temperature=0, stop=(text[1:],))
        )
        assert stopped[0].completions[0].text == text[:1] and stopped[0].completions[0].finish_reason == "stop"
        capped = await provider.generate(["What is 45+38?"], SamplingParams(max_tokens=1, temperature=0))
        assert capped[0].completions[0].output_tokens == 1 and capped[0].completions[0].finish_reason == "length"

    asyncio.run(run())

"""What a client sends is a clear 4xx or works, never a 500 (the outside audit's items 1-7, 9-11).

Each test sends what the audit sent, through the real app, the real demo model and real SQLite
(PostgreSQL where the item is about it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, text

from tests.conftest import DEMO_LM, bearer
from tests.spec import assert_error
from winnow.api import create_app
from winnow.config import Settings
from winnow.errors import InvalidRequest
from winnow.models.base import choice_seed, engine_seed
from winnow.models.prompts import PromptEncoder
from winnow.runtime import Runtime
from winnow.sdg.stages import row_seeds

SUBMIT = "/api/v1/synthetic_data_generation/submit_job"
CHAT = "/v1/chat/completions"
QUESTION = "What is 17+25?"


def _job(prompts_path: str, **overrides: Any) -> dict[str, Any]:
    body = {
        "model": "demo-lm",
        "prompts_path": prompts_path,
        "batch_size": 4,
        "max_gen_len": 4,
        "num_generations": 2,
        "reward_model": "demo-rm",
        "filtering_function": {"name": "best_of_n", "params": {}},
    }
    return body | overrides


@pytest.fixture
def prompts(settings: Settings) -> Path:
    path = settings.data_dir / "prompts.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"What is {i}+{i}?"}) + "\n" for i in range(4)))
    return path


def _openai_error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["message"] and error["type"]
    return error


# -- 1. tiny positive temperatures ------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [1e-40, 5e-165, 1e-6])
def test_tiny_positive_temperature_samples_greedily(client: TestClient, user_key: str, temperature: float) -> None:
    """Below 1e-5 a temperature samples as greedy (as vLLM does) instead of dividing logits into inf/nan."""
    auth = bearer(user_key)
    greedy = client.post(
        "/api/v1/generate",
        json={"model_id": "demo-lm", "prompt": QUESTION, "max_tokens": 8, "temperature": 0},
        headers=auth,
    )
    assert greedy.status_code == 200, greedy.text
    one = client.post(
        "/api/v1/generate",
        json={"model_id": "demo-lm", "prompt": QUESTION, "max_tokens": 8, "temperature": temperature},
        headers=auth,
    )
    assert one.status_code == 200, one.text
    assert one.json()["text"] == greedy.json()["text"]
    batch = client.post(
        "/api/v1/generate/batch",
        json={
            "model_id": "demo-lm",
            "prompts": [QUESTION, "What is 8+9?"],
            "max_tokens": 8,
            "temperature": temperature,
        },
        headers=auth,
    )
    assert batch.status_code == 200, batch.text
    assert all(r["success"] for r in batch.json()["results"])
    chat = client.post(
        CHAT,
        json={
            "model": "demo-lm",
            "messages": [{"role": "user", "content": QUESTION}],
            "temperature": temperature,
            "max_tokens": 8,
        },
        headers=auth,
    )
    assert chat.status_code == 200, chat.text
    assert chat.json()["choices"][0]["message"]["content"] == greedy.json()["text"]


# -- 2. lone UTF-16 surrogates ----------------------------------------------------------------------
LONE_SURROGATE = b"What is \\ud800 1+1?"


@pytest.mark.parametrize("stream", [False, True])
def test_lone_surrogate_in_chat_is_400(client: TestClient, user_key: str, stream: bool) -> None:
    body = b'{"model": "demo-lm", "stream": %s, "messages": [{"role": "user", "content": "%s"}]}' % (
        b"true" if stream else b"false",
        LONE_SURROGATE,
    )
    response = client.post(CHAT, content=body, headers={**bearer(user_key), "content-type": "application/json"})
    error = _openai_error(response, 400)
    assert "surrogate" in error["message"]


def test_lone_surrogate_in_batch_is_400(client: TestClient, user_key: str) -> None:
    body = b'{"model_id": "demo-lm", "prompts": ["What is 1+1?", "%s"]}' % LONE_SURROGATE
    response = client.post(
        "/api/v1/generate/batch", content=body, headers={**bearer(user_key), "content-type": "application/json"}
    )
    details = assert_error(response, 400, "validation_error")["details"]
    assert "invalid JSON" in details and "surrogate" in details


def test_prompts_file_with_lone_surrogate_is_refused_at_upload(client: TestClient, user_key: str) -> None:
    content = b'{"id": "a", "prompt": "What is 1+1?"}\n{"id": "b", "prompt": "%s"}\n' % LONE_SURROGATE
    response = client.post(
        "/api/v1/files", files={"file": ("p.jsonl", content, "application/jsonl")}, headers=bearer(user_key)
    )
    details = assert_error(response, 400, "validation_error")["details"]
    assert details.startswith("line 2: invalid JSON") and "surrogate" in details


# -- 3. NUL in a path ---------------------------------------------------------------------------------
def test_nul_in_client_paths_is_400(client: TestClient, user_key: str) -> None:
    response = client.post(SUBMIT, json=_job("prompts\x00.jsonl"), headers=bearer(user_key))
    assert "NUL" in assert_error(response, 400, "validation_error")["message"]
    evaluation = {
        "dataset_path": "/etc/\x00passwd",
        "templates": [{"name": "plain", "template": "{prompt}"}],
        "models": ["demo-lm"],
        "scoring_function": "exact_match",
    }
    response = client.post("/api/v1/evaluations", json=evaluation, headers=bearer(user_key))
    assert "NUL" in assert_error(response, 400, "validation_error")["message"]


# -- 4. seeds ------------------------------------------------------------------------------------------
BIG_SEEDS = (1_733_150_000_000_000, 2**63 - 1, 2**64, 10**30)


def test_every_accepted_seed_derives_engine_seeds_torch_takes() -> None:
    import torch

    for seed in (0, *BIG_SEEDS):
        for index in (0, 1, 10_000):
            for derived in (*row_seeds(seed, [(f"row-{index}",)]), choice_seed(seed, index)):
                assert derived is not None and 0 <= derived < 2**63
                torch.manual_seed(derived)
            assert 0 <= engine_seed(seed, index) < 2**63
    assert choice_seed(7, 0) == 7  # a seed below 2**63 is its first choice's own
    assert engine_seed(-5) == 2**63 - 5


@pytest.mark.parametrize(("seed", "status"), [*((s, 200) for s in BIG_SEEDS), (-1, 400), (1.5, 400)])
def test_submit_job_takes_any_non_negative_integer_seed(
    client: TestClient, user_key: str, prompts: Path, seed: int, status: int
) -> None:
    response = client.post(SUBMIT, json=_job(str(prompts), seed=seed, dry_run=True), headers=bearer(user_key))
    assert response.status_code == status, response.text
    if status == 400:
        assert assert_error(response, 400, "validation_error")["details"].startswith("seed:")


def test_seeded_job_with_a_timestamp_seed_runs(settings: Settings, prompts: Path) -> None:
    """The audit's failing case end to end: a microsecond-timestamp seed through a whole in-process job."""
    import asyncio

    from winnow.schemas.sdg import SubmitJobRequest
    from winnow.sdg.reward import open_registries
    from winnow.sdg.runner import LocalRunner
    from winnow.sdg.service import build_plan, check_spec
    from winnow.sdg.workfiles import FileCheckpoint

    spec = SubmitJobRequest.model_validate(_job(str(prompts), seed=1_733_150_000_000_000, temperature=1.0))
    output, work = settings.data_dir / "out.jsonl", settings.data_dir / "work"

    async def go() -> dict[str, Any]:
        async with open_registries(settings) as (models, rewards):
            plan = build_plan(spec, check_spec(spec, settings, models, rewards), models, rewards)
            return await LocalRunner(plan, work, output, FileCheckpoint(work / "checkpoint.json")).run()

    summary = asyncio.run(go())
    assert summary["counts"]["responses_generated"] == 8
    assert len(output.read_text().splitlines()) == 4  # best of 2 for each of 4 prompts


@pytest.mark.parametrize("seed", [*BIG_SEEDS, -(2**63)])
def test_chat_takes_any_integer_seed(client: TestClient, user_key: str, seed: int) -> None:
    body = {
        "model": "demo-lm",
        "messages": [{"role": "user", "content": QUESTION}],
        "temperature": 1.0,
        "seed": seed,
        "max_tokens": 4,
    }
    first = client.post(CHAT, json=body, headers=bearer(user_key))
    assert first.status_code == 200, first.text
    again = client.post(CHAT, json=body, headers=bearer(user_key))
    assert again.json()["choices"][0]["message"] == first.json()["choices"][0]["message"]


# -- 5. a database connection dropped mid-request ------------------------------------------------------
def test_dropped_postgresql_connection_is_503_then_recovers(postgres_url: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", workers=0, database_url=postgres_url)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        key = runtime.keys.create("pg-user").key
        assert client.get("/api/v1/usage", headers=bearer(key)).status_code == 200
        engine = runtime.db.engine
        kills = {"left": 1}

        def kill_after_checkout(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
            """After the pool's pre-ping passed: the server drops the connection, as a restart would."""
            if kills["left"]:
                kills["left"] -= 1
                pid = dbapi_conn.info.backend_pid
                with engine.connect() as other:
                    other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
                    other.commit()

        event.listen(engine, "checkout", kill_after_checkout)
        try:
            for path in ("/api/v1/usage", "/api/v1/synthetic_data_generation/jobs"):
                kills["left"] = 1
                dropped = client.get(path, headers=bearer(key))
                assert dropped.status_code == 503, dropped.text
                assert dropped.headers["Retry-After"] == "1"
                assert assert_error(dropped, 503, "service_unavailable")
                assert client.get(path, headers=bearer(key)).status_code == 200  # a fresh connection
        finally:
            event.remove(engine, "checkout", kill_after_checkout)


# -- 6, 7. unknown fields and strict types -------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (SUBMIT, {"num_generation": 4}, "num_generation"),
        ("/api/v1/generate", {"model_id": "demo-lm", "prompt": "hi", "max_token": 3}, "max_token"),
        ("/api/v1/generate/batch", {"model_id": "demo-lm", "prompts": ["hi"], "temprature": 0}, "temprature"),
        ("/api/v1/feedback", {"generation_id": "gen-1", "rating": "up", "coment": "x"}, "coment"),
    ],
)
def test_unknown_fields_are_refused_by_name(
    client: TestClient, user_key: str, prompts: Path, path: str, body: dict[str, Any], field: str
) -> None:
    if path == SUBMIT:
        body = _job(str(prompts), **body)
    details = assert_error(client.post(path, json=body, headers=bearer(user_key)), 400, "validation_error")["details"]
    assert f"{field}: Extra inputs are not permitted" in details


def test_unknown_fields_in_nested_bodies_are_refused(client: TestClient, admin_key: str, prompts: Path) -> None:
    job = _job(str(prompts), filtering_function={"name": "best_of_n", "parms": {}})
    details = assert_error(client.post(SUBMIT, json=job, headers=bearer(admin_key)), 400)["details"]
    assert "filtering_function.parms" in details
    key = {"name": "k1", "budget": {"usd": 1, "perod": "day"}}
    details = assert_error(client.post("/api/v1/keys", json=key, headers=bearer(admin_key)), 400)["details"]
    assert "budget.perod" in details


@pytest.mark.parametrize(
    ("path", "field", "value"),
    [
        ("/api/v1/generate", "max_tokens", "3"),
        ("/api/v1/generate", "temperature", "0"),
        ("/api/v1/generate", "max_tokens", True),
        ("/api/v1/generate", "max_tokens", 3.5),
        (SUBMIT, "batch_size", "16"),
        (SUBMIT, "num_generations", "2"),
        (SUBMIT, "top_p", "1"),
        (SUBMIT, "seed", "7"),
        (CHAT, "max_tokens", "3"),
        (CHAT, "n", "2"),
    ],
)
def test_numbers_are_never_made_from_strings(
    client: TestClient, user_key: str, prompts: Path, path: str, field: str, value: Any
) -> None:
    if path == SUBMIT:
        body = _job(str(prompts), dry_run=True)
    elif path == CHAT:
        body = {"model": "demo-lm", "messages": [{"role": "user", "content": QUESTION}]}
    else:
        body = {"model_id": "demo-lm", "prompt": QUESTION}
    response = client.post(path, json=body | {field: value}, headers=bearer(user_key))
    assert response.status_code == 400, response.text
    payload = response.json()
    assert field in (payload["error"]["message"] if path == CHAT else payload["details"])


def test_integral_floats_are_integers(client: TestClient, user_key: str, prompts: Path) -> None:
    """JSON has one number type: 4.0 is the integer 4 (JSON Schema says so too)."""
    response = client.post(
        "/api/v1/generate",
        json={"model_id": "demo-lm", "prompt": QUESTION, "max_tokens": 4.0, "temperature": 0},
        headers=bearer(user_key),
    )
    assert response.status_code == 200, response.text
    assert response.json()["parameters"]["max_tokens"] == 4
    response = client.post(SUBMIT, json=_job(str(prompts), batch_size=2.0, dry_run=True), headers=bearer(user_key))
    assert response.status_code == 200, response.text
    assert response.json()["params"]["batch_size"] == 2


# -- 9, 10. prompt sizes --------------------------------------------------------------------------------
def test_batch_prompts_have_the_single_prompt_cap(client: TestClient, user_key: str) -> None:
    too_long = "x" * 10_001
    single = client.post("/api/v1/generate", json={"model_id": "demo-lm", "prompt": too_long}, headers=bearer(user_key))
    assert_error(single, 400, "validation_error")
    batch = client.post(
        "/api/v1/generate/batch", json={"model_id": "demo-lm", "prompts": ["hi", too_long]}, headers=bearer(user_key)
    )
    details = assert_error(batch, 400, "validation_error")["details"]
    assert details.startswith("prompts.1:") and "10000" in details


def test_huge_prompt_is_refused_without_tokenizing_it(
    client: TestClient, user_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 4 MB prompt cannot fit demo-lm's 512-token context whatever its tokens: refused from its
    length alone, so it never occupies the tokenizer (nor the model's queue other keys wait in)."""
    tokenized: list[int] = []
    original = PromptEncoder.encode

    def encode(self: PromptEncoder, texts: list[str], raw: bool = False) -> list[list[int]]:
        tokenized.extend(len(t) for t in texts)
        return original(self, texts, raw)

    monkeypatch.setattr(PromptEncoder, "encode", encode)
    huge = "What is 1+1? " * 320_000  # 4.2 MB
    for stream in (False, True):
        body = {"model": "demo-lm", "stream": stream, "messages": [{"role": "user", "content": huge}]}
        error = _openai_error(client.post(CHAT, json=body, headers=bearer(user_key)), 400)
        assert "context length" in error["message"]
    ok = client.post(
        CHAT, json={"model": "demo-lm", "messages": [{"role": "user", "content": QUESTION}]}, headers=bearer(user_key)
    )
    assert ok.status_code == 200
    assert tokenized and max(tokenized) < 10_000


def test_large_prompts_are_tokenized_before_the_model_queue(settings: Settings) -> None:
    """A prompt over INLINE_ENCODE_CHARS that may fit is tokenized on a thread of its own before it is
    queued: the model's thread, which every caller's batch waits for, only checks it."""
    import asyncio

    from winnow.config import ModelConfig
    from winnow.models.base import SamplingParams
    from winnow.models.prompts import INLINE_ENCODE_CHARS, PromptRequest
    from winnow.models.providers.transformers import TransformersProvider

    config = ModelConfig(id="long-lm", provider="transformers", path=str(DEMO_LM), context_length=8192)
    provider = TransformersProvider(config, settings)
    large = "1" * (INLINE_ENCODE_CHARS + 1)  # may fit 8192 tokens by its length; is over 16385 tokens

    async def go() -> tuple[list[PromptRequest], Any]:
        model = await provider._model()
        requests = [PromptRequest(QUESTION, 4, 1, ()), PromptRequest(large, 4, 1, ())]
        encoded = await model.prompts.pre_encode(requests)
        results = await provider.generate([QUESTION, large], SamplingParams(4, 0.0))
        await provider.close()
        return encoded, results

    encoded, results = asyncio.run(go())
    assert encoded[0].input_ids is None  # small prompts are tokenized with the batch
    assert encoded[1].input_ids is not None and len(encoded[1].input_ids) > 8192  # the large one before it
    assert results[0].error is None
    assert isinstance(results[1].error, InvalidRequest)
    assert f"{len(encoded[1].input_ids)} prompt tokens" in str(results[1].error.details)


# -- 11. job outputs and work folders are owned ---------------------------------------------------------
def test_a_key_cannot_read_another_keys_job_files(client: TestClient, runtime: Runtime, prompts: Path) -> None:
    alice, bob = runtime.keys.create("alice").key, runtime.keys.create("bob").key
    queued = client.post(SUBMIT, json=_job(str(prompts)), headers=bearer(alice))
    assert queued.status_code == 200, queued.text
    job_dir = runtime.settings.data_dir / "jobs" / queued.json()["job_id"]
    job_dir.mkdir(parents=True, exist_ok=True)
    output = job_dir / "output.jsonl"
    output.write_text(prompts.read_text())  # whatever the file holds
    for who, path in (
        (bob, output),
        (bob, job_dir / "no-such-file.jsonl"),
        (bob, runtime.settings.data_dir / "jobs" / "job-0" / "x"),
    ):
        refused = assert_error(client.post(SUBMIT, json=_job(str(path)), headers=bearer(who)), 400)
        assert refused["message"] == "prompts_path names a file this key may not read"
        assert "row" not in refused["details"] and "line" not in refused["details"]
    assert client.post(SUBMIT, json=_job(str(output), dry_run=True), headers=bearer(alice)).status_code == 200
    for path in (runtime.settings.data_dir / "winnow.db", runtime.settings.data_dir):
        refused = assert_error(client.post(SUBMIT, json=_job(str(path)), headers=bearer(alice)), 400)
        assert refused["message"] == "prompts_path names a file this key may not read"

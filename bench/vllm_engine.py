"""The vLLM provider against ``vllm.LLM.generate`` alone, on the same prompts, in one run.

  (a) bare        - one ``vllm.LLM.generate`` over every prompt (token ids, n samples each)
  (b) winnow llm  - ``VLLMProvider`` with ``engine: llm``: the same prompts as one call, and as
                    concurrent chunks of ``--chunk`` prompts (how a job's chunks arrive)
  (c) winnow async - ``VLLMProvider`` with ``engine: async`` (AsyncLLMEngine), both ways too

Winnow's times include what it adds: chat templating, tokenization, result conversion. Every run
uses the same per-prompt seeds, so all of them must produce the same texts; the script checks it.
Prints output tokens/s and each ratio to (a). Engines are started one after the other.

    python bench/vllm_engine.py                          # demo-lm widened to 32-wide heads, 500 x 4
    python bench/vllm_engine.py --model /models/Llama-3.1-8B-Instruct --max-tokens 256 \\
        --engine-args '{"gpu_memory_utilization": 0.85}'
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def widened_demo(out: Path) -> Path:
    spec = importlib.util.spec_from_file_location("widen_heads", ROOT / "examples" / "widen_heads.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path: Path = module.widen_heads(ROOT / "examples" / "models" / "demo-lm", out / "demo-lm-h32", 32)
    return path


def best_of(repeat: int, run: Any) -> tuple[list[list[str]], int, float]:
    runs = [run() for _ in range(repeat)]
    return min(runs, key=lambda r: r[2])


def bare(
    args: argparse.Namespace, engine_args: dict[str, Any], prompts: list[str]
) -> tuple[list[list[str]], int, float]:
    import vllm

    from winnow.config import ModelConfig
    from winnow.models.prompts import PromptEncoder

    llm = vllm.LLM(**engine_args)
    encoder = PromptEncoder(
        engine_args["model"], ModelConfig(id="bare"), int(llm.llm_engine.model_config.max_model_len)
    )
    ids = encoder.encode([encoder.render(p) for p in prompts])  # outside the timing: the bare call's input
    params = [
        vllm.SamplingParams(n=args.n, max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed + i)
        for i in range(len(prompts))
    ]
    requests = [{"prompt_token_ids": x} for x in ids]
    llm.generate(requests[:8], params[:8], use_tqdm=False)  # warm-up

    def run() -> tuple[list[list[str]], int, float]:
        started = time.perf_counter()
        outputs = llm.generate(requests, params, use_tqdm=False)
        elapsed = time.perf_counter() - started
        texts = [[c.text for c in sorted(o.outputs, key=lambda c: c.index)] for o in outputs]
        return texts, sum(len(c.token_ids) for o in outputs for c in o.outputs), elapsed

    result = best_of(args.repeat, run)
    llm.llm_engine.engine_core.shutdown()
    gc.collect()
    return result


def winnow(
    args: argparse.Namespace, engine_args: dict[str, Any], prompts: list[str], engine: str
) -> dict[str, tuple[list[list[str]], int, float]]:
    from winnow.config import ModelConfig, Settings
    from winnow.models.base import SamplingParams
    from winnow.models.providers.vllm import VLLMProvider

    config = ModelConfig(
        id=f"bench-{engine}",
        provider="vllm",
        path=engine_args["model"],
        options={
            "engine": engine,
            "engine_args": {k: v for k, v in engine_args.items() if k not in ("model", "tokenizer")},
        },
    )
    provider = VLLMProvider(config, Settings(data_dir=Path(tempfile.mkdtemp()), workers=0))
    params = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, n=args.n, seed=args.seed)

    async def main() -> dict[str, tuple[list[list[str]], int, float]]:
        await provider.warm()
        await provider.generate(prompts[:8], params)  # warm-up

        async def once(chunked: bool) -> tuple[list[list[str]], int, float]:
            started = time.perf_counter()
            if chunked:
                # each chunk seeded as if its prompts were numbered from the start of the list
                parts = [
                    provider.generate(
                        prompts[i : i + args.chunk],
                        SamplingParams(
                            max_tokens=args.max_tokens, temperature=args.temperature, n=args.n, seed=args.seed + i
                        ),
                    )
                    for i in range(0, len(prompts), args.chunk)
                ]
                results = [r for part in await asyncio.gather(*parts) for r in part]
            else:
                results = await provider.generate(prompts, params)
            elapsed = time.perf_counter() - started
            return [[c.text for c in r.completions] for r in results], sum(r.output_tokens for r in results), elapsed

        out = {}
        for chunked in (False, True):
            runs = [await once(chunked) for _ in range(args.repeat)]
            out["chunks" if chunked else "one call"] = min(runs, key=lambda r: r[2])
        await provider.close()
        return out

    try:
        import uvloop  # the event loop ``winnow serve`` runs on (uvicorn[standard])

        result = uvloop.run(main())
    except ImportError:
        result = asyncio.run(main())
    gc.collect()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a local model directory (default: demo-lm with 32-wide heads)")
    parser.add_argument("--prompts", type=int, default=500)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--engine-args", default="{}", help="JSON: extra vllm engine arguments")
    args = parser.parse_args()

    import vllm
    from vllm.platforms import current_platform

    model = args.model or widened_demo(Path(tempfile.mkdtemp()))
    engine_args: dict[str, Any] = {"model": str(model), "tokenizer": str(model), "seed": 0}
    if current_platform.is_cpu():
        engine_args.update(enforce_eager=True, kv_cache_memory_bytes=512 * 2**20)
    engine_args.update(json.loads(args.engine_args))
    rows = [json.loads(line) for line in (ROOT / "examples" / "prompts" / "arithmetic.jsonl").read_text().splitlines()]
    prompts = [rows[i % len(rows)]["prompt"] for i in range(args.prompts)]

    print(f"vllm {vllm.__version__} on {current_platform.device_name}; model {model}")
    print(
        f"{args.prompts} prompts x n={args.n}, max_tokens={args.max_tokens}, T={args.temperature}, best of {args.repeat}"
    )
    base_texts, base_tokens, base_s = bare(args, engine_args, prompts)
    base_rate = base_tokens / base_s
    print(f"{'bare vllm.LLM.generate':32s} {base_tokens:7d} tok {base_s:7.3f} s {base_rate:10.0f} tok/s   1.00x")
    for engine in ("llm", "async"):
        for how, (texts, tokens, seconds) in winnow(args, engine_args, prompts, engine).items():
            same = "same texts" if texts == base_texts else "TEXTS DIFFER"
            rate = tokens / seconds
            label = f"winnow engine={engine} ({how})"
            print(f"{label:32s} {tokens:7d} tok {seconds:7.3f} s {rate:10.0f} tok/s {rate / base_rate:6.2f}x  {same}")


if __name__ == "__main__":
    main()

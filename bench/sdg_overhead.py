"""SDG pipeline overhead and memory.

1. Wall time of a real job (demo-lm x demo-rm, N prompts x 4) divided by the time of the same
   work done bare: the provider's generate calls alone plus the reward model's batched forwards
   alone, chunk by chunk, in the same run. Target <= 1.05.
2. Peak RSS of a 10k- and a 100k-prompt job with a cheap generator and scorer (each in its own
   process), so that the pipeline's own memory shows. Target: ratio <= 1.2 (bounded by a chunk).

    python bench/sdg_overhead.py [--prompts 10000] [--skip-memory]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from winnow.config import ModelConfig, RewardModelConfig, Settings  # noqa: E402
from winnow.models.base import ChatMessage, Completion, GenerationResult, Prompt, Provider, SamplingParams  # noqa: E402
from winnow.models.registry import ModelRegistry  # noqa: E402
from winnow.schemas.sdg import FilteringFunction, SubmitJobRequest  # noqa: E402
from winnow.sdg.filters import split_filter  # noqa: E402
from winnow.sdg.inputs import read_rows, validate_file  # noqa: E402
from winnow.sdg.reward import RewardModel, RewardModelRegistry  # noqa: E402
from winnow.sdg.rows import Candidate  # noqa: E402
from winnow.sdg.runner import JobPlan, LocalRunner  # noqa: E402
from winnow.sdg.scoring import resolve_scoring  # noqa: E402
from winnow.sdg.service import build_plan, check_spec  # noqa: E402
from winnow.sdg.workfiles import FileCheckpoint  # noqa: E402


def make_prompts(path: Path, count: int) -> None:
    with path.open("w") as out:
        for i in range(count):
            a, b = (i * 37) % 100, (i * 53 + 11) % 100
            out.write(json.dumps({"id": f"p{i}", "prompt": f"What is {a}+{b}?", "answer": str(a + b)}) + "\n")


def spec_for(prompts: Path, n: int, batch: int) -> SubmitJobRequest:
    return SubmitJobRequest(
        model="demo-lm",
        prompts_path=str(prompts),
        batch_size=batch,
        temperature=1.0,
        max_gen_len=8,
        num_generations=n,
        reward_model="demo-rm",
        scoring_function="raw",
        filtering_function=FilteringFunction(name="best_of_n"),
        seed=0,
    )


async def overhead(prompts: Path, n: int, batch: int, tmp: Path) -> None:
    settings = Settings(data_dir=tmp / "data", workers=0, data_roots=[tmp])
    models = ModelRegistry(settings)
    rewards = RewardModelRegistry(settings, models)
    spec = spec_for(prompts, n, batch)
    plan = build_plan(spec, check_spec(spec, settings, models, rewards), models, rewards)
    reward = rewards.get("demo-rm")
    # warm both models up
    await plan.provider.generate(["What is 1+1?"], SamplingParams(max_tokens=4))
    await reward.score([Candidate(next(read_rows(prompts)), 0, "2", "end_of_turn")])

    started = time.perf_counter()
    await LocalRunner(plan, tmp / "work", tmp / "out.jsonl", FileCheckpoint(tmp / "work" / "ckpt.json")).run()
    pipeline = time.perf_counter() - started

    gen_s = score_s = 0.0
    rows = read_rows(prompts)
    chunk_index = 0
    while chunk := [r for _, r in zip(range(batch), rows, strict=False)]:
        params = SamplingParams(max_tokens=8, temperature=1.0, n=n, seed=chunk_index)
        messages: list[Prompt] = [[ChatMessage(m["role"], m["content"]) for m in r.messages] for r in chunk]
        t0 = time.perf_counter()
        results = await plan.provider.generate(messages, params)
        t1 = time.perf_counter()
        texts = [
            reward.render(Candidate(r, i, c.text, "end_of_turn"))  # type: ignore[attr-defined]
            for r, res in zip(chunk, results, strict=True)
            for i, c in enumerate(res.completions)
        ]
        t2 = time.perf_counter()
        reward.score_texts(texts)  # type: ignore[attr-defined]
        t3 = time.perf_counter()
        gen_s += t1 - t0
        score_s += (t3 - t2) + (t2 - t1)
        chunk_index += 1
    await rewards.close()
    await models.close()
    bare = gen_s + score_s
    print(f"pipeline wall          {pipeline:8.2f} s")
    print(f"bare generate          {gen_s:8.2f} s")
    print(f"bare reward forwards   {score_s:8.2f} s")
    print(f"pipeline / bare        {pipeline / bare:8.3f}   (target <= 1.05)")


class EchoProvider(Provider):
    """A generator that costs nothing, so the pipeline's own memory shows."""

    name = "echo"

    async def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[GenerationResult]:
        return [GenerationResult([Completion(f"answer {j}", "stop", 2) for j in range(params.n)], 10) for _ in prompts]

    async def available(self) -> bool:
        return True


class LengthReward(RewardModel):
    name = "length"

    async def score(self, candidates: Sequence[Candidate]) -> list[float]:
        return [float(len(c.text) + c.index) for c in candidates]


def memory_child(count: int, tmp: Path) -> None:
    prompts = tmp / f"p{count}.jsonl"
    make_prompts(prompts, count)
    settings = Settings(data_dir=tmp / "data", workers=0, models=[], reward_models=[])
    spec = spec_for(prompts, 4, 256).model_copy(
        update={"filtering_function": FilteringFunction(name="top_p", params={"p": 0.5})}
    )
    scoring, arg = resolve_scoring("raw")
    chunk_filter, global_filter = split_filter(spec)
    plan = JobPlan(
        spec=spec,
        prompts=prompts,
        prompts_total=validate_file(prompts).rows,
        provider=EchoProvider(ModelConfig(id="echo", provider="echo"), settings),
        reward=LengthReward(RewardModelConfig(id="len", provider="length"), settings, ModelRegistry(settings)),
        scoring=scoring,
        scoring_arg=arg,
        chunk_filter=chunk_filter,
        global_filter=global_filter,
    )
    work = tmp / f"work{count}"
    started = time.perf_counter()
    asyncio.run(LocalRunner(plan, work, tmp / f"out{count}.jsonl", FileCheckpoint(work / "ckpt.json")).run())
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"prompts": count, "peak_rss_mb": rss_mb, "seconds": time.perf_counter() - started}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=10_000)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="winnow-overhead-"))
    if args.memory_child:
        memory_child(args.memory_child, tmp)
        return
    prompts = tmp / "prompts.jsonl"
    make_prompts(prompts, args.prompts)
    print(f"# {args.prompts} prompts x {args.n}, chunks of {args.batch_size}, demo-lm + demo-rm, best_of_n")
    asyncio.run(overhead(prompts, args.n, args.batch_size, tmp))
    if args.skip_memory:
        return
    print("\n# peak RSS with a free generator and scorer, global top_p filter (spill + memmap)")
    peaks = {}
    for count in (10_000, 100_000):
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(count)], capture_output=True, text=True, check=True
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        peaks[count] = result["peak_rss_mb"]
        print(f"{count:>7} prompts: peak RSS {result['peak_rss_mb']:7.1f} MB in {result['seconds']:6.1f} s")
    print(f"100k / 10k peak RSS     {peaks[100_000] / peaks[10_000]:8.3f}   (target <= 1.2)")


if __name__ == "__main__":
    main()

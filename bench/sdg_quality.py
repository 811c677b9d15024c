"""What filtering buys: exact-match accuracy of raw samples vs the rows SDG keeps.

Runs three real jobs (in-process, the same runner the workers use) over 200 demo prompts x 8
generations at temperature 1.0 and prints the accuracy of
  (a) every sampled response (the demo model's own rate),
  (b) the rows kept by best-of-n with the demo-rm reward model,
  (c) the rows kept by the exact_match verifier (threshold 1.0),
  (d) the best-of-n job's ``preference`` output (best vs worst response of each prompt by demo-rm,
      default min_margin): the share of pairs whose chosen is correct and rejected wrong.
Targets: (a) ~ the demo model's rate, (b) >= 97%, (c) 100%, (d) >= 95%.

    python bench/sdg_quality.py [--prompts 200] [--n 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from winnow.config import Settings  # noqa: E402
from winnow.schemas.sdg import FilteringFunction, SubmitJobRequest  # noqa: E402
from winnow.sdg.outputs import preference_path  # noqa: E402
from winnow.sdg.reward import open_registries  # noqa: E402
from winnow.sdg.runner import LocalRunner  # noqa: E402
from winnow.sdg.service import build_plan, check_spec  # noqa: E402
from winnow.sdg.workfiles import FileCheckpoint  # noqa: E402


async def run_job(settings: Settings, spec: SubmitJobRequest, work: Path) -> Path:
    async with open_registries(settings) as (models, rewards):
        plan = build_plan(spec, check_spec(spec, settings, models, rewards), models, rewards)
        output = work / "out.jsonl"
        await LocalRunner(plan, work, output, FileCheckpoint(work / "checkpoint.json")).run()
        return output


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="winnow-quality-"))
    source = ROOT / "examples/prompts/arithmetic.jsonl"
    lines = source.read_text().splitlines()[: args.prompts]
    prompts = tmp / "prompts.jsonl"
    prompts.write_text("\n".join(lines) + "\n")
    answers = {json.loads(line)["id"]: json.loads(line)["answer"] for line in lines}
    settings = Settings(data_dir=tmp / "data", workers=0, data_roots=[tmp])

    def spec(scoring: str, name: str, params: dict[str, Any], outputs: tuple[str, ...] = ()) -> SubmitJobRequest:
        return SubmitJobRequest.model_validate(
            dict(
                model="demo-lm",
                prompts_path=str(prompts),
                batch_size=50,
                temperature=1.0,
                top_p=1.0,
                max_gen_len=8,
                num_generations=args.n,
                reward_model="demo-rm",
                scoring_function=scoring,
                filtering_function=FilteringFunction(name=name, params=params),
                seed=args.seed,
                outputs=list(outputs),
            )
        )

    def accuracy(rows: list[dict[str, Any]]) -> str:
        right = sum(r["response"]["content"].strip() == answers[r["id"]] for r in rows)
        return f"{right / len(rows):7.2%}  ({right}/{len(rows)} rows, {len({r['id'] for r in rows})} prompts)"

    print(f"# {args.prompts} prompts x {args.n} generations, temperature 1.0, seed {args.seed}")
    jobs = {
        "raw samples (filter none)": spec("raw", "none", {}),
        "best-of-n with demo-rm": spec("raw", "best_of_n", {}, ("preference",)),
        "exact_match verifier": spec("exact_match", "threshold", {"min_score": 1.0}),
    }
    for i, (label, job) in enumerate(jobs.items()):
        started = time.perf_counter()
        output = asyncio.run(run_job(settings, job, tmp / f"job{i}"))
        print(f"{label:<28} accuracy {accuracy(read(output))}   {time.perf_counter() - started:5.1f} s")
        if job.outputs:
            pairs = read(preference_path(output))
            good = sum(p["chosen"].strip() == answers[p["id"]] != p["rejected"].strip() for p in pairs)
            share = good / len(pairs) if pairs else 0.0
            print(
                f"{'preference pairs':<28} chosen right, rejected wrong {share:7.2%}  ({good}/{len(pairs)} pairs, "
                f"mean margin {sum(p['margin'] for p in pairs) / max(1, len(pairs)):.2f})"
            )


if __name__ == "__main__":
    main()

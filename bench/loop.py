"""The loop, closed and measured: does training on the data Winnow made improve the model?

On the shipped demo, offline, through a real ``winnow serve`` (one worker process) and the Python SDK:

1. upload training prompts (additions that are NOT among the 500 held-out demo prompts);
2. run an SDG job: demo-lm samples ``--n`` answers a prompt at temperature 1.0, demo-rm scores them,
   best-of-n keeps one a prompt, and the job also writes its preference pairs;
3. fine-tune demo-lm on the job's kept rows (SFT, LoRA: rejection-sampling fine-tuning), and on its
   preference pairs: DPO, and DPO with the chosen answers' likelihood added (RPO, ``sft_weight`` 1);
4. evaluate demo-lm and both new models with Winnow's evaluation API on the held-out prompts at
   temperature 1.0 (exact match against the answer), with 95% intervals.

Target (issue #17): held-out sampled accuracy up by >= 10 points after SFT. Prints a table and writes
bench/results/loop.json.

    python bench/loop.py [--train-prompts 1000] [--n 8] [--eval-rows 500]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from winnow.client import Winnow  # noqa: E402

HELD_OUT = ROOT / "examples/prompts/arithmetic.jsonl"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def training_prompts(path: Path, count: int, seed: int) -> Path:
    """``count`` additions a+b (0..99) outside the held-out set, in a seeded order."""
    import random

    held = {json.loads(line)["prompt"] for line in HELD_OUT.read_text().splitlines()}
    pairs = [(a, b) for a in range(100) for b in range(100) if f"What is {a}+{b}?" not in held]
    random.Random(seed).shuffle(pairs)
    with path.open("w") as out:
        for i, (a, b) in enumerate(pairs[:count]):
            out.write(json.dumps({"id": f"train-{i}", "prompt": f"What is {a}+{b}?", "answer": str(a + b)}) + "\n")
    return path


def start_server(data: Path, python: str) -> tuple[subprocess.Popen[bytes], str, str]:
    env = {**os.environ, "WINNOW_DATA_DIR": str(data), "WINNOW_WORKERS": "1"}
    env.pop("WINNOW_CONFIG", None)
    key = subprocess.run(
        [python, "-m", "winnow", "keys", "create", "bench", "--admin"], env=env, capture_output=True, text=True
    ).stdout.split()[-1]
    port = free_port()
    log = (data.parent / "server.log").open("ab")
    proc = subprocess.Popen([python, "-m", "winnow", "serve", "--port", str(port)], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    import httpx

    for _ in range(600):
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                return proc, url, key
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"the server did not start; see {data.parent / 'server.log'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-prompts", type=int, default=1000)
    parser.add_argument("--n", type=int, default=8, help="samples a training prompt (best-of-n)")
    parser.add_argument("--eval-rows", type=int, default=500, help="held-out prompts evaluated (<= 500)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--dpo-lr", type=float, default=1e-4, help="pure DPO's learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-dpo", action="store_true")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="winnow-loop-"))
    data = tmp / "data"
    data.mkdir()
    held_out = tmp / "held_out.jsonl"
    held_out.write_text("\n".join(HELD_OUT.read_text().splitlines()[: args.eval_rows]) + "\n")
    train = training_prompts(tmp / "train_prompts.jsonl", args.train_prompts, args.seed)
    started = time.monotonic()
    proc, url, key = start_server(data, sys.executable)
    timings: dict[str, float] = {}
    try:
        with Winnow(url, key, timeout=600) as client:
            t = time.monotonic()
            prompts = client.files.upload(train)
            eval_file = client.files.upload(held_out)
            job = client.sdg.submit(
                model="demo-lm",
                prompts_path=prompts.path,
                batch_size=50,
                temperature=1.0,
                top_p=1.0,
                max_gen_len=8,
                num_generations=args.n,
                reward_model="demo-rm",
                scoring_function="raw",
                filtering_function={"name": "best_of_n", "params": {}},
                seed=args.seed,
                outputs=["preference"],
            )
            job = client.sdg.wait(job.job_id, progress=False)
            assert job.status == "completed", job
            timings["sdg_s"] = time.monotonic() - t
            kept = list(client.sdg.records(job.job_id, "rows"))
            answers = {json.loads(line)["id"]: json.loads(line)["answer"] for line in train.read_text().splitlines()}
            kept_correct = sum(r["response"]["content"].strip() == answers[r["id"]] for r in kept) / len(kept)

            hyper = {"epochs": args.epochs, "learning_rate": args.lr, "batch_size": 16, "seed": args.seed}
            t = time.monotonic()
            sft = client.fine_tuning.create(
                base_model="demo-lm", sdg_job=job.job_id, method="sft", suffix="rft", hyperparameters=hyper
            )
            sft = client.fine_tuning.wait(sft.id, progress=False)
            assert sft.status == "completed", sft
            timings["sft_s"] = time.monotonic() - t
            models = ["demo-lm", str(sft.fine_tuned_model)]
            dpo: dict[str, Any] = {}
            if not args.skip_dpo:
                # Pure DPO, and DPO with the chosen answers' likelihood added (RPO, sft_weight 1).
                for name, extra in (
                    ("dpo", {"learning_rate": args.dpo_lr}),
                    ("rpo", {"learning_rate": args.lr / 3, "sft_weight": 1.0}),
                ):
                    t = time.monotonic()
                    done = client.fine_tuning.create(
                        base_model="demo-lm",
                        sdg_job=job.job_id,
                        method="dpo",
                        suffix=name,
                        hyperparameters={**hyper, "epochs": 1, **extra},
                    )
                    done = client.fine_tuning.wait(done.id, progress=False)
                    assert done.status == "completed", done
                    timings[f"{name}_s"] = time.monotonic() - t
                    dpo[name] = done
                    models.append(str(done.fine_tuned_model))

            t = time.monotonic()
            evaluation = client.evals.create(
                name="held-out sampled accuracy",
                dataset_path=eval_file.path,
                templates=[{"name": "plain", "template": "{prompt}"}],
                models=models,
                scoring_function="exact_match",
                temperature=1.0,
                top_p=1.0,
                max_tokens=8,
                seed=args.seed,
                batch_size=100,
            )
            while (evaluation := client.evals.get(evaluation.id)).status not in ("completed", "failed", "cancelled"):
                time.sleep(1)
            assert evaluation.status == "completed", evaluation
            timings["eval_s"] = time.monotonic() - t
    finally:
        proc.terminate()
        proc.wait(30)
    rows = {row.model: row for row in evaluation.table or []}
    base = rows["demo-lm"]

    def line(model: str) -> dict[str, Any]:
        row = rows[model]
        return {
            "model": model,
            "accuracy": row.mean_score,
            "ci95": row.ci95,
            "rows": row.rows,
            "lift_points": None if model == "demo-lm" else 100 * ((row.mean_score or 0) - (base.mean_score or 0)),
        }

    table = [line(m) for m in models]
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "train_prompts": args.train_prompts,
        "n": args.n,
        "kept_rows": len(kept),
        "kept_rows_correct": kept_correct,
        "sft_rows": sft.training_rows,
        "dpo_pairs": dpo["dpo"].training_rows if dpo else None,
        "sft_metrics": sft.metrics,
        "dpo_hyperparameters": {name: done.hyperparameters for name, done in dpo.items()},
        "dpo_metrics": {name: done.metrics for name, done in dpo.items()},
        "held_out_rows": args.eval_rows,
        "table": table,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "total_s": round(time.monotonic() - started, 1),
    }
    out = ROOT / "bench/results/loop.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"SDG: {args.train_prompts} prompts x {args.n}, best-of-n kept {len(kept)} rows, {kept_correct:.1%} correct")
    print(f"{'model':32} {'held-out acc (T=1.0)':>22} {'95% CI':>9} {'lift':>8}")
    for row in table:
        lift = "" if row["lift_points"] is None else f"{row['lift_points']:+.1f} pt"
        print(f"{row['model']:32} {row['accuracy']:>22.1%} {'±' + format(row['ci95'], '.1%'):>9} {lift:>8}")
    print("timings (s):", result["timings_s"], "total", result["total_s"])
    sft_lift = table[1]["lift_points"]
    print(f"target: SFT lift >= 10 points: {'met' if sft_lift is not None and sft_lift >= 10 else 'NOT met'}")


if __name__ == "__main__":
    main()

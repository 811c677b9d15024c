"""Winnow's Python SDK end to end, notebook style: upload prompts, estimate a job with a dry run,
submit it, wait with a progress bar, read the rows it kept, load its preference pairs as a Hugging
Face dataset (the ``datasets`` extra), and give feedback on a row.

Start a server (``scripts/serve`` prints an admin key on first start), then:

    WINNOW_API_KEY=wn-... .venv/bin/python examples/sdk_quickstart.py

``WINNOW_URL`` defaults to http://127.0.0.1:8000.
"""

from __future__ import annotations

from pathlib import Path

from winnow.client import Winnow
from winnow.client.params import SubmitJobParams

PROMPTS = Path(__file__).parent / "prompts" / "arithmetic_small.jsonl"  # 20 "What is A+B?" prompts

with Winnow() as client:
    print("models:", [model.id for model in client.models.list().models])

    # 1. The server reads prompts from its own data dir: upload them there.
    prompts = client.files.upload(PROMPTS)
    print(f"uploaded {prompts.rows} prompts as {prompts.id}")

    # 2. The job: 4 sampled answers per prompt, scored by the demo reward model, best of 4 kept;
    #    beside the output, preference pairs (best against worst answer of each prompt) and SFT rows.
    job_args: SubmitJobParams = {
        "model": "demo-lm",
        "reward_model": "demo-rm",
        "prompts_path": prompts.path,
        "num_generations": 4,
        "temperature": 1.0,
        "max_gen_len": 8,
        "filtering_function": {"name": "best_of_n"},
        "seed": 7,
        "outputs": ["preference", "sft"],
    }
    dry = client.sdg.submit(**job_args | {"dry_run": True})
    assert dry.estimate is not None
    print(
        f"estimate: {dry.estimate.input_tokens} input tokens, at most {dry.estimate.max_output_tokens} output "
        f"tokens, at most ${dry.estimate.max_cost_usd:.4f}; fits the budget: {dry.estimate.fits_budget}"
    )
    if not dry.estimate.fits_budget:
        raise SystemExit("the job would not fit this key's budget")

    # 3. Submit, then wait: a progress bar on a terminal or in a notebook.
    job = client.sdg.submit(**job_args)
    done = client.sdg.wait(job.job_id)
    print(f"{done.job_id}: {done.status}, kept {done.counts.rows_kept} of {done.counts.responses_generated}")

    # 4. The rows, streamed (PromptResponseScore models), and the whole file saved beside.
    best = sorted(client.sdg.rows(job.job_id), key=lambda row: row.score, reverse=True)
    for row in best[:3]:
        print(f"  {row.id}: {row.prompt[-1].root.content!r} -> {row.response.root.content!r} ({row.score:.2f})")
    saved = client.sdg.download(job.job_id, Path(f"{job.job_id}.jsonl"))
    print("saved", saved)

    # 5. The preference pairs as a datasets.Dataset (prompt / chosen / rejected: what TRL's DPOTrainer takes).
    pairs = client.sdg.to_dataset(job.job_id)
    print(
        f"{pairs.num_rows} preference pairs, mean margin {client.sdg.summary(job.job_id)['preference']['mean_margin']:.2f}"
    )
    print("  first:", pairs[0]["prompt"], "chosen", pairs[0]["chosen"], "rejected", pairs[0]["rejected"])

    # 6. Say what a person thinks of a row: feedback exports become preference or SFT data.
    top = best[0]
    client.feedback.create(job_id=job.job_id, id=top.id, index=top.index, rating="up")
    print("feedback export (sft):", len(client.feedback.export("sft").rows), "rows")

"""``winnow eval run``: evaluate prompt templates x models over a dataset in this process, with a
progress bar, and print the comparison table. An interrupted run resumes where it stopped."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from winnow.cli.common import ConfigOption, err, fail, load_settings, progress_bar, resume_dir
from winnow.errors import WinnowError
from winnow.evals.plan import build_eval_plan, check_eval
from winnow.evals.runner import EvalProgress, EvalRunner
from winnow.schemas.evals import ComparisonRow, EvaluationRequest
from winnow.sdg.reward import open_registries
from winnow.sdg.runner import FileCheckpoint
from winnow.usage.prices import PriceBook

eval_app = typer.Typer(help="Prompt evaluation: templates x models over a dataset, compared.", no_args_is_help=True)


def _templates(values: list[str]) -> list[dict[str, str]]:
    """``name=text`` or just ``text`` (named t1, t2, ...)."""
    out = []
    for number, value in enumerate(values, start=1):
        name, sep, text = value.partition("=")
        if not sep or not name.replace("-", "").replace("_", "").isalnum():
            name, text = f"t{number}", value
        out.append({"name": name, "template": text.replace("\\n", "\n")})
    return out


def _spec(spec_file: Path | None, overrides: dict[str, Any]) -> EvaluationRequest:
    data: dict[str, Any] = yaml.safe_load(spec_file.read_text()) if spec_file else {}
    data.update({k: v for k, v in overrides.items() if v not in (None, [], ())})
    try:
        return EvaluationRequest.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise fail("invalid evaluation", problems) from exc


def print_table(table: list[ComparisonRow], console: Console) -> None:
    grid = Table("template", "model", "rows", "mean", "± 95%", "win rate", "p50 ms", "p95 ms", "tokens", "cost $")
    for row in table:
        grid.add_row(
            row.template,
            row.model,
            f"{row.rows}" + (f" ({row.errors} err)" if row.errors else ""),
            "-" if row.mean_score is None else f"{row.mean_score:.4f}",
            "-" if row.ci95 is None else f"{row.ci95:.4f}",
            "baseline" if row.win_rate is None else f"{row.win_rate:.1%}",
            "-" if row.latency_p50_ms is None else f"{row.latency_p50_ms:.1f}",
            "-" if row.latency_p95_ms is None else f"{row.latency_p95_ms:.1f}",
            f"{row.input_tokens + row.output_tokens}",
            f"{row.cost_usd:.6f}",
        )
    console.print(grid)


@eval_app.command("run")
def run(
    dataset: Annotated[
        Path | None, typer.Option("--dataset", "-d", help="JSONL rows (id, prompt, fields)", dir_okay=False)
    ] = None,
    template: Annotated[
        list[str] | None, typer.Option("--template", "-t", help="name=text with {field}s (repeat for several)")
    ] = None,
    model: Annotated[list[str] | None, typer.Option("--model", "-m", help="Model id (repeat for several)")] = None,
    scoring_function: Annotated[
        str | None, typer.Option("--scoring-function", "-s", help="exact_match[:field], raw, ...")
    ] = None,
    reward_model: Annotated[str | None, typer.Option("--reward-model", help="Reward model id")] = None,
    baseline: Annotated[str | None, typer.Option("--baseline", help="TEMPLATE:MODEL win rates compare with")] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens")] = None,
    temperature: Annotated[float | None, typer.Option("--temperature")] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Rows per chunk")] = None,
    spec_file: Annotated[
        Path | None, typer.Option("--spec", help="YAML/JSON evaluation body (flags override)", exists=True)
    ] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Per-row results JSONL")] = Path("eval-results.jsonl"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the table as JSON on stdout")] = False,
    restart: Annotated[bool, typer.Option("--restart", help="Discard an interrupted run of this output")] = False,
    config: ConfigOption = None,
) -> None:
    """Run an evaluation here and print the comparison table."""
    overrides: dict[str, Any] = {
        "dataset_path": str(dataset.resolve()) if dataset else None,
        "templates": _templates(template or []),
        "models": model or [],
        "scoring_function": scoring_function,
        "reward_model": reward_model,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "seed": seed,
        "batch_size": batch_size,
    }
    if baseline:
        base_template, _, base_model = baseline.partition(":")
        overrides["baseline"] = {"template": base_template, "model": base_model}
    spec = _spec(spec_file, overrides)
    path = Path(spec.dataset_path).resolve()
    settings = load_settings(config)
    settings = settings.model_copy(update={"data_roots": [path.parent]})  # a local user may read any file
    work = resume_dir(output, spec.model_dump_json(), restart)

    async def go() -> list[ComparisonRow]:
        async with open_registries(settings) as (models, rewards):
            prompts = check_eval(spec, settings, models, rewards)
            plan = build_eval_plan(spec, prompts, models, rewards, PriceBook(settings))
            with progress_bar() as bar:
                task = bar.add_task("rows", total=prompts.rows)

                def show(p: EvalProgress) -> None:
                    bar.update(task, completed=p.counts.rows_done, description=p.stage)

                checkpoint = FileCheckpoint(work / "checkpoint.json")
                return await EvalRunner(plan, work, output.resolve(), checkpoint, show).run()

    try:
        table = asyncio.run(go())
    except WinnowError as exc:
        raise fail(exc.message, exc.details) from exc
    shutil.rmtree(work, ignore_errors=True)
    if as_json:
        typer.echo(json.dumps([row.model_dump() for row in table], indent=2))
    else:
        print_table(table, Console())
    err.print(f"per-row results: {output}")

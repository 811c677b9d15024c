"""``winnow eval run``: evaluate prompt templates x models over a dataset in this process, with a
progress bar, and print the comparison table. An interrupted run resumes where it stopped."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable
from operator import attrgetter
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError
from rich import box
from rich.console import Console
from rich.table import Table

from winnow.cli.common import ConfigOption, err, fail, load_settings, progress_bar, resume_dir
from winnow.cli.styling import typer_app
from winnow.config import Settings
from winnow.errors import WinnowError
from winnow.evals.plan import build_eval_plan, check_eval
from winnow.evals.runner import EvalProgress, EvalRunner
from winnow.schemas.evals import ComparisonRow, EvaluationRequest
from winnow.sdg.reward import open_registries
from winnow.sdg.workfiles import FileCheckpoint
from winnow.usage.prices import PriceBook
from winnow.usage.service import cli_usage

eval_app = typer_app("Prompt evaluation: templates x models over a dataset, compared.")


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


def _count(value: float) -> str:
    """A count in at most 5 characters: 7, 999, 9999, 12.3k, 1.23M."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e4, "k")):
        if abs(value) >= limit:
            return f"{value / (1e3 if suffix == 'k' else limit):.3g}{suffix}"
    return f"{value:.0f}" if abs(value) >= 10 or value == int(value) else f"{value:.1f}"


def _cost(usd: float) -> str:
    return "0" if usd == 0 else f"{usd:.2g}" if usd < 10 else f"{usd:.0f}"


def print_table(table: list[ComparisonRow], console: Console) -> None:
    """The comparison, readable at 80 columns: a template or model that every row shares goes in
    the title instead of a column, names wrap, numbers are short and never cut."""
    titles = []
    columns: list[tuple[str, Callable[[ComparisonRow], str]]] = []
    for name in ("template", "model"):
        shared = {getattr(row, name) for row in table}
        if len(shared) == 1 and len(table) > 1:
            titles.append(f"{name}: {shared.pop()}")
        else:
            columns.append((name, attrgetter(name)))
    grid = Table(
        title=", ".join(titles) or None,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    for name, _ in columns:
        grid.add_column(name, overflow="fold", min_width=8)
    errors = any(row.errors for row in table)
    numbers: list[tuple[str, Callable[[ComparisonRow], str]]] = [
        ("rows", lambda r: _count(r.rows)),
        *([("err", lambda r: _count(r.errors))] if errors else []),
        ("score ±95%", _score),
        ("win", lambda r: "base" if r.baseline else "-" if r.win_rate is None else f"{r.win_rate:.1%}"),
        ("p50/p95 ms", _latency),
        ("tokens", lambda r: _count(r.input_tokens + r.output_tokens)),
        ("cost $", lambda r: _cost(r.cost_usd)),
    ]
    for name, _ in numbers:
        grid.add_column(name, justify="right", no_wrap=True, overflow="fold")
    for row in table:
        grid.add_row(*(value(row) for _, value in [*columns, *numbers]))
    console.print(grid)


def _score(row: ComparisonRow) -> str:
    score = "-" if row.mean_score is None else f"{row.mean_score:.3f}"
    return score if row.ci95 is None else f"{score}±{row.ci95:.3f}"


def _latency(row: ComparisonRow) -> str:
    if row.latency_p50_ms is None or row.latency_p95_ms is None:
        return "-"
    return f"{_count(row.latency_p50_ms)}/{_count(row.latency_p95_ms)}"


Dataset = Annotated[
    Path, typer.Option("--dataset", "-d", help="JSONL rows (id, prompt, fields)", dir_okay=False, show_default=False)
]
Templates = Annotated[
    list[str],
    typer.Option(
        "--template",
        "-t",
        help="A prompt template with {field}s, as NAME=TEXT or TEXT (repeat for several)",
        metavar="NAME=TEXT",
        show_default=False,
    ),
]
Models = Annotated[
    list[str], typer.Option("--model", "-m", help="Model id (repeat for several)", metavar="MODEL", show_default=False)
]
Scoring = Annotated[
    str | None,
    typer.Option("--scoring-function", "-s", help="exact_match[:field], raw (needs --reward-model), ... (default raw)"),
]
RewardModel = Annotated[
    str | None, typer.Option("--reward-model", help="Reward model id that scores the answers", metavar="MODEL")
]
BaselineOption = Annotated[
    str | None,
    typer.Option(
        "--baseline", help="The pair win rates compare with (default: the first pair)", metavar="TEMPLATE:MODEL"
    ),
]
MaxTokens = Annotated[int | None, typer.Option("--max-tokens", help="Most tokens per answer (default 64)")]
Temperature = Annotated[float | None, typer.Option("--temperature", help="Sampling temperature (default 0: greedy)")]
SeedOption = Annotated[int | None, typer.Option("--seed", help="Reproducible sampling")]
BatchSize = Annotated[int | None, typer.Option("--batch-size", help="Rows per chunk (and checkpoint) (default 32)")]
SpecFile = Annotated[
    Path | None,
    typer.Option("--spec", help="YAML/JSON evaluation body for the other fields (flags override)", exists=True),
]
OutputOption = Annotated[Path, typer.Option("--output", "-o", help="Per-row results JSONL")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the table as JSON on stdout")]
Restart = Annotated[bool, typer.Option("--restart", help="Discard an interrupted run of OUTPUT")]


@eval_app.command("run")
def run(  # noqa: PLR0913 (a Typer command: each parameter is one of its options)
    dataset: Dataset,
    template: Templates,
    model: Models,
    scoring_function: Scoring = None,
    reward_model: RewardModel = None,
    baseline: BaselineOption = None,
    max_tokens: MaxTokens = None,
    temperature: Temperature = None,
    seed: SeedOption = None,
    batch_size: BatchSize = None,
    spec_file: SpecFile = None,
    output: OutputOption = Path("eval-results.jsonl"),
    as_json: AsJson = False,
    restart: Restart = False,
    config: ConfigOption = None,
) -> None:
    """Run an evaluation here and print the comparison table."""
    overrides: dict[str, Any] = {
        "dataset_path": str(dataset.resolve()),
        "templates": _templates(template),
        "models": model,
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
    try:
        table = asyncio.run(_evaluate(spec, settings, work, output.resolve()))
    except WinnowError as exc:
        raise fail(exc.message, exc.details) from exc
    shutil.rmtree(work, ignore_errors=True)
    if as_json:
        typer.echo(json.dumps([row.model_dump() for row in table], indent=2))
    else:
        print_table(table, Console())
    err.print(f"per-row results: {output}")


async def _evaluate(spec: EvaluationRequest, settings: Settings, work: Path, output: Path) -> list[ComparisonRow]:
    async with open_registries(settings) as (models, rewards), cli_usage(settings) as usage:
        prompts = check_eval(spec, settings, models, rewards)
        plan = build_eval_plan(spec, prompts, models, rewards, PriceBook(settings))
        checkpoint = FileCheckpoint(work / "checkpoint.json", usage)
        plan.meters = {model: checkpoint.meter(model) for model in spec.models}  # usage rows, source cli
        with progress_bar() as bar:
            task = bar.add_task("rows", total=prompts.rows)

            def show(p: EvalProgress) -> None:
                bar.update(task, completed=p.counts.rows_done, description=p.stage)

            return await EvalRunner(plan, work, output, checkpoint, show).run()

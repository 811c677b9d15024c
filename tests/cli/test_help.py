"""``--help`` reads like a well-made Typer/Rich CLI, every parameter says what it is for, the eval
options that must be given are required by Typer, and the comparison table fits 80 columns."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from winnow.cli import app
from winnow.cli.evals import print_table
from winnow.schemas.evals import ComparisonRow

runner = CliRunner()


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _commands(sub, (*path, name))


COMMANDS = dict(_commands(typer.main.get_command(app)))


@pytest.mark.parametrize("path", list(COMMANDS), ids=lambda path: " ".join(path) or "winnow")
def test_help_reads_like_a_typer_cli(path: tuple[str, ...]) -> None:
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "``" not in text
    assert not re.findall(r"<[a-z_]+(?:\[[a-z_]+\])?>", text), text  # <bool>, <str>, <list[str]>
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    assert "{" not in usage and usage.split("Usage: ")[1].startswith(" ".join(["winnow", *path]))
    arguments = [p for p in COMMANDS[path].params if isinstance(p, typer.core.TyperArgument)]
    for argument in arguments:
        assert argument.name.upper() in usage.split()


def test_the_top_line_says_what_winnow_is() -> None:
    text = runner.invoke(app, ["--help"], env={"COLUMNS": "100"}).stdout
    assert "Winnow: one API over local and commercial LLMs, and synthetic training data." in text


@pytest.mark.parametrize("path", list(COMMANDS), ids=lambda path: " ".join(path) or "winnow")
def test_every_option_and_argument_has_help(path: tuple[str, ...]) -> None:
    undocumented = [p.name for p in COMMANDS[path].params if not (p.help or "").strip()]
    assert not undocumented, f"winnow {' '.join(path)}: no help for {undocumented}"


def test_eval_run_requires_dataset_templates_and_models(tmp_path: Path) -> None:
    dataset = tmp_path / "d.jsonl"
    dataset.write_text('{"id": "1", "prompt": "What is 1+1?", "answer": "2"}\n')
    result = runner.invoke(app, ["eval", "run", "-d", str(dataset), "-m", "demo-lm"], env={"COLUMNS": "100"})
    assert result.exit_code == 2
    assert "Missing option '--template' / '-t'." in result.output
    assert "Field required" not in result.output
    required = {p.name for p in COMMANDS[("eval", "run")].params if p.required}
    assert {"dataset", "template", "model"} <= required  # and --help marks them so


def _row(
    template: str, model: str, mean: float, ci: float, win: float | None, tokens: int, **extra: Any
) -> ComparisonRow:
    values: dict[str, Any] = {
        "template": template,
        "model": model,
        "rows": 1000,
        "errors": 0,
        "mean_score": mean,
        "std_score": 0.1,
        "ci95": ci,
        "min_score": 0.0,
        "max_score": 1.0,
        "win_rate": win,
        "baseline": win is None,  # (these rows all compared some rows: only the baseline has none)
        "wins": 0,
        "ties": 0,
        "losses": 0,
        "latency_p50_ms": 812.4,
        "latency_p95_ms": 2345.6,
        "input_tokens": tokens,
        "output_tokens": tokens // 4,
        "cost_usd": 0.001234,
    }
    return ComparisonRow.model_validate(values | extra)


TABLE = [
    _row("plain", "demo-lm", 0.625, 0.151, None, 1_200),
    _row("terse-answer-with-the-number-only", "demo-lm", 0.875, 0.031, 0.55, 987_654, errors=12),
    _row("plain", "meta-llama/Llama-3.1-8B-Instruct", 0.712, 0.044, 0.604, 45_678, cost_usd=12.345678),
    _row("terse-answer-with-the-number-only", "meta-llama/Llama-3.1-8B-Instruct", 0.934, 0.012, 0.777, 3_456_789),
]


def _render(table: list[ComparisonRow]) -> list[str]:
    console = Console(width=80, file=io.StringIO(), color_system=None)
    print_table(table, console)
    return console.file.getvalue().rstrip("\n").splitlines()  # type: ignore[attr-defined]


def test_the_comparison_table_is_readable_at_80_columns() -> None:
    lines = _render(TABLE)
    assert all(len(line) <= 80 for line in lines), lines
    assert "…" not in "\n".join(lines)
    header = next(line for line in lines if line.lstrip().startswith("template"))
    model_at = header.index("model")
    body = [line for line in lines[lines.index(header) + 1 :] if line.strip() and set(line.strip()) != {"─"}]
    # Each row starts on the line that holds its numbers; a long name wraps onto the next lines.
    starts = [i for i, line in enumerate(body) if len(line[model_at:].split()) > 1]
    assert len(starts) == len(TABLE), lines
    for row, (first, end) in zip(TABLE, zip(starts, [*starts[1:], len(body)], strict=True), strict=True):
        block = body[first:end]
        assert "".join(line[:model_at].strip() for line in block) == row.template, lines
        assert "".join(line[model_at:].split()[0] for line in block if line[model_at:].split()) == row.model, lines
        numbers = block[0][model_at:].split()[1:]
        assert f"{row.mean_score:.3f}±{row.ci95:.3f}" in numbers, lines
        assert ("base" if row.win_rate is None else f"{row.win_rate:.1%}") in numbers, lines
        assert str(row.rows) in numbers and "812/2346" in numbers, lines
    assert "12" in body[starts[1]][model_at:].split()  # the errors of the row that had some
    assert {"1500", "1.23M", "57.1k", "4.32M"} <= set("\n".join(body).split())  # tokens, compact


def test_a_shared_model_goes_in_the_title() -> None:
    lines = _render(TABLE[:2])
    assert lines[0].strip() == "model: demo-lm"
    assert "model" not in lines[1].split()
    assert "".join(line.split()[0] for line in lines[3:]) == "plain" + TABLE[1].template

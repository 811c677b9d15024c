"""In-process runs (`winnow sdg run`, `winnow eval run`) record their usage, source ``cli``, in the
configured database (by default the SQLite file in the data dir), and `winnow usage` lists it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from typer.testing import CliRunner

from tests.conftest import DEMO_PROMPTS
from winnow.cli import app
from winnow.db import Database, UsageRecord

SMALL = DEMO_PROMPTS.with_name("arithmetic_small.jsonl")  # 20 prompts


def _cli_usage(data: Path) -> tuple[int, int, int, set[str]]:
    """Rows, input and output tokens, and sources of the usage rows in the data dir's database."""
    db = Database(f"sqlite:///{data / 'winnow.db'}")
    with db.session() as session:
        rows, tokens_in, tokens_out = session.execute(
            select(func.count(), func.sum(UsageRecord.input_tokens), func.sum(UsageRecord.output_tokens))
        ).one()
        sources = set(session.scalars(select(UsageRecord.source).distinct()))
    db.dispose()
    return int(rows), int(tokens_in or 0), int(tokens_out or 0), sources


def _invoke(data: Path, *args: str) -> Any:
    result = CliRunner().invoke(app, list(args), env={"WINNOW_DATA_DIR": str(data)})
    assert result.exit_code == 0, result.output
    return result


def test_sdg_run_in_process_records_usage_with_source_cli(tmp_path: Path) -> None:
    data, output = tmp_path / "data", tmp_path / "out.jsonl"
    _invoke(
        data,
        *("sdg", "run", "--prompts", str(SMALL), "--output", str(output), "--model", "demo-lm"),
        *("--num-generations", "3", "--max-gen-len", "4", "--temperature", "1.0", "--seed", "4"),
    )
    counts = json.loads(output.with_name("out.summary.json").read_text())["counts"]
    assert _cli_usage(data) == (20, counts["input_tokens"], counts["output_tokens"], {"cli"})
    report = json.loads(_invoke(data, "usage", "--group-by", "key", "--json").stdout)
    assert [(r["group"], r["requests"]) for r in report["rows"]] == [("(cli)", 20)]


def test_eval_run_in_process_records_usage_with_source_cli(tmp_path: Path) -> None:
    data, output = tmp_path / "data", tmp_path / "eval.jsonl"
    _invoke(
        data,
        *("eval", "run", "-d", str(SMALL), "-m", "demo-lm", "-s", "exact_match", "--max-tokens", "4"),
        *("-t", "plain={prompt}", "-t", "terse=Only the number. {prompt}", "--output", str(output), "--json"),
    )
    results = [json.loads(line) for line in output.read_text().splitlines()]
    tokens_in, tokens_out = sum(r["input_tokens"] for r in results), sum(r["output_tokens"] for r in results)
    assert _cli_usage(data) == (40, tokens_in, tokens_out, {"cli"})  # 20 rows x 2 templates

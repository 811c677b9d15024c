"""Training sets beside a job's output (``outputs: ["preference", "sft"]``, ``--also``) and their
exports to Parquet, JSONL and Hugging Face datasets, in one process (``winnow sdg run``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets
import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.sdg.jobs import write_prompts
from winnow.cli import app
from winnow.schemas.sdg import PreferenceOptions
from winnow.sdg.outputs import preference_pairs
from winnow.sdg.rows import Candidate, PromptRow


def _candidates(row: PromptRow, *scored: tuple[str, float]) -> list[Candidate]:
    return [Candidate(row, i, text, "end_of_turn", score=score) for i, (text, score) in enumerate(scored)]


PLAIN = PromptRow("p", [{"role": "user", "content": "What is 1+1?"}])
CHAT = PromptRow("c", [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "What is 2+2?"}])


def test_pairs_are_best_against_worst_of_every_scored_response() -> None:
    chunk = _candidates(PLAIN, ("3", 0.1), ("2", 0.9), ("11", 0.4)) + _candidates(CHAT, ("4", 1.0), ("5", 0.0))
    pairs = preference_pairs(chunk, PreferenceOptions())
    assert pairs == [
        {
            "id": "p",
            "prompt": "What is 1+1?",
            "chosen": "2",
            "rejected": "3",
            "score_chosen": 0.9,
            "score_rejected": 0.1,
            "margin": pytest.approx(0.8),
        },
        {
            "id": "c",
            "prompt": CHAT.messages,
            "chosen": [{"role": "assistant", "content": "4"}],
            "rejected": [{"role": "assistant", "content": "5"}],
            "score_chosen": 1.0,
            "score_rejected": 0.0,
            "margin": 1.0,
        },
    ]


def test_all_pairs_above_the_margin_and_never_a_text_against_itself() -> None:
    chunk = _candidates(PLAIN, ("2", 1.0), ("3", 0.5), ("4", 0.0), ("2", 0.0))
    every = preference_pairs(chunk, PreferenceOptions(pairs="all"))
    assert [(p["chosen"], p["rejected"]) for p in every] == [("2", "3"), ("2", "4"), ("3", "4"), ("3", "2")]
    wide = preference_pairs(chunk, PreferenceOptions(pairs="all", min_margin=0.6))
    assert [(p["chosen"], p["rejected"]) for p in wide] == [("2", "4")]
    assert preference_pairs(_candidates(PLAIN, ("2", 1.0), ("2", 0.0)), PreferenceOptions()) == []
    assert preference_pairs(_candidates(PLAIN, ("2", 1.0)), PreferenceOptions()) == []


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def run_with_sets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A best-of-4 in-process run with exact_match scoring, asking for both training sets."""
    root = tmp_path_factory.mktemp("sets")
    prompts = write_prompts(root / "prompts.jsonl", 8)
    output = root / "out.jsonl"
    result = CliRunner().invoke(
        app,
        [
            "sdg", "run", "--prompts", str(prompts), "-o", str(output), "-n", "4", "--temperature", "1.0",
            "--max-gen-len", "8", "--scoring-function", "exact_match", "--filter", "best_of_n",
            "--also", "preference,sft", "--seed", "3", "--batch-size", "4",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return output


def test_a_run_writes_preference_pairs_and_sft_rows_beside_its_output(run_with_sets: Path) -> None:
    output = run_with_sets
    rows = _lines(output)
    pairs = _lines(output.with_name("out.preference.jsonl"))
    sft = _lines(output.with_name("out.sft.jsonl"))
    assert len(rows) == 8  # best_of_n kept one response a prompt; the pairs saw all four
    assert pairs and all(p["score_chosen"] == 1.0 and p["score_rejected"] == 0.0 for p in pairs)
    answers = {row["id"]: row for row in _lines(output.parent / "prompts.jsonl")}
    assert all(p["chosen"] == answers[p["id"]]["answer"] != p["rejected"] for p in pairs)
    assert [(s["id"], s["index"]) for s in sft] == [(r["id"], r["index"]) for r in rows]
    assert all(
        s["messages"] == [*r["prompt"], {"role": "assistant", "content": r["response"]["content"]}]
        for s, r in zip(sft, rows, strict=True)
    )
    summary = json.loads(output.with_name("out.summary.json").read_text())
    assert summary["preference"] == {"pairs": len(pairs), "mean_margin": 1.0}
    assert summary["params"]["outputs"] == ["preference", "sft"]


def test_an_unknown_set_is_refused(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", 1)
    result = CliRunner().invoke(
        app, ["sdg", "run", "--prompts", str(prompts), "-o", str(tmp_path / "o.jsonl"), "--also", "dpo"]
    )
    assert result.exit_code == 1 and "invalid parameters" in result.output and "outputs" in result.output


@pytest.mark.parametrize("output", ["rows", "preference", "sft"])
def test_exports_read_back_with_pandas_and_datasets(run_with_sets: Path, tmp_path: Path, output: str) -> None:
    source = {"rows": "out.jsonl", "preference": "out.preference.jsonl", "sft": "out.sft.jsonl"}[output]
    expected = _lines(run_with_sets.with_name(source))
    runner = CliRunner()
    for format, target in (("parquet", "x.parquet"), ("jsonl", "x.jsonl"), ("hf", "x-hf")):
        args = [
            "sdg",
            "export",
            str(run_with_sets),
            "--format",
            format,
            "--output",
            output,
            "--to",
            str(tmp_path / target),
        ]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == str(tmp_path / target)
    assert _lines(tmp_path / "x.jsonl") == expected
    frame = pd.read_parquet(tmp_path / "x.parquet")
    assert list(frame["id"]) == [row["id"] for row in expected]
    dataset = datasets.load_from_disk(str(tmp_path / "x-hf"))
    assert dataset.num_rows == len(expected) and dataset["id"] == [row["id"] for row in expected]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x-hf", "x.jsonl", "x.parquet"]  # nothing left behind


def test_exporting_a_set_the_run_did_not_ask_for_says_so(tmp_path: Path) -> None:
    output = tmp_path / "plain.jsonl"
    output.write_text("")
    result = CliRunner().invoke(
        app, ["sdg", "export", str(output), "--output", "sft", "--to", str(tmp_path / "x.parquet")]
    )
    assert result.exit_code == 1 and "--also sft" in result.output


def test_an_export_onto_its_own_source_keeps_every_row(run_with_sets: Path, tmp_path: Path) -> None:
    copy = tmp_path / "out.jsonl"
    copy.write_bytes(run_with_sets.read_bytes())
    result = CliRunner().invoke(app, ["sdg", "export", str(copy), "--format", "jsonl", "--to", str(copy)])
    assert result.exit_code == 0, result.output
    assert _lines(copy) == _lines(run_with_sets) and list(tmp_path.iterdir()) == [copy]

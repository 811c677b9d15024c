"""The local runner end to end with demo-lm and demo-rm: output rows, filters, crash-resume."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.conftest import DEMO_PROMPTS
from tests.spec import SDG, load
from winnow.cli import app
from winnow.config import Settings
from winnow.schemas.sdg import FilteringFunction, PromptResponseScore, SubmitJobRequest
from winnow.sdg.reward import open_registries
from winnow.sdg.runner import LocalRunner
from winnow.sdg.service import build_plan, check_spec
from winnow.sdg.workfiles import FileCheckpoint
from winnow.usage.recorder import UsageEvent

SMALL = DEMO_PROMPTS.with_name("arithmetic_small.jsonl")


def _answers() -> dict[str, str]:
    return {json.loads(line)["id"]: json.loads(line)["answer"] for line in DEMO_PROMPTS.read_text().splitlines()}


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _spec(**overrides: Any) -> SubmitJobRequest:
    base: dict[str, Any] = {
        "model": "demo-lm",
        "prompts_path": str(SMALL),
        "batch_size": 6,
        "temperature": 1.0,
        "top_p": 1.0,
        "max_gen_len": 8,
        "num_generations": 4,
        "reward_model": "demo-rm",
        "scoring_function": "raw",
        "filtering_function": FilteringFunction(name="none"),
        "seed": 3,
    }
    return SubmitJobRequest(**(base | overrides))


class CrashAfter(FileCheckpoint):
    """Dies (like a kill) after the files of chunk ``n`` are written, before its checkpoint is saved."""

    def __init__(self, path: Path, n: int) -> None:
        super().__init__(path)
        self.left = n

    def save(self, state: dict[str, Any], stage: str, usage: Sequence[UsageEvent] = ()) -> None:
        self.left -= 1
        if self.left < 0:
            raise SystemExit("simulated crash")
        super().save(state, stage, usage)


def _run(
    spec: SubmitJobRequest,
    work: Path,
    output: Path,
    checkpoint: FileCheckpoint | None = None,
    generated: list[str] | None = None,
) -> dict[str, Any]:
    """Run a job in this process; ``generated`` collects the ids of the prompts the model was asked
    for, in order (what a resumed run really redid)."""
    settings = Settings(data_dir=work.parent / "data", workers=0, data_roots=[SMALL.parent])

    async def go() -> dict[str, Any]:
        async with open_registries(settings) as (models, rewards):
            plan = build_plan(spec, check_spec(spec, settings, models, rewards), models, rewards)
            if generated is not None:
                plan = dataclasses.replace(plan, provider=_Recording(plan.provider, generated))
            return await LocalRunner(plan, work, output, checkpoint or FileCheckpoint(work / "checkpoint.json")).run()

    return asyncio.run(go())


class _Recording:
    """The job's provider, noting which prompts it is asked to generate for."""

    def __init__(self, provider: Any, seen: list[str]) -> None:
        self.provider, self.seen = provider, seen

    def __getattr__(self, name: str) -> Any:
        return getattr(self.provider, name)

    async def generate(self, prompts: Any, params: Any) -> Any:
        self.seen.extend(p[-1].content for p in prompts)
        return await self.provider.generate(prompts, params)


def test_rows_are_prompt_response_scores_and_counts_add_up(tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    summary = _run(_spec(), tmp_path / "work", output)
    rows = _rows(output)
    assert len(rows) == 20 * 4 and summary["counts"]["rows_kept"] == 80
    schema_fields = set(load(SDG)["components"]["schemas"]["PromptResponseScore"]["properties"])
    for row in rows:
        assert set(row) == schema_fields
        PromptResponseScore.model_validate(row)
        assert row["response"]["role"] == "assistant"
        assert row["response"]["stop_reason"] in ("end_of_turn", "out_of_tokens")
        assert row["prompt"][-1]["role"] == "user"
        assert row["score"] == row["raw_score"]
    assert sorted((r["id"], r["index"]) for r in rows) == sorted({(r["id"], r["index"]) for r in rows})
    assert output.with_name("out.summary.json").exists() and output.with_name("out.histogram.png").exists()


def test_exact_match_verifier_keeps_only_correct_answers(tmp_path: Path) -> None:
    spec = _spec(
        scoring_function="exact_match", filtering_function=FilteringFunction(name="threshold", params={"min_score": 1})
    )
    output = tmp_path / "out.jsonl"
    _run(spec, tmp_path / "work", output)
    answers = _answers()
    rows = _rows(output)
    assert rows and all(r["response"]["content"].strip() == answers[r["id"]] and r["score"] == 1.0 for r in rows)


def test_global_top_p_keeps_the_best_fraction(tmp_path: Path) -> None:
    spec = _spec(filtering_function=FilteringFunction(name="top_p", params={"p": 0.25}))
    output = tmp_path / "out.jsonl"
    _run(spec, tmp_path / "work", output)
    everything = tmp_path / "all.jsonl"
    _run(_spec(), tmp_path / "work-all", everything)
    scores = sorted((r["score"] for r in _rows(everything)), reverse=True)
    kept = _rows(output)
    assert 20 <= len(kept) <= 30  # a quarter of 80, ties kept
    assert min(r["score"] for r in kept) >= scores[19] - 1e-6


def test_a_crash_between_chunks_resumes_without_loss_or_duplicates(tmp_path: Path) -> None:
    reference = tmp_path / "reference.jsonl"
    _run(_spec(filtering_function=FilteringFunction(name="best_of_n")), tmp_path / "work-ref", reference)
    output = tmp_path / "out.jsonl"
    work = tmp_path / "work"
    spec = _spec(filtering_function=FilteringFunction(name="best_of_n"))
    with pytest.raises(SystemExit):
        _run(spec, work, output, CrashAfter(work / "checkpoint.json", 2))
    assert not output.exists()  # the output appears whole or not at all
    after: list[str] = []
    _run(spec, work, output, generated=after)
    # Chunks of 6: two were checkpointed, the third was written but not; the rerun starts at the
    # third (chunk 2), so it asks the model for prompts 12..19 only, the ones the crash left undone.
    prompts = [json.loads(line)["prompt"] for line in SMALL.read_text().splitlines()]
    assert after == prompts[12:]
    assert output.read_text() == reference.read_text()
    assert len({r["id"] for r in _rows(output)}) == 20


def test_cli_run_with_progress_and_resume_marker(tmp_path: Path) -> None:
    output = tmp_path / "cli.jsonl"
    result = CliRunner().invoke(
        app,
        [
            "sdg",
            "run",
            "--prompts",
            str(SMALL),
            "--model",
            "demo-lm",
            "--reward-model",
            "demo-rm",
            "--num-generations",
            "4",
            "--filter",
            "top_k",
            "--filter-params",
            '{"k": 2}',
            "--output",
            str(output),
            "--max-gen-len",
            "8",
            "--temperature",
            "1.0",
            "--seed",
            "1",
        ],
        env={"WINNOW_DATA_DIR": str(tmp_path / "data")},
    )
    assert result.exit_code == 0, result.output
    rows = _rows(output)
    assert len(rows) == 40 and max(sum(r["id"] == i for r in rows) for i in {r["id"] for r in rows}) == 2
    assert not output.with_name("cli.jsonl.winnow-work").exists()
    bad = CliRunner().invoke(app, ["sdg", "run", "--prompts", str(SMALL), "--output", str(output), "--filter", "nope"])
    assert bad.exit_code == 1 and "nope" in bad.output


def test_written_rows_equal_the_validated_wire_model(tmp_path: Path) -> None:
    from winnow.sdg.rows import Candidate, PromptRow, user_prompt
    from winnow.sdg.runner import _row_json

    candidate = Candidate(
        PromptRow("x", user_prompt("What is 1+1?", "Be exact.")), 2, "2 ✓", "out_of_tokens", 3, 0.5, 0.25
    )
    assert json.loads(_row_json(candidate)) == candidate.to_output().model_dump(mode="json")


def test_a_takeover_works_in_its_own_directory_and_fences_out_the_old_owner(tmp_path: Path) -> None:
    spec = _spec(filtering_function=FilteringFunction(name="best_of_n"))
    reference = tmp_path / "reference.jsonl"
    _run(spec, tmp_path / "work-ref", reference)
    checkpoint = tmp_path / "checkpoint.json"
    old, new, output = tmp_path / "work-1", tmp_path / "work-2", tmp_path / "out.jsonl"
    with pytest.raises(SystemExit):
        _run(spec, old, output, CrashAfter(checkpoint, 2))
    stale = old / "partial"
    stale.write_bytes(stale.read_bytes() + b'{"written": "after the lease ran out"}\n')  # the old owner goes on
    # A second owner adopts, then gives the job back before its first checkpoint: the checkpoint still
    # names the first owner's folder, which must still be there for the third.
    with pytest.raises(SystemExit):
        _run(spec, tmp_path / "work-2b", output, CrashAfter(checkpoint, 0))
    assert old.exists()
    _run(spec, new, output, FileCheckpoint(checkpoint))
    assert output.read_text() == reference.read_text()


def test_a_job_gives_the_same_rows_whatever_its_batch_size(tmp_path: Path) -> None:
    # Each row's seed comes from the job's seed and the prompt's id (its samples' from that), never
    # from the chunk it was batched in: at temperature 1, batch sizes 1, 3 and 8 write the same rows.
    # (The reward model's scores are compared to a relative 1e-5: its batched forward pass differs in the last
    # bits of a float with the number of texts it scores at once.)
    outputs = []
    for batch_size in (1, 3, 8):
        output = tmp_path / f"out-{batch_size}.jsonl"
        _run(_spec(batch_size=batch_size, temperature=1.0), tmp_path / f"work-{batch_size}", output)
        outputs.append(_rows(output))
    scores = [[v for r in rows for v in (r.pop("score"), r.pop("raw_score"))] for rows in outputs]
    assert outputs[0] == outputs[1] == outputs[2]
    for other in scores[1:]:
        assert other == pytest.approx(scores[0], rel=1e-5)
    assert len(outputs[0]) == 80 and len({r["response"]["content"] for r in outputs[0]}) > 10  # sampled

"""The semantic_dedupe filter and the diversity report, with minilm-l6 from its PyPI package: the
shipped near-duplicate set at the default threshold, both scopes, a crash and resume across the
job, and the report in the job's summary."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sdg.test_pipeline import CrashAfter, _run, _spec
from winnow.config import get_settings
from winnow.errors import InvalidRequest
from winnow.schemas.sdg import FilteringFunction
from winnow.sdg.filters import build_filter
from winnow.sdg.report import summary_path
from winnow.sdg.rows import Candidate, PromptRow, user_prompt
from winnow.sdg.semantic import DEFAULT_THRESHOLD, SemanticDedupe, embedder

NEAR_DUPLICATES = Path(__file__).parent / "fixtures" / "near_duplicates.jsonl"


@pytest.fixture(autouse=True, scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The process's settings (where the filter's model unpacks) in a directory of this module's."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WINNOW_DATA_DIR", str(tmp_path_factory.mktemp("semantic")))
        get_settings.cache_clear()
        embedder.cache_clear()
        yield
    get_settings.cache_clear()
    embedder.cache_clear()


def _candidates(
    texts: list[str], prompts: list[str] | None = None, scores: list[float] | None = None
) -> list[Candidate]:
    rows = {p: PromptRow(p, user_prompt(p)) for p in set(prompts or ["p"])}
    return [
        Candidate(
            rows[(prompts or ["p"] * len(texts))[i]], i, text, "end_of_turn", score=(scores or [0.0] * len(texts))[i]
        )
        for i, text in enumerate(texts)
    ]


def _dedupe(**params: object) -> SemanticDedupe:
    built = build_filter("semantic_dedupe", dict(params))
    assert isinstance(built, SemanticDedupe)
    return built


def test_near_duplicate_set_at_the_default_threshold() -> None:
    """Each labelled pair as two responses of one prompt: a pair is called a duplicate when the filter
    keeps one of the two. Recall and precision must both reach 0.9 (README: measured figures)."""
    pairs = [json.loads(line) for line in NEAR_DUPLICATES.read_text().splitlines()]
    assert len(pairs) >= 60 and sum(p["dup"] for p in pairs) >= 30
    dedupe = _dedupe(within="prompt")
    assert dedupe.threshold == DEFAULT_THRESHOLD
    texts, prompts = [], []
    for i, pair in enumerate(pairs):
        texts += [pair["a"], pair["b"]]
        prompts += [f"pair-{i}", f"pair-{i}"]
    kept = dedupe(_candidates(texts, prompts))
    survivors = {c.row.id for c in kept if c.index % 2 == 1}  # pairs whose second response stayed
    called = [f"pair-{i}" not in survivors for i in range(len(pairs))]
    tp = sum(c and p["dup"] for c, p in zip(called, pairs, strict=True))
    fp = sum(c and not p["dup"] for c, p in zip(called, pairs, strict=True))
    recall, precision = tp / sum(p["dup"] for p in pairs), tp / max(tp + fp, 1)
    print(f"near-duplicates at threshold {DEFAULT_THRESHOLD}: recall {recall:.3f}, precision {precision:.3f}")
    assert recall >= 0.9 and precision >= 0.9


def test_within_prompt_keeps_other_prompts_and_the_best_scored_stays() -> None:
    texts = [
        "Paris is the capital of France.",
        "The capital city of France is Paris.",
        "Paris is the capital of France.",
    ]
    prompts = ["a", "a", "b"]
    kept = _dedupe(within="prompt")(_candidates(texts, prompts, scores=[0.1, 0.9, 0.0]))
    assert [(c.row.id, c.index) for c in kept] == [("a", 1), ("b", 2)]  # a's better one; b on its own


def test_within_job_remembers_across_chunks() -> None:
    dedupe = _dedupe(within="job")
    first = dedupe(_candidates(["The train leaves at eight.", "Cats sleep most of the day."], ["a", "b"]))
    second = dedupe(
        _candidates(["At eight o'clock the train departs.", "Bake the bread for forty minutes."], ["c", "d"])
    )
    assert len(first) == 2 and [c.text for c in second] == ["Bake the bread for forty minutes."]
    assert len(dedupe._bank) == 3


def test_max_kept_bounds_the_memory() -> None:
    dedupe = _dedupe(within="job", max_kept=1)
    dedupe(_candidates(["Tea is a drink.", "Rome is in Italy."], ["a", "b"]))
    assert len(dedupe._bank) == 1


def test_bad_params_are_refused_at_submit_time() -> None:
    for params in ({"threshold": 0}, {"within": "chunk"}, {"model": "demo-lm"}, {"model": "nope"}, {"max_kept": -1}):
        with pytest.raises(InvalidRequest):
            build_filter("semantic_dedupe", params)


def test_a_resumed_job_dedupes_as_if_it_had_never_stopped(tmp_path: Path) -> None:
    """Across the job, the filter's state comes back from the checkpointed kept rows: the crashed
    and resumed job writes exactly the rows of an uninterrupted one, and its summary reports them."""
    flt = FilteringFunction(name="semantic_dedupe", params={"within": "job", "threshold": 0.9})
    reference = tmp_path / "reference.jsonl"
    _run(_spec(filtering_function=flt), tmp_path / "work-ref", reference)
    output, work = tmp_path / "out.jsonl", tmp_path / "work"
    with pytest.raises(SystemExit):
        _run(_spec(filtering_function=flt), work, output, CrashAfter(work / "checkpoint.json", 2))
    _run(_spec(filtering_function=flt), work, output)
    assert output.read_text() == reference.read_text()
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert 0 < len(rows) < 80  # 20 prompts x 4 answers of demo-lm: many repeat across the job
    diversity = json.loads(summary_path(output).read_text())["diversity"]
    assert diversity["model"] == "minilm-l6" and diversity["responses"] == diversity["sampled"] == len(rows)
    assert 0 < diversity["mean_pairwise_cosine_distance"] <= 2 and diversity["clusters"] == len(rows)


def test_diversity_is_absent_without_a_semantic_filter(tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    _run(_spec(filtering_function=FilteringFunction(name="best_of_n")), tmp_path / "work", output)
    assert "diversity" not in json.loads(summary_path(output).read_text())

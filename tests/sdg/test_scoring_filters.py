"""Scoring functions and filters over real Candidate/PromptRow objects, plus their entry-point registries."""

from __future__ import annotations

import math
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from winnow.errors import InvalidRequest, WinnowError
from winnow.sdg import filters, scoring
from winnow.sdg.filters import build_filter, filter_factories, is_global
from winnow.sdg.rows import Candidate, PromptRow, user_prompt
from winnow.sdg.scoring import apply_scoring, resolve_scoring, scoring_functions


def prompt(row_id: str, **fields: Any) -> PromptRow:
    return PromptRow(id=row_id, messages=user_prompt(f"question {row_id}"), fields=fields)


def group(
    row: PromptRow, raw_scores: list[float], texts: list[str] | None = None, tokens: list[int] | None = None
) -> list[Candidate]:
    """All generations of one prompt; ``score`` starts equal to ``raw_score`` so filters can be tested directly."""
    texts = texts or [f"response {i}" for i in range(len(raw_scores))]
    tokens = tokens or [0] * len(raw_scores)
    return [
        Candidate(row=row, index=i, text=t, stop_reason="end_of_turn", output_tokens=n, raw_score=s, score=s)
        for i, (s, t, n) in enumerate(zip(raw_scores, texts, tokens, strict=True))
    ]


def keys(rows: list[Candidate]) -> list[tuple[str, int]]:
    return [(c.row.id, c.index) for c in rows]


def rejection(name: str, params: Any) -> str:
    """The message and details of the InvalidRequest that ``build_filter`` must raise."""
    with pytest.raises(InvalidRequest) as info:
        build_filter(name, params)
    return f"{info.value.message} | {info.value.details}"


# --- scoring functions ----------------------------------------------------------------------------


def test_raw_returns_raw_scores_in_order_without_mutating() -> None:
    cands = group(prompt("a"), [0.5, -2.0, 3.0])
    before = [(c.raw_score, c.score) for c in cands]
    assert scoring.raw(cands, None) == [0.5, -2.0, 3.0]
    assert [(c.raw_score, c.score) for c in cands] == before


def test_sigmoid_is_the_logistic_and_does_not_overflow_on_large_scores() -> None:
    scores = scoring.sigmoid(group(prompt("a"), [0.0, 2.0, -2.0, 1000.0, -1000.0]), None)
    assert scores[0] == 0.5
    assert scores[1] == pytest.approx(1 / (1 + math.exp(-2.0)))
    assert scores[1] + scores[2] == pytest.approx(1.0)
    assert scores[3] == 1.0
    assert scores[4] == 0.0


def test_zscore_standardizes_within_the_prompt_group() -> None:
    scores = scoring.zscore(group(prompt("a"), [1.0, 2.0, 3.0]), None)
    assert scores == pytest.approx([-math.sqrt(1.5), 0.0, math.sqrt(1.5)])


def test_zscore_is_zero_for_one_candidate_or_no_spread() -> None:
    assert scoring.zscore(group(prompt("a"), [7.0]), None) == [0.0]
    assert scoring.zscore(group(prompt("a"), [0.1, 0.1, 0.1]), None) == [0.0, 0.0, 0.0]


def test_rank_scales_to_unit_interval_with_best_one() -> None:
    assert scoring.rank(group(prompt("a"), [3.0, 1.0, 2.0]), None) == [1.0, 0.0, 0.5]


def test_rank_gives_ties_the_average_rank() -> None:
    assert scoring.rank(group(prompt("a"), [1.0, 2.0, 2.0, 3.0]), None) == [0.0, 0.5, 0.5, 1.0]
    assert scoring.rank(group(prompt("a"), [5.0, 5.0, 5.0]), None) == [0.5, 0.5, 0.5]
    assert scoring.rank(group(prompt("a"), [2.0, 9.0, 9.0]), None) == [0.0, 0.75, 0.75]


def test_rank_of_a_single_candidate_is_one() -> None:
    assert scoring.rank(group(prompt("a"), [-4.0]), None) == [1.0]


def test_exact_match_compares_stripped_text_to_the_answer_field() -> None:
    cands = group(prompt("a", answer=" 4\n"), [0.0, 0.0, 0.0], texts=["4", "  4 ", "four"])
    assert scoring.exact_match(cands, None) == [1.0, 1.0, 0.0]


def test_exact_match_stringifies_non_string_fields_and_takes_the_field_as_arg() -> None:
    cands = group(prompt("a", label=12, answer="x"), [0.0, 0.0], texts=["12", "x"])
    assert scoring.exact_match(cands, "label") == [1.0, 0.0]


def test_exact_match_on_a_row_without_the_field_is_invalid_request() -> None:
    cands = group(prompt("row-7", answer="4"), [0.0], texts=["4"])
    with pytest.raises(InvalidRequest) as info:
        scoring.exact_match(cands, "label")
    assert "label" in info.value.message
    assert "row-7" in (info.value.details or "")


def test_regex_match_requires_a_full_match_of_the_stripped_text() -> None:
    cands = group(prompt("a", pattern=r"\d+"), [0.0] * 3, texts=[" 42 ", "42 apples", "x"])
    assert scoring.regex_match(cands, None) == [1.0, 0.0, 0.0]


def test_regex_match_takes_the_pattern_field_as_arg() -> None:
    cands = group(prompt("a", fmt=r"(yes|no)"), [0.0, 0.0], texts=["no", "maybe"])
    assert scoring.regex_match(cands, "fmt") == [1.0, 0.0]


def test_regex_match_on_missing_field_or_bad_pattern_is_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="pattern"):
        scoring.regex_match(group(prompt("a"), [0.0]), None)
    with pytest.raises(InvalidRequest, match="regular expression"):
        scoring.regex_match(group(prompt("a", pattern="(unclosed"), [0.0]), None)


def test_length_penalty_subtracts_alpha_per_output_token() -> None:
    cands = group(prompt("a"), [1.0, 1.0], tokens=[10, 100])
    assert scoring.length_penalty(cands, None) == pytest.approx([0.9, 0.0])
    assert scoring.length_penalty(cands, "0.5") == pytest.approx([-4.0, -49.0])


def test_apply_scoring_groups_interleaved_candidates_by_prompt() -> None:
    a, b = group(prompt("a"), [1.0, 3.0]), group(prompt("b"), [10.0, 20.0, 30.0])
    mixed = [a[0], b[0], a[1], b[1], b[2]]
    apply_scoring(mixed, scoring.rank, None)
    assert [c.score for c in mixed] == [0.0, 0.0, 1.0, 0.5, 1.0]
    apply_scoring(mixed, scoring.zscore, None)
    assert [c.score for c in a] == pytest.approx([-1.0, 1.0])


def test_apply_scoring_rejects_a_function_returning_the_wrong_number_of_scores() -> None:
    with pytest.raises(WinnowError, match="wrong number"):
        apply_scoring(group(prompt("a"), [1.0, 2.0]), lambda cands, arg: [0.0], None)


def test_resolve_scoring_parses_name_and_arg() -> None:
    assert resolve_scoring("raw") == (scoring.raw, None)
    assert resolve_scoring("exact_match:label") == (scoring.exact_match, "label")
    assert resolve_scoring("length_penalty:0.05") == (scoring.length_penalty, "0.05")


def test_resolve_scoring_names_known_functions_for_an_unknown_one() -> None:
    with pytest.raises(InvalidRequest, match="unknown scoring function 'bleu'") as info:
        resolve_scoring("bleu")
    assert "exact_match" in (info.value.details or "")
    assert "zscore" in (info.value.details or "")


@pytest.mark.parametrize("spec", ["length_penalty:abc", "length_penalty:nan", "raw:1", "rank:x", "exact_match:", ""])
def test_resolve_scoring_rejects_bad_arguments_at_submit_time(spec: str) -> None:
    with pytest.raises(InvalidRequest):
        resolve_scoring(spec)


def test_every_scoring_entry_point_resolves() -> None:
    names = {ep.name for ep in entry_points(group="winnow.scoring_functions")}
    assert {"raw", "sigmoid", "zscore", "rank", "exact_match", "regex_match", "length_penalty"} <= names
    assert set(scoring_functions()) == names
    for name in names:
        fn, arg = resolve_scoring(name)
        assert callable(fn) and arg is None


# --- chunk-scope filters --------------------------------------------------------------------------


def test_none_keeps_everything_in_a_new_list() -> None:
    rows = group(prompt("a"), [1.0, -1.0])
    kept = build_filter("none", None)(rows)
    assert kept == rows and kept is not rows


def test_threshold_keeps_scores_at_or_above_min_score() -> None:
    rows = group(prompt("a"), [0.2, 0.5, 0.9])
    assert keys(build_filter("threshold", {"min_score": 0.5})(rows)) == [("a", 1), ("a", 2)]
    assert keys(build_filter("threshold", {"min_score": 1})(rows)) == []


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({}, "min_score"),
        ({"min_score": 0.5, "max": 1}, "max"),
        ({"min_score": "0.5"}, "min_score"),
        ({"min_score": True}, "min_score"),
        ({"min_score": math.inf}, "min_score"),
    ],
)
def test_threshold_params_are_validated_naming_the_bad_param(params: dict[str, Any], named: str) -> None:
    assert named in rejection("threshold", params).split(" | ")[1]


def test_best_of_n_keeps_one_per_prompt_lowest_index_on_ties() -> None:
    rows = group(prompt("a"), [0.3, 0.9, 0.9]) + group(prompt("b"), [0.1, 0.0])
    assert keys(build_filter("best_of_n", {})(rows)) == [("a", 1), ("b", 0)]
    with pytest.raises(InvalidRequest, match="best_of_n"):
        build_filter("best_of_n", {"k": 2})


def test_top_k_keeps_k_per_prompt_in_input_order() -> None:
    a, b = group(prompt("a"), [0.1, 0.9, 0.5, 0.7]), group(prompt("b"), [2.0, 1.0])
    rows = [a[0], b[0], a[1], a[2], b[1], a[3]]
    kept = build_filter("top_k", {"k": 2})(rows)
    assert keys(kept) == [("b", 0), ("a", 1), ("b", 1), ("a", 3)]


def test_top_k_ties_go_to_the_lowest_index_and_nan_ranks_last() -> None:
    rows = group(prompt("a"), [math.nan, 0.5, 0.5, 0.5])
    assert keys(build_filter("top_k", {"k": 2})(rows)) == [("a", 1), ("a", 2)]


@pytest.mark.parametrize("params", [{}, {"k": 0}, {"k": 1.5}, {"k": True}, {"k": 2, "p": 0.5}])
def test_top_k_rejects_bad_k(params: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest, match="top_k"):
        build_filter("top_k", params)


def test_random_is_deterministic_and_independent_of_chunk_boundaries() -> None:
    rows = [c for i in range(40) for c in group(prompt(f"p{i}"), [0.0] * 4)]
    f = build_filter("random", {"fraction": 0.4, "seed": 7})
    whole = f(rows)
    chunked = f(rows[:36]) + f(rows[36:100]) + f(rows[100:])
    reversed_chunks = [c for chunk in (rows[100:], rows[:100]) for c in f(chunk)]
    assert keys(whole) == keys(chunked)
    assert sorted(keys(whole)) == sorted(keys(reversed_chunks))
    assert keys(build_filter("random", {"fraction": 0.4, "seed": 7})(rows)) == keys(whole)
    assert 40 < len(whole) < 90  # about 64 of 160
    assert keys(build_filter("random", {"fraction": 0.4, "seed": 8})(rows)) != keys(whole)


def test_random_fraction_zero_keeps_none_and_one_keeps_all() -> None:
    rows = group(prompt("a"), [0.0] * 20)
    assert build_filter("random", {"fraction": 0})(rows) == []
    assert build_filter("random", {"fraction": 1.0})(rows) == rows


@pytest.mark.parametrize("params", [{}, {"fraction": 1.5}, {"fraction": -0.1}, {"fraction": 0.5, "seed": "x"}])
def test_random_rejects_bad_params(params: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest, match="random"):
        build_filter("random", params)


def test_dedupe_drops_normalized_repeats_within_a_prompt_only() -> None:
    a = group(prompt("a"), [0.0] * 4, texts=["Hello  World", "hello world\n", "HELLO\tWORLD ", "bye"])
    b = group(prompt("b"), [0.0], texts=["hello world"])
    kept = build_filter("dedupe", None)(a + b)
    assert keys(kept) == [("a", 0), ("a", 3), ("b", 0)]


def test_dedupe_without_normalize_compares_exact_text() -> None:
    rows = group(prompt("a"), [0.0] * 3, texts=["Hi", "hi", "Hi"])
    assert keys(build_filter("dedupe", {"normalize": False})(rows)) == [("a", 0), ("a", 1)]
    assert "normalize: expected bool" in rejection("dedupe", {"normalize": "yes"})


def test_sigmoid_filter_keeps_sigmoid_of_score_at_or_above_threshold() -> None:
    rows = group(prompt("a"), [-1.0, 0.0, 3.0])
    assert keys(build_filter("sigmoid", None)(rows)) == [("a", 1), ("a", 2)]
    assert keys(build_filter("sigmoid", {"threshold": 0.9})(rows)) == [("a", 2)]
    assert "threshold: must be in [0, 1]" in rejection("sigmoid", {"threshold": 2})


def test_chain_applies_filters_in_order() -> None:
    rows = group(prompt("a"), [0.9, 0.4, 0.6])
    threshold_first = build_filter(
        "chain",
        {"filters": [{"name": "threshold", "params": {"min_score": 0.5}}, {"name": "top_k", "params": {"k": 1}}]},
    )
    best_first = build_filter(
        "chain", {"filters": [{"name": "best_of_n"}, {"name": "threshold", "params": {"min_score": 1.0}}]}
    )
    assert threshold_first.scope == "chunk"
    assert keys(threshold_first(rows)) == [("a", 0)]
    assert keys(best_first(rows)) == []


def test_chain_may_end_in_a_global_filter_and_then_is_global() -> None:
    f = build_filter("chain", {"filters": [{"name": "dedupe"}, {"name": "top_p", "params": {"p": 0.5}}]})
    assert is_global(f)
    assert [type(part) for part in f.filters] == [filters.Dedupe, filters.TopP]  # type: ignore[attr-defined]


def test_a_chain_ending_in_a_global_chain_is_flattened_so_its_last_filter_owns_the_cutoff() -> None:
    inner = {"name": "top_k_top_p", "params": {"k": 1, "p": 0.5}}
    f = build_filter("chain", {"filters": [{"name": "dedupe"}, inner]})
    assert [type(part) for part in f.filters] == [filters.Dedupe, filters.TopK, filters.TopP]  # type: ignore[attr-defined]
    rows = group(prompt("a"), [3.0, 3.0], texts=["x", "X"]) + group(prompt("b"), [1.0, 2.0])
    assert keys(f(rows)) == [("a", 0)]


@pytest.mark.parametrize(
    "params",
    [
        {"filters": [{"name": "top_p", "params": {"p": 0.5}}, {"name": "none"}]},
        {
            "filters": [
                {"name": "chain", "params": {"filters": [{"name": "percentile", "params": {"p": 50}}]}},
                {"name": "none"},
            ]
        },
        {"filters": []},
        {"filters": [{"params": {}}]},
        {"filters": [{"name": "none", "extra": 1}]},
        {"filters": "none"},
    ],
)
def test_chain_rejects_a_global_filter_before_the_end_and_malformed_items(params: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest, match="chain"):
        build_filter("chain", params)


def test_chain_reports_an_inner_filters_bad_params() -> None:
    with pytest.raises(InvalidRequest, match="top_k"):
        build_filter("chain", {"filters": [{"name": "top_k", "params": {"k": 0}}]})
    with pytest.raises(InvalidRequest, match="unknown filtering function 'nope'"):
        build_filter("chain", {"filters": [{"name": "nope"}]})


# --- global-scope filters -------------------------------------------------------------------------


def test_top_p_cutoff_is_the_higher_quantile_so_a_real_score_is_kept() -> None:
    top_p = build_filter("top_p", {"p": 0.3})
    assert is_global(top_p)
    assert top_p.cutoff(np.arange(10, dtype=np.float32)) == 7.0  # keeps 7, 8, 9
    assert top_p.cutoff(np.array([5.0, 1.0])) == 5.0
    assert filters.TopP(p=0.01).cutoff(np.arange(10.0)) == 9.0  # at least one survives
    assert filters.TopP(p=1.0).cutoff(np.arange(10.0)) == 0.0  # p = 1 keeps all


def test_top_p_keeps_every_candidate_tied_with_the_cutoff() -> None:
    rows = group(prompt("a"), [1.0, 2.0, 2.0, 2.0, 3.0])
    f = build_filter("top_p", {"p": 0.4})
    assert is_global(f)
    assert f.cutoff(np.array([1.0, 2.0, 2.0, 2.0, 3.0], dtype=np.float32)) == 2.0
    assert keys(f(rows)) == [("a", 1), ("a", 2), ("a", 3), ("a", 4)]


def test_global_cutoffs_ignore_nan_and_keep_nothing_when_empty() -> None:
    f = build_filter("top_p", {"p": 0.5})
    assert is_global(f)
    assert f.cutoff(np.array([math.nan, 1.0, 3.0])) == 3.0
    assert f.cutoff(np.array([], dtype=np.float32)) == math.inf
    assert build_filter("percentile", {"p": 50})(group(prompt("a"), [math.nan])) == []


@pytest.mark.parametrize("p", [0, -0.5, 1.01, "half"])
def test_top_p_rejects_p_outside_zero_exclusive_to_one(p: Any) -> None:
    with pytest.raises(InvalidRequest, match="top_p"):
        build_filter("top_p", {"p": p})


def test_percentile_keeps_scores_at_or_above_the_pth_percentile() -> None:
    rows = group(prompt("a"), [4.0, 1.0, 3.0, 2.0])
    median = build_filter("percentile", {"p": 50})
    assert is_global(median)
    assert median.cutoff(np.array([4.0, 1.0, 3.0, 2.0])) == 2.5
    assert keys(median(rows)) == [("a", 0), ("a", 2)]
    assert build_filter("percentile", {"p": 0})(rows) == rows
    ties = group(prompt("b"), [1.0, 5.0, 5.0])
    assert keys(build_filter("percentile", {"p": 100})(ties)) == [("b", 1), ("b", 2)]
    with pytest.raises(InvalidRequest, match="percentile"):
        build_filter("percentile", {"p": 100.5})


def test_top_k_top_p_takes_top_k_per_prompt_before_the_global_cutoff() -> None:
    rows = group(prompt("a"), [9.0, 8.0, 7.0]) + group(prompt("b"), [1.0, 0.5, 0.0])
    f = build_filter("top_k_top_p", {"k": 2, "p": 0.5})
    assert is_global(f)
    # top_k leaves 9, 8 | 1, 0.5; the higher 0.5-quantile of those four is 8.
    assert keys(f.prefilter(rows)) == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    assert keys(f(rows)) == [("a", 0), ("a", 1)]
    for params in ({"k": 2}, {"k": 0, "p": 0.5}, {"k": 2, "p": 0}):
        with pytest.raises(InvalidRequest, match="top_k_top_p"):
            build_filter("top_k_top_p", params)


def test_spilled_float32_cutoff_matches_the_in_memory_filter(tmp_path: Path) -> None:
    """What the runner does: prefilter per chunk, spill float32 scores, memory-map, cut off, stream again."""
    rng = np.random.default_rng(0)
    rows = [c for i in range(50) for c in group(prompt(f"p{i}"), rng.normal(size=4).round(1).tolist())]
    f = build_filter("top_k_top_p", {"k": 3, "p": 0.25})
    assert is_global(f)
    chunks = [rows[i : i + 40] for i in range(0, len(rows), 40)]
    survivors = [c for chunk in chunks for c in f.prefilter(chunk)]
    spill = tmp_path / "scores.f32"
    spill.write_bytes(np.asarray([c.score for c in survivors], dtype=np.float32).tobytes())
    mapped = np.memmap(spill, dtype=np.float32, mode="r")
    cutoff = f.cutoff(mapped)
    streamed = [c for c, value in zip(survivors, mapped, strict=True) if value >= cutoff]
    assert keys(streamed) == keys(f(rows))


# --- registry -------------------------------------------------------------------------------------


def test_every_filter_entry_point_resolves_including_the_llama_stack_names() -> None:
    names = {ep.name for ep in entry_points(group="winnow.filters")}
    assert {"none", "random", "top_k", "top_p", "top_k_top_p", "sigmoid", "threshold", "best_of_n"} <= names
    assert set(filter_factories()) == names
    minimal: dict[str, dict[str, Any]] = {
        "threshold": {"min_score": 0.0},
        "top_k": {"k": 1},
        "random": {"fraction": 0.5},
        "chain": {"filters": [{"name": "none"}]},
        "top_p": {"p": 0.5},
        "percentile": {"p": 50},
        "top_k_top_p": {"k": 1, "p": 0.5},
    }
    rows = group(prompt("a"), [0.0, 1.0])
    for name in names:
        f = build_filter(name, minimal.get(name))
        assert f.scope in ("chunk", "global")
        assert all(c in rows for c in f(rows))


def test_build_filter_names_known_filters_for_an_unknown_one() -> None:
    with pytest.raises(InvalidRequest, match="unknown filtering function 'top_q'") as info:
        build_filter("top_q", {})
    assert "top_p" in (info.value.details or "")
    assert "params must be an object" in rejection("none", ["x"])

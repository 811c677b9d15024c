"""Scoring functions: turn the reward model's ``raw_score`` into the ``score`` that filters see.

A seed spec names one as a plain string, ``"name"`` or ``"name:arg"`` (``"exact_match:label"``,
``"length_penalty:0.05"``). Each function gets every generation of ONE prompt, so group-relative
scores (``zscore``, ``rank``) are possible, and returns one score per candidate, in order, without
mutating them. Functions come from the ``winnow.scoring_functions`` entry-point group (the
built-ins below register there too, see pyproject.toml), so a plugin package adds one with::

    [project.entry-points."winnow.scoring_functions"]
    my_score = "my_pkg.scoring:my_score"

A scoring function checks its argument before it looks at any candidate, so ``fn([], arg)`` is a
cheap dry run: ``resolve_scoring`` uses it to reject a bad argument when the job is submitted.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable
from functools import cache

from winnow.errors import InvalidRequest, WinnowError
from winnow.plugins import load_group
from winnow.sdg.rows import Candidate

ENTRY_POINT_GROUP = "winnow.scoring_functions"

ScoringFn = Callable[[list[Candidate], str | None], list[float]]
"""``fn(candidates_of_one_prompt, arg) -> scores``, one score per candidate, in order."""

DEFAULT_LENGTH_ALPHA = 0.01


def logistic(x: float) -> float:
    """1 / (1 + e^-x) without overflow: e^x is only ever taken of a non-positive number."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def _no_arg(name: str, arg: str | None) -> None:
    if arg is not None:
        raise InvalidRequest(f"scoring function {name!r} takes no argument", f"got {name}:{arg}")


def _field_value(candidate: Candidate, field: str, function: str) -> object:
    try:
        return candidate.row.fields[field]
    except KeyError:
        raise InvalidRequest(
            f"scoring function {function!r} needs field {field!r} on every input row",
            f"row {candidate.row.id!r} (line {candidate.row.line}) has no field {field!r}",
        ) from None


def raw(candidates: list[Candidate], arg: str | None) -> list[float]:
    """The reward model's score as is."""
    _no_arg("raw", arg)
    return [c.raw_score for c in candidates]


def sigmoid(candidates: list[Candidate], arg: str | None) -> list[float]:
    """Squash raw scores (often unbounded logits) into (0, 1) so one threshold fits any reward model."""
    _no_arg("sigmoid", arg)
    return [logistic(c.raw_score) for c in candidates]


def zscore(candidates: list[Candidate], arg: str | None) -> list[float]:
    """How far each generation sits from its prompt's mean, in (population) standard deviations.

    Makes scores comparable across prompts of different difficulty. A group with one candidate or
    no spread scores 0.0 everywhere.
    """
    _no_arg("zscore", arg)
    values = [c.raw_score for c in candidates]
    if len(values) < 2 or min(values) == max(values):
        return [0.0] * len(values)
    mean = statistics.fmean(values)
    std = statistics.pstdev(values)
    if std == 0:
        return [0.0] * len(values)
    return [(v - mean) / std for v in values]


def rank(candidates: list[Candidate], arg: str | None) -> list[float]:
    """Each generation's rank within its prompt, scaled to [0, 1]: worst 0.0, best 1.0.

    Ties share the average of the ranks they span (so a fully tied group of n > 1 scores 0.5);
    a single candidate scores 1.0. Robust to a reward model's scale and outliers.
    """
    _no_arg("rank", arg)
    n = len(candidates)
    if n == 1:
        return [1.0]
    order = sorted(range(n), key=lambda i: candidates[i].raw_score)
    ranks = [0.0] * n
    start = 0
    while start < n:
        end = start
        while end + 1 < n and candidates[order[end + 1]].raw_score == candidates[order[start]].raw_score:
            end += 1
        average = (start + end) / 2  # 0-based positions start..end share their mean
        for position in range(start, end + 1):
            ranks[order[position]] = average / (n - 1)
        start = end + 1
    return ranks


def exact_match(candidates: list[Candidate], arg: str | None) -> list[float]:
    """1.0 when the stripped response equals the row's reference field (``arg``, default ``answer``), else 0.0."""
    field = arg or "answer"
    return [1.0 if c.text.strip() == str(_field_value(c, field, "exact_match")).strip() else 0.0 for c in candidates]


def regex_match(candidates: list[Candidate], arg: str | None) -> list[float]:
    """1.0 when the stripped response fully matches the row's pattern field (``arg``, default ``pattern``)."""
    field = arg or "pattern"
    scores: list[float] = []
    for c in candidates:
        pattern = str(_field_value(c, field, "regex_match"))
        try:
            matched = re.fullmatch(pattern, c.text.strip()) is not None
        except re.error as exc:
            raise InvalidRequest(
                f"row {c.row.id!r} (line {c.row.line}): field {field!r} is not a valid regular expression",
                str(exc),
            ) from None
        scores.append(1.0 if matched else 0.0)
    return scores


def _length_alpha(arg: str | None) -> float:
    if arg is None:
        return DEFAULT_LENGTH_ALPHA
    try:
        alpha = float(arg)
    except ValueError:
        raise InvalidRequest(
            "scoring function 'length_penalty' takes a number (tokens cost alpha each)",
            f"not a number: {arg!r}",
        ) from None
    if not math.isfinite(alpha):
        raise InvalidRequest("scoring function 'length_penalty' takes a finite number", f"got {arg!r}")
    return alpha


def length_penalty(candidates: list[Candidate], arg: str | None) -> list[float]:
    """raw_score - alpha * output_tokens (alpha = ``arg``, default 0.01): prefer shorter answers of equal reward."""
    alpha = _length_alpha(arg)
    return [c.raw_score - alpha * c.output_tokens for c in candidates]


@cache
def scoring_functions() -> dict[str, ScoringFn]:
    """Every scoring function by name, from the ``winnow.scoring_functions`` entry points."""
    return load_group(ENTRY_POINT_GROUP, callable, "callable")


def resolve_scoring(spec: str) -> tuple[ScoringFn, str | None]:
    """Parse ``"name"`` or ``"name:arg"`` and check both now, so a bad spec fails at submit time."""
    name, sep, arg_text = spec.partition(":")
    name = name.strip()
    arg = arg_text.strip() if sep else None
    functions = scoring_functions()
    fn = functions.get(name)
    if fn is None:
        raise InvalidRequest(f"unknown scoring function {name!r}", f"known: {', '.join(sorted(functions))}")
    if arg == "":
        raise InvalidRequest(f"scoring function {name!r}: empty argument after ':'", f"got {spec!r}")
    fn([], arg)  # the dry run: validates the argument (see the module docstring)
    return fn, arg


def apply_scoring(candidates: list[Candidate], spec_fn: ScoringFn, arg: str | None) -> None:
    """Set every candidate's ``score``, calling ``spec_fn`` once per prompt (grouped by ``row.id``)."""
    groups: dict[str, list[Candidate]] = {}
    for c in candidates:
        groups.setdefault(c.row.id, []).append(c)
    for row_id, group in groups.items():
        scores = spec_fn(group, arg)
        if len(scores) != len(group):
            raise WinnowError(
                "scoring function returned the wrong number of scores",
                f"row {row_id!r}: {len(group)} candidates, {len(scores)} scores",
            )
        for c, score in zip(group, scores, strict=True):
            c.score = float(score)


__all__ = [
    "DEFAULT_LENGTH_ALPHA",
    "ENTRY_POINT_GROUP",
    "ScoringFn",
    "apply_scoring",
    "exact_match",
    "length_penalty",
    "logistic",
    "rank",
    "raw",
    "regex_match",
    "resolve_scoring",
    "scoring_functions",
    "sigmoid",
    "zscore",
]

"""Filtering functions: which scored candidates make it into the output.

A seed spec names one as ``{name, params}``. Each name in the ``winnow.filters`` entry-point group
is a *factory*, ``factory(params) -> Filter``, that checks the params when the job is submitted
(the built-ins below register there too, see pyproject.toml). Names follow both Winnow's own
(``threshold``, ``best_of_n``, ...) and the Llama Stack ``FilteringFunction`` family (``none``,
``random``, ``top_k``, ``top_p``, ``top_k_top_p``, ``sigmoid``).

A filter has one of two scopes:

- ``"chunk"``: called on each chunk's candidates. The pipeline keeps all generations of a prompt
  in one chunk, so per-prompt rules (``top_k``, ``dedupe``) are exact.
- ``"global"``: needs the whole dataset (``top_p``, ``percentile``). The runner applies
  ``prefilter`` to each chunk, spills the survivors' scores to disk, memory-maps them as one numpy
  array, asks ``cutoff`` for a score, then streams the spill again keeping ``score >= cutoff``.
  Spill float64, or compare the same float32-rounded scores the cutoff was computed from, or a
  candidate equal to the cutoff may be lost to rounding. ``__call__`` does all of it in memory.

Every filter returns a new list in input order and leaves its input alone.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar, Literal

from winnow.errors import InvalidRequest
from winnow.plugins import load_group
from winnow.schemas.sdg import SubmitJobRequest
from winnow.sdg.filter_types import REQUIRED as _REQUIRED
from winnow.sdg.filter_types import Filter, FilterFactory, GlobalFilter, Scores, is_global
from winnow.sdg.filter_types import at_least_one as _at_least_one
from winnow.sdg.filter_types import bad_params as _bad
from winnow.sdg.filter_types import check_params as _params
from winnow.sdg.filter_types import in_range as _in_range
from winnow.sdg.filters_global import GlobalChain, Percentile, TopP
from winnow.sdg.rows import Candidate
from winnow.sdg.scoring import logistic

ENTRY_POINT_GROUP = "winnow.filters"
__all__ = ["Filter", "FilterFactory", "GlobalFilter", "Scores", "build_filter", "filter_factories", "is_global"]

# --- chunk-scope filters --------------------------------------------------------------------------


def _by_prompt(rows: list[Candidate]) -> dict[str, list[int]]:
    """Positions in ``rows`` of each prompt's candidates, prompts in first-seen order."""
    groups: dict[str, list[int]] = {}
    for position, c in enumerate(rows):
        groups.setdefault(c.row.id, []).append(position)
    return groups


@dataclass(frozen=True)
class KeepAll:
    """Keep every candidate (``none``)."""

    scope: ClassVar[Literal["chunk"]] = "chunk"

    def __call__(self, rows: list[Candidate]) -> list[Candidate]:
        return list(rows)


@dataclass(frozen=True)
class Threshold:
    """Keep candidates scoring at least ``min_score``."""

    min_score: float
    scope: ClassVar[Literal["chunk"]] = "chunk"

    def __call__(self, rows: list[Candidate]) -> list[Candidate]:
        return [c for c in rows if c.score >= self.min_score]


@dataclass(frozen=True)
class SigmoidThreshold:
    """Keep candidates whose sigmoid(score) is at least ``threshold``: one cutoff for any logit scale."""

    threshold: float
    scope: ClassVar[Literal["chunk"]] = "chunk"

    def __call__(self, rows: list[Candidate]) -> list[Candidate]:
        return [c for c in rows if logistic(c.score) >= self.threshold]


@dataclass(frozen=True)
class TopK:
    """Keep each prompt's ``k`` best candidates; ties go to the lower generation index, NaN scores rank last."""

    k: int
    scope: ClassVar[Literal["chunk"]] = "chunk"

    def __call__(self, rows: list[Candidate]) -> list[Candidate]:
        def order(position: int) -> tuple[float, int, int]:
            score = rows[position].score
            return (math.inf if math.isnan(score) else -score, rows[position].index, position)

        kept: set[int] = set()
        for positions in _by_prompt(rows).values():
            kept.update(sorted(positions, key=order)[: self.k])
        return [c for position, c in enumerate(rows) if position in kept]


@dataclass(frozen=True)
class RandomFraction:
    """Keep about ``fraction`` of the candidates, chosen by a hash of (seed, row id, index).

    A hash rather than a random stream, so the choice of a candidate does not depend on what else
    is in its chunk, on chunk size, or on a job being resumed.
    """

    fraction: float
    seed: int = 0
    scope: ClassVar[Literal["chunk"]] = "chunk"

    def draw(self, c: Candidate) -> float:
        """The candidate's uniform draw in [0, 1)."""
        key = f"{self.seed}\x00{c.row.id}\x00{c.index}".encode()
        digest = hashlib.blake2b(key, digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    def __call__(self, rows: list[Candidate]) -> list[Candidate]:
        return [c for c in rows if self.draw(c) < self.fraction]


def normalize_text(text: str) -> str:
    """Casefold, collapse runs of whitespace to one space, strip: what ``dedupe`` compares by default."""
    return " ".join(text.casefold().split())


@dataclass(frozen=True)
class Dedupe:
    """Drop a candidate whose response repeats an earlier candidate of the same prompt."""

    normalize: bool = True
    scope: ClassVar[Literal["chunk"]] = "chunk"

    def __call__(self, rows: list[Candidate]) -> list[Candidate]:
        seen: set[tuple[str, str]] = set()
        kept: list[Candidate] = []
        for c in rows:
            key = (c.row.id, normalize_text(c.text) if self.normalize else c.text)
            if key not in seen:
                seen.add(key)
                kept.append(c)
        return kept


@dataclass(frozen=True)
class ChunkChain:
    """Chunk-scope filters applied in order, each to what the previous one kept."""

    filters: tuple[Filter, ...]
    scope: ClassVar[Literal["chunk"]] = "chunk"

    def __call__(self, rows: list[Candidate]) -> list[Candidate]:
        for f in self.filters:
            rows = f(rows)
        return list(rows)


# --- factories (the entry points) -----------------------------------------------------------------


def none_filter(params: dict[str, Any]) -> Filter:
    """``none``: keep everything."""
    _params("none", params, {})
    return KeepAll()


def threshold(params: dict[str, Any]) -> Filter:
    """``threshold`` {min_score: float}: keep score >= min_score."""
    checked = _params("threshold", params, {"min_score": (float, _REQUIRED)})
    return Threshold(min_score=checked["min_score"])


def best_of_n(params: dict[str, Any]) -> Filter:
    """``best_of_n`` {}: each prompt's single best candidate (ties: lowest index)."""
    _params("best_of_n", params, {})
    return TopK(k=1)


def top_k(params: dict[str, Any]) -> Filter:
    """``top_k`` {k: int >= 1}: each prompt's k best candidates (ties: lowest index)."""
    checked = _params("top_k", params, {"k": (int, _REQUIRED)})
    _at_least_one("top_k", "k", checked["k"])
    return TopK(k=checked["k"])


def random_filter(params: dict[str, Any]) -> Filter:
    """``random`` {fraction: 0..1, seed: int = 0}: a reproducible random sample."""
    checked = _params("random", params, {"fraction": (float, _REQUIRED), "seed": (int, 0)})
    _in_range("random", "fraction", checked["fraction"], 0.0, 1.0)
    return RandomFraction(fraction=checked["fraction"], seed=checked["seed"])


def dedupe(params: dict[str, Any]) -> Filter:
    """``dedupe`` {normalize: bool = true}: drop repeated responses within a prompt."""
    checked = _params("dedupe", params, {"normalize": (bool, True)})
    return Dedupe(normalize=checked["normalize"])


def sigmoid_filter(params: dict[str, Any]) -> Filter:
    """``sigmoid`` {threshold: 0..1 = 0.5}: keep sigmoid(score) >= threshold."""
    checked = _params("sigmoid", params, {"threshold": (float, 0.5)})
    _in_range("sigmoid", "threshold", checked["threshold"], 0.0, 1.0)
    return SigmoidThreshold(threshold=checked["threshold"])


def _chain_of(filter_name: str, filters: list[Filter]) -> Filter:
    for position, f in enumerate(filters[:-1]):
        if is_global(f):
            raise _bad(filter_name, f"filters[{position}]: only the last filter of a chain may be global")
    last = filters[-1]
    if isinstance(last, GlobalChain):  # flatten, so ``filters`` ends in the one filter that owns the cutoff
        return GlobalChain(head=(*filters[:-1], *last.head), last=last.last)
    if is_global(last):
        return GlobalChain(head=tuple(filters[:-1]), last=last)
    return ChunkChain(filters=tuple(filters))


def chain(params: dict[str, Any]) -> Filter:
    """``chain`` {filters: [{name, params}, ...]}: apply in order; only the last may be global."""
    checked = _params("chain", params, {"filters": (list, _REQUIRED)})
    specs: list[Any] = checked["filters"]
    if not specs:
        raise _bad("chain", "filters: must name at least one filter")
    filters: list[Filter] = []
    for position, spec in enumerate(specs):
        if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str) or set(spec) - {"name", "params"}:
            raise _bad("chain", f"filters[{position}]: expected {{name: str, params: object}}, got {spec!r}")
        filters.append(build_filter(spec["name"], spec.get("params")))
    return _chain_of("chain", filters)


def top_p(params: dict[str, Any]) -> Filter:
    """``top_p`` {p: 0 < p <= 1}: the best p fraction of the whole job (global)."""
    checked = _params("top_p", params, {"p": (float, _REQUIRED)})
    _in_range("top_p", "p", checked["p"], 0.0, 1.0, low_open=True)
    return TopP(p=checked["p"])


def percentile(params: dict[str, Any]) -> Filter:
    """``percentile`` {p: 0..100}: keep scores at or above the p-th percentile of the whole job (global)."""
    checked = _params("percentile", params, {"p": (float, _REQUIRED)})
    _in_range("percentile", "p", checked["p"], 0.0, 100.0)
    return Percentile(p=checked["p"])


def top_k_top_p(params: dict[str, Any]) -> Filter:
    """``top_k_top_p`` {k, p}: each prompt's k best, then the best p fraction of those (global)."""
    checked = _params("top_k_top_p", params, {"k": (int, _REQUIRED), "p": (float, _REQUIRED)})
    _at_least_one("top_k_top_p", "k", checked["k"])
    _in_range("top_k_top_p", "p", checked["p"], 0.0, 1.0, low_open=True)
    return GlobalChain(head=(TopK(k=checked["k"]),), last=TopP(p=checked["p"]))


# --- registry -------------------------------------------------------------------------------------


@cache
def filter_factories() -> dict[str, FilterFactory]:
    """Every filter factory by name, from the ``winnow.filters`` entry points."""
    return load_group(ENTRY_POINT_GROUP, callable, "callable")


def build_filter(name: str, params: dict[str, Any] | None) -> Filter:
    """The filter a seed spec's ``{name, params}`` names, its params checked now (submit time)."""
    factories = filter_factories()
    factory = factories.get(name)
    if factory is None:
        raise InvalidRequest(f"unknown filtering function {name!r}", f"known: {', '.join(sorted(factories))}")
    f = factory({} if params is None else params)
    if f.scope not in ("chunk", "global") or (
        f.scope == "global" and not (callable(getattr(f, "cutoff", None)) and callable(getattr(f, "prefilter", None)))
    ):
        raise TypeError(f"filter {name!r} has scope {f.scope!r} but not the matching methods (see GlobalFilter)")
    return f


__all__ = [
    "ENTRY_POINT_GROUP",
    "ChunkChain",
    "Dedupe",
    "Filter",
    "FilterFactory",
    "GlobalChain",
    "GlobalFilter",
    "KeepAll",
    "Percentile",
    "RandomFraction",
    "Scores",
    "SigmoidThreshold",
    "Threshold",
    "TopK",
    "TopP",
    "best_of_n",
    "build_filter",
    "chain",
    "dedupe",
    "filter_factories",
    "is_global",
    "none_filter",
    "normalize_text",
    "percentile",
    "random_filter",
    "sigmoid_filter",
    "threshold",
    "top_k",
    "top_k_top_p",
    "top_p",
]


def split_filter(spec: SubmitJobRequest) -> tuple[Callable[[list[Candidate]], list[Candidate]], GlobalFilter | None]:
    """The filtering function as (what runs on each chunk, what needs the whole dataset or None)."""
    built = build_filter(spec.filtering_function.name, spec.filtering_function.params)
    if is_global(built):
        return built.prefilter, built
    return built, None

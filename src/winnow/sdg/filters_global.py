"""Global-scope filters: one score cutoff over every candidate of the job (``top_p``, ``percentile``,
and a chain that ends in one). How the runner applies them: ``winnow.sdg.filters``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from winnow.sdg.filter_types import Filter, GlobalFilter, Scores
from winnow.sdg.rows import Candidate


def _keep_from_cutoff(f: GlobalFilter, rows: list[Candidate]) -> list[Candidate]:
    """The whole global rule in memory: prefilter, cut off over the survivors, keep ``score >= cutoff``."""
    rows = f.prefilter(rows)
    cutoff = f.cutoff(np.array([c.score for c in rows], dtype=np.float64))
    return [c for c in rows if c.score >= cutoff]


def _finite(scores: Scores) -> Scores:
    """Scores without NaN: a NaN never passes ``>=`` and must not move the cutoff either."""
    return scores[~np.isnan(scores)]


@dataclass(frozen=True)
class _Quantile:
    """A cutoff at a quantile of the finite scores (none: nothing is kept); ``_at`` says which."""

    p: float
    scope: ClassVar[Literal["global"]] = "global"

    def prefilter(self, rows: list[Candidate]) -> list[Candidate]:
        return list(rows)

    def cutoff(self, scores: Scores) -> float:
        values = _finite(scores)
        return math.inf if values.size == 0 else self._at(values)

    def _at(self, values: Scores) -> float:
        raise NotImplementedError

    def __call__(self, rows: list[Candidate]) -> list[Candidate]:
        return _keep_from_cutoff(self, rows)


@dataclass(frozen=True)
class TopP(_Quantile):
    """Keep the best ``p`` fraction of all candidates.

    Cutoff: the (1 - p) quantile with numpy's ``method="higher"``, so it is always a real score and
    at least one candidate is kept. Every candidate tied with the cutoff is kept, so ties can keep
    more than ``p``; without ties it keeps 1 + floor(p * (n - 1)) of n.
    """

    def _at(self, values: Scores) -> float:
        return float(np.quantile(values, 1.0 - self.p, method="higher"))


@dataclass(frozen=True)
class Percentile(_Quantile):
    """Keep candidates scoring at least the ``p``-th percentile of all scores (numpy's linear interpolation).

    An interpolated cutoff keeps the same candidates as the next real score above it, so ties at
    the cutoff are all kept; ``p = 0`` keeps everything, ``p = 100`` keeps the maximum and its ties.
    """

    def _at(self, values: Scores) -> float:
        return float(np.percentile(values, self.p))


@dataclass(frozen=True)
class GlobalChain:
    """Chunk-scope filters, then one global filter last: the chunk part runs before the spill."""

    head: tuple[Filter, ...]
    last: GlobalFilter
    scope: ClassVar[Literal["global"]] = "global"

    @property
    def filters(self) -> tuple[Filter, ...]:
        """Every filter in order, the global one last (as ``ChunkChain.filters``)."""
        return (*self.head, self.last)

    def prefilter(self, rows: list[Candidate]) -> list[Candidate]:
        for f in self.head:
            rows = f(rows)
        return self.last.prefilter(rows)

    def cutoff(self, scores: Scores) -> float:
        return self.last.cutoff(scores)

    def __call__(self, rows: list[Candidate]) -> list[Candidate]:
        return _keep_from_cutoff(self, rows)

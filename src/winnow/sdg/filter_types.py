"""What a filtering function is (a chunk-scope or global-scope ``Filter``) and how a filter factory
checks the params a seed spec gives it; the filters themselves are ``winnow.sdg.filters`` (chunk scope,
factories) and ``winnow.sdg.filters_global`` (one cutoff over the whole job)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol, TypeGuard

import numpy as np
import numpy.typing as npt

from winnow.errors import InvalidRequest
from winnow.sdg.rows import Candidate

Scores = npt.NDArray[np.floating[Any]]


class Filter(Protocol):
    """``rows -> rows`` as the seed spec says, plus the scope that tells the runner how to call it."""

    @property
    def scope(self) -> Literal["chunk", "global"]: ...

    def __call__(self, rows: list[Candidate]) -> list[Candidate]: ...


class GlobalFilter(Filter, Protocol):
    """A filter whose rule is one score cutoff computed over every candidate of the job."""

    @property
    def scope(self) -> Literal["global"]: ...

    def prefilter(self, rows: list[Candidate]) -> list[Candidate]:
        """Chunk-scope work to do before spilling (a chain's leading filters); identity for most."""
        ...

    def cutoff(self, scores: Scores) -> float:
        """The lowest score that is kept, given the scores of every candidate that passed ``prefilter``."""
        ...


FilterFactory = Callable[[dict[str, Any]], Filter]


def is_global(f: Filter) -> TypeGuard[GlobalFilter]:
    """Whether the runner must spill and compute a cutoff rather than filter chunk by chunk."""
    return f.scope == "global"


# --- params -------------------------------------------------------------------------------------

REQUIRED = object()


def bad_params(filter_name: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"invalid params for filter {filter_name!r}", message)


def check_params(
    filter_name: str, params: Mapping[str, Any], accepted: dict[str, tuple[type, object]]
) -> dict[str, Any]:
    """Check names and types against ``accepted`` ({param: (type, default or REQUIRED)}), fill defaults.

    JSON has one number type, so a float param takes an int; a bool is never taken as a number.
    """
    if not isinstance(params, Mapping):
        raise bad_params(filter_name, f"params must be an object, got {type(params).__name__}")
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise bad_params(
            filter_name, f"unknown param(s) {', '.join(unknown)}; accepted: {', '.join(accepted) or 'none'}"
        )
    checked: dict[str, Any] = {}
    for name, (kind, default) in accepted.items():
        if name not in params:
            if default is REQUIRED:
                raise bad_params(filter_name, f"missing required param {name!r}")
            checked[name] = default
            continue
        checked[name] = _typed(filter_name, name, kind, params[name])
    return checked


def _typed(filter_name: str, name: str, kind: type, value: Any) -> Any:
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise bad_params(filter_name, f"{name}: expected {kind.__name__}, got {type(value).__name__} {value!r}")
    if kind is float:
        value = float(value)
        if not math.isfinite(value):
            raise bad_params(filter_name, f"{name}: must be finite, got {value!r}")
    return value


def in_range(filter_name: str, name: str, value: float, low: float, high: float, *, low_open: bool = False) -> None:
    if value < low or value > high or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise bad_params(filter_name, f"{name}: must be in {bracket}{low:g}, {high:g}], got {value!r}")


def at_least_one(filter_name: str, name: str, value: int) -> None:
    if value < 1:
        raise bad_params(filter_name, f"{name}: must be >= 1, got {value!r}")

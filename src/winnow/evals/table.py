"""The comparison table of an evaluation, computed in one pass over its per-row results."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from winnow.schemas.evals import Baseline, ComparisonRow


def _percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def comparison(records: Iterable[dict[str, Any]], pairs: list[tuple[str, str]], base: Baseline) -> list[ComparisonRow]:
    """One row per (template, model), in ``pairs`` order. Win rates compare, row by row, each pair's
    score with the baseline's on the same dataset row (rows either side failed on are left out)."""
    scores: dict[tuple[str, str], dict[str, float]] = {pair: {} for pair in pairs}
    latency: dict[tuple[str, str], list[float]] = {pair: [] for pair in pairs}
    errors = dict.fromkeys(pairs, 0)
    tokens = {pair: [0, 0] for pair in pairs}
    cost = dict.fromkeys(pairs, 0.0)
    for record in records:
        pair = (record["template"], record["model"])
        if record.get("error"):
            errors[pair] += 1
            continue
        scores[pair][record["id"]] = float(record["score"])
        latency[pair].append(float(record["latency_ms"]))
        tokens[pair][0] += int(record["input_tokens"])
        tokens[pair][1] += int(record["output_tokens"])
        cost[pair] += float(record["cost_usd"])
    reference = scores[(base.template, base.model)]
    table = []
    for pair in pairs:
        values = list(scores[pair].values())
        mean = statistics.fmean(values) if values else None
        std = statistics.pstdev(values) if len(values) > 1 else (0.0 if values else None)
        wins = ties = losses = 0
        if pair != (base.template, base.model):
            for row_id, value in scores[pair].items():
                if row_id in reference:
                    other = reference[row_id]
                    wins += value > other
                    ties += value == other
                    losses += value < other
        compared = wins + ties + losses
        table.append(
            ComparisonRow(
                template=pair[0],
                model=pair[1],
                baseline=pair == (base.template, base.model),
                rows=len(values),
                errors=errors[pair],
                mean_score=mean,
                std_score=std,
                ci95=1.96 * std / math.sqrt(len(values)) if std is not None and values else None,
                min_score=min(values) if values else None,
                max_score=max(values) if values else None,
                win_rate=(wins + ties / 2) / compared if compared else None,
                wins=wins,
                ties=ties,
                losses=losses,
                latency_p50_ms=_percentile(latency[pair], 0.5),
                latency_p95_ms=_percentile(latency[pair], 0.95),
                input_tokens=tokens[pair][0],
                output_tokens=tokens[pair][1],
                cost_usd=round(cost[pair], 10),
            )
        )
    return table


def read_records(path: Path) -> Iterable[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)

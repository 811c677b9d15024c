"""What a finished job leaves beside its output: a summary JSON and a score histogram PNG."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from winnow.schemas.sdg import JobCounts, SubmitJobRequest
from winnow.sdg.outputs import pair_stats, preference_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

BINS = 40
RAW_COLOR, KEPT_COLOR = "tab:blue", "tab:orange"


def summary_path(output: Path) -> Path:
    return output.with_name(output.stem + ".summary.json")


def histogram_path(output: Path) -> Path:
    return output.with_name(output.stem + ".histogram.png")


def _load(path: Path) -> np.ndarray[Any, np.dtype[np.float32]]:
    if not path.exists() or path.stat().st_size == 0:
        return np.zeros(0, dtype=np.float32)
    return np.memmap(path, dtype=np.float32, mode="r")


def _stats(values: np.ndarray[Any, np.dtype[np.float32]]) -> dict[str, float] | None:
    if len(values) == 0:
        return None
    return {
        "count": len(values),
        "mean": float(np.mean(values)),
        "std": float(np.std(values)),
        "min": float(np.min(values)),
        "p50": float(np.median(values)),
        "max": float(np.max(values)),
    }


def write_summary(
    work: Path,
    output: Path,
    spec: SubmitJobRequest,
    counts: JobCounts,
    timings: dict[str, float],
    diversity: dict[str, Any] | None = None,
) -> dict[str, Any]:
    generated = counts.responses_generated
    summary = {
        "output": str(output),
        "counts": counts.model_dump(),
        "kept_ratio": counts.rows_kept / generated if generated else 0.0,
        "raw_score": _stats(_load(work / "raw_scores")),
        "kept_score": _stats(_load(work / "kept_scores")),
        "durations_s": {k: round(v, 4) for k, v in timings.items()},
        "tokens": {"input": counts.input_tokens, "output": counts.output_tokens},
        "params": spec.model_dump(mode="json"),
    }
    if "preference" in spec.outputs:
        summary["preference"] = pair_stats(preference_path(output))
    if diversity is not None:  # a job with a semantic filter (winnow.sdg.semantic)
        summary["diversity"] = diversity
    path = summary_path(output)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, path)
    return summary


def histogram_figure(
    raw: np.ndarray[Any, np.dtype[np.float32]],
    kept: np.ndarray[Any, np.dtype[np.float32]],
    spec: SubmitJobRequest,
    job: str,
) -> Figure:
    """The raw reward of every response and the final score of the kept rows, titled with the job,
    its models and its filter.

    With the ``raw`` scoring function a kept row's score is its raw reward, so both series share one
    axis and one set of bin edges (kept drawn over all). Any other scoring function rescales (sigmoid
    to 0..1, zscore, rank, matches), so each series gets its own panel, axis and bins: on the raw
    axis the kept rows would be a sliver, or lie outside it."""
    from matplotlib.figure import Figure  # imported on first use: it is slow to import

    raw, kept = np.asarray(raw, dtype=np.float64), np.asarray(kept, dtype=np.float64)
    scoring = spec.scoring_function
    shared = scoring.split(":", 1)[0] == "raw"
    figure = Figure(figsize=(7, 4.5) if shared else (11, 4.5), dpi=100)
    raw_label = f"raw reward, all responses ({len(raw)})"
    kept_label = f"score, kept rows ({len(kept)})"
    if shared:
        axis = figure.subplots()
        edges = np.histogram_bin_edges(np.concatenate([raw, kept]), bins=BINS).tolist()
        axis.hist(raw, bins=edges, alpha=0.5, color=RAW_COLOR, label=raw_label)
        if len(kept):
            axis.hist(kept, bins=edges, alpha=0.7, color=KEPT_COLOR, label=kept_label)
        axis.set_xlabel("raw reward = score (scoring: raw)")
        axis.set_ylabel("responses")
        axis.legend()
    else:
        raw_axis, kept_axis = figure.subplots(1, 2)
        raw_axis.hist(raw, bins=BINS, color=RAW_COLOR, alpha=0.8)
        raw_axis.set_title(raw_label, fontsize="medium")
        raw_axis.set_xlabel("raw reward")
        raw_axis.set_ylabel("responses")
        if len(kept):
            kept_axis.hist(kept, bins=BINS, color=KEPT_COLOR, alpha=0.8)
        else:
            kept_axis.text(0.5, 0.5, "no rows kept", ha="center", va="center", transform=kept_axis.transAxes)
            kept_axis.set_xticks([])
            kept_axis.set_yticks([])
        kept_axis.set_title(kept_label, fontsize="medium")
        kept_axis.set_xlabel(f"score ({scoring})")
        kept_axis.set_ylabel("rows")
    flt = spec.filtering_function
    params = f" {json.dumps(flt.params)}" if flt.params else ""
    details = f"model {spec.model} · reward model {spec.reward_model} · scoring {scoring} · filter {flt.name}{params}"
    width = 80 if shared else 125
    headline = f"{job}: {len(kept)} of {len(raw)} responses kept"
    figure.suptitle(headline + "\n" + textwrap.fill(details, width, break_on_hyphens=False), fontsize="medium")
    figure.tight_layout()
    return figure


def write_histogram(work: Path, output: Path, spec: SubmitJobRequest, job: str) -> Path | None:
    """The job's histogram PNG beside its output (see ``histogram_figure``); None without scores."""
    raw, kept = _load(work / "raw_scores"), _load(work / "kept_scores")
    if len(raw) == 0:
        return None
    figure = histogram_figure(raw, kept, spec, job)
    path = histogram_path(output)
    tmp = path.with_name(path.stem + ".tmp.png")
    figure.savefig(tmp)
    os.replace(tmp, path)
    return path

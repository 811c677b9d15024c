"""What a finished job leaves beside its output: a summary JSON and a score histogram PNG."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from winnow.schemas.sdg import JobCounts, SubmitJobRequest


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
    work: Path, output: Path, spec: SubmitJobRequest, counts: JobCounts, timings: dict[str, float]
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
    path = summary_path(output)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, path)
    return summary


def write_histogram(work: Path, output: Path) -> Path | None:
    """Raw reward scores of every response against the final scores of the kept rows."""
    raw, kept = _load(work / "raw_scores"), _load(work / "kept_scores")
    if len(raw) == 0:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4), dpi=100)
    axis.hist(np.asarray(raw), bins=40, alpha=0.6, label=f"raw reward, all responses ({len(raw)})")
    if len(kept):
        axis.hist(np.asarray(kept), bins=40, alpha=0.6, label=f"score, kept rows ({len(kept)})")
    axis.set_xlabel("score")
    axis.set_ylabel("rows")
    axis.legend()
    figure.tight_layout()
    path = histogram_path(output)
    tmp = path.with_name(path.stem + ".tmp.png")
    figure.savefig(tmp)
    plt.close(figure)
    os.replace(tmp, path)
    return path

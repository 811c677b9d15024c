"""The job's score histogram: each series visible on an axis of its own scale, titled with the job."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from PIL import Image

from winnow.schemas.sdg import SubmitJobRequest
from winnow.sdg.report import histogram_figure, histogram_path, write_histogram
from winnow.sdg.scoring import logistic

RNG = np.random.default_rng(7)
RAW = RNG.normal(0.0, 2.5, 500).astype(np.float32)  # reward-model logits, about -8..8


def _spec(scoring: str, filter_name: str, params: dict[str, Any]) -> SubmitJobRequest:
    return SubmitJobRequest(
        model="demo-lm",
        prompts_path="prompts.jsonl",
        reward_model="demo-rm",
        scoring_function=scoring,
        filtering_function={"name": filter_name, "params": params},
    )


def _bars(axis: Axes) -> list[BarContainer]:
    return [c for c in axis.containers if isinstance(c, BarContainer)]


def _edges(bars: BarContainer) -> list[float]:
    return [p.get_x() for p in bars.patches] + [bars.patches[-1].get_x() + bars.patches[-1].get_width()]


def _assert_drawn(axis: Axes, bars: BarContainer, values: np.ndarray[Any, Any]) -> None:
    """Non-empty bars that count every value, on an x-range that holds all of them."""
    heights = [p.get_height() for p in bars.patches]
    assert sum(heights) == len(values) > 0
    low, high = axis.get_xlim()
    assert low <= float(values.min()) and float(values.max()) <= high


def _title(figure: Figure) -> str:
    return figure.get_suptitle()


def test_a_rescaling_score_gets_its_own_axis() -> None:
    """sigmoid: kept scores lie in 0..1 while raw rewards span about -8..8."""
    scores = np.array([logistic(float(x)) for x in RAW], dtype=np.float32)
    kept = scores[scores >= 0.8]
    figure = histogram_figure(RAW, kept, _spec("sigmoid", "threshold", {"threshold": 0.8}), "job-sig")
    raw_axis, kept_axis = figure.axes
    (raw_bars,) = _bars(raw_axis)
    (kept_bars,) = _bars(kept_axis)
    _assert_drawn(raw_axis, raw_bars, RAW)
    _assert_drawn(kept_axis, kept_bars, kept)
    # the kept series fills its axis instead of hiding in one bin of the raw one
    assert kept_axis.get_xlim()[1] - kept_axis.get_xlim()[0] < 1
    assert sum(p.get_height() > 0 for p in kept_bars.patches) > 10
    title = _title(figure)
    for name in ("job-sig", "demo-lm", "demo-rm", "sigmoid", "threshold", "0.8"):
        assert name in title


def test_raw_scores_share_one_axis_and_the_same_bins() -> None:
    kept = np.sort(RAW)[-100:]
    figure = histogram_figure(RAW, kept, _spec("raw", "top_k", {"k": 1}), "job-raw")
    (axis,) = figure.axes
    raw_bars, kept_bars = _bars(axis)
    _assert_drawn(axis, raw_bars, RAW)
    _assert_drawn(axis, kept_bars, kept)
    assert _edges(raw_bars) == _edges(kept_bars)
    title = _title(figure)
    for name in ("job-raw", "demo-lm", "demo-rm", "top_k"):
        assert name in title


def test_no_kept_rows_still_draws_the_raw_rewards() -> None:
    figure = histogram_figure(RAW, np.zeros(0, dtype=np.float32), _spec("zscore", "none", {}), "job-none")
    raw_axis, kept_axis = figure.axes
    _assert_drawn(raw_axis, _bars(raw_axis)[0], RAW)
    assert not _bars(kept_axis)


@pytest.mark.parametrize("scoring", ["sigmoid", "raw"])
def test_the_png_decodes(tmp_path: Path, scoring: str) -> None:
    work, output = tmp_path / "work", tmp_path / "out.jsonl"
    work.mkdir()
    (work / "raw_scores").write_bytes(RAW.tobytes())
    (work / "kept_scores").write_bytes(RAW[:50].tobytes())
    path = write_histogram(work, output, _spec(scoring, "none", {}), "job-png")
    assert path == histogram_path(output)
    with Image.open(path) as image:
        image.load()
        assert image.format == "PNG" and image.size[0] >= 600
    assert not list(tmp_path.glob("*.tmp.png"))


def test_no_responses_no_histogram(tmp_path: Path) -> None:
    assert write_histogram(tmp_path, tmp_path / "out.jsonl", _spec("raw", "none", {}), "job-empty") is None


@pytest.mark.parametrize("job_id", ["job-123", None])
def test_a_run_titles_its_histogram_with_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, job_id: str | None
) -> None:
    """The runner hands its spec and the job's id (an in-process run: the output's name) to the histogram."""
    from tests.sdg.test_pipeline import SMALL, _spec
    from winnow.config import Settings
    from winnow.sdg import runner
    from winnow.sdg.reward import open_registries
    from winnow.sdg.service import build_plan, check_spec
    from winnow.sdg.workfiles import FileCheckpoint

    titles: list[str] = []

    def spy(raw: Any, kept: Any, spec: SubmitJobRequest, job: str) -> Figure:
        figure = histogram_figure(raw, kept, spec, job)
        titles.append(figure.get_suptitle())
        return figure

    monkeypatch.setattr("winnow.sdg.report.histogram_figure", spy)
    spec = _spec(scoring_function="sigmoid", filtering_function={"name": "best_of_n", "params": {}})
    settings = Settings(data_dir=tmp_path / "data", workers=0, data_roots=[SMALL.parent])
    output, work = tmp_path / "out.jsonl", tmp_path / "work"

    async def go() -> None:
        async with open_registries(settings) as (models, rewards):
            plan = build_plan(spec, check_spec(spec, settings, models, rewards), models, rewards)
            plan.job_id = job_id
            await runner.LocalRunner(plan, work, output, FileCheckpoint(work / "checkpoint.json")).run()

    asyncio.run(go())
    (title,) = titles
    assert (job_id or "out.jsonl") in title
    assert all(name in title for name in ("demo-lm", "demo-rm", "sigmoid", "best_of_n"))
    assert histogram_path(output).exists()

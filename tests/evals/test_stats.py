"""An evaluation's comparison table, every column recomputed from its per-row results file with
numpy: mean, std, 95% interval, min/max, errors (rows a model could not serve, left out of every
statistic), win rates against a baseline on another model, latency p50/p95, tokens and cost."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.conftest import DEMO_LM, DEMO_PROMPTS, bearer, running_worker, wait_for
from winnow.api.app import create_app
from winnow.config import ModelConfig, Settings
from winnow.evals.table import comparison
from winnow.schemas.evals import Baseline

# lm-a is demo-lm as shipped (a 64-token context); lm-b the same weights with a 30-token context, so
# prompts that lm-a serves fail on it, row by row.
MODELS = [
    ModelConfig(id="lm-a", path=str(DEMO_LM), context_length=64, input_price_per_mtok=2.0, output_price_per_mtok=8.0),
    ModelConfig(id="lm-b", path=str(DEMO_LM), context_length=30, input_price_per_mtok=1.0, output_price_per_mtok=3.0),
]
TEMPLATES = [{"name": "plain", "template": "{prompt}"}, {"name": "terse", "template": "Number only. {prompt}"}]
# Rendered with the chat template, "What is A+B?" is 13 tokens plain and 26 terse: both fit both models.
LONGER = {
    "medium": "Please tell me: what is 17+25?",  # 32 plain, 45 terse: too long for lm-b only
    "five": "What is 17+25? " * 5,  # 58 plain (fits lm-a), 71 terse: too long but for plain x lm-a
    "six": "What is 17+25? " * 6,  # too long everywhere
}
# Rows each (template, model) cannot serve, by the token counts above; in the table's order.
ERRORS = {
    ("plain", "lm-a"): {"six"},
    ("plain", "lm-b"): {"medium", "five", "six"},
    ("terse", "lm-a"): {"five", "six"},
    ("terse", "lm-b"): {"medium", "five", "six"},
}
BASELINE = ("plain", "lm-b")


@pytest.fixture
def evaluation(tmp_path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """2 templates x 2 models, sampled (seeded) and scored by demo-rm: the evaluation and its results."""
    settings = Settings(data_dir=tmp_path / "data", workers=0, models=MODELS)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        runtime = client.app.state.runtime  # type: ignore[attr-defined]
        rows = [json.loads(line) for line in DEMO_PROMPTS.read_text().splitlines()[:8]]
        rows += [{"id": name, "prompt": prompt} for name, prompt in LONGER.items()]
        (runtime.settings.data_dir / "mixed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        key = runtime.keys.create("stats").key
        body = {
            "dataset_path": "mixed.jsonl",
            "templates": TEMPLATES,
            "models": ["lm-a", "lm-b"],
            "reward_model": "demo-rm",
            "scoring_function": "raw",
            "baseline": {"template": BASELINE[0], "model": BASELINE[1]},
            "max_tokens": 4,
            "temperature": 1.0,
            "seed": 5,
            "batch_size": 1,  # a batched call per row and model: latencies differ row by row
        }
        submitted = client.post("/api/v1/evaluations", json=body, headers=bearer(key))
        assert submitted.status_code == 202, submitted.text
        path = f"/api/v1/evaluations/{submitted.json()['id']}"
        with running_worker(runtime.settings):
            current = wait_for(client, key, path)
        assert current["status"] == "completed", current
        results = client.get(f"{path}/results", headers=bearer(key))
        assert results.status_code == 200, results.text
        return current, [json.loads(line) for line in results.text.splitlines()]


def test_error_rows_are_counted_and_left_out(evaluation: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    current, records = evaluation
    assert len(records) == 11 * 4
    for pair, failed in ERRORS.items():
        mine = [r for r in records if (r["template"], r["model"]) == pair]
        assert {r["id"] for r in mine if "error" in r} == failed, pair
        assert all("context length" in r["error"] for r in mine if "error" in r)
        assert all("score" not in r and "latency_ms" not in r for r in mine if "error" in r)
    errors = sum(len(failed) for failed in ERRORS.values())
    assert current["counts"] == {"rows_total": 11, "rows_done": 11, "generations": 44 - errors, "errors": errors}
    table = {(row["template"], row["model"]): row for row in current["table"]}
    assert [(row["template"], row["model"]) for row in current["table"]] == list(ERRORS)
    for pair, failed in ERRORS.items():
        assert (table[pair]["rows"], table[pair]["errors"]) == (11 - len(failed), len(failed)), pair


def test_table_statistics_match_the_results_file(evaluation: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    current, records = evaluation
    served = [r for r in records if "error" not in r]
    scores = {(r["id"], r["template"], r["model"]): r["score"] for r in served}
    baseline = {row_id: score for (row_id, t, m), score in scores.items() if (t, m) == BASELINE}
    assert len(set(scores.values())) > 4, "sampled responses should score differently"
    for row in current["table"]:
        pair = (row["template"], row["model"])
        mine = [r for r in served if (r["template"], r["model"]) == pair]
        values = np.array([r["score"] for r in mine], dtype=float)
        latencies = np.array([r["latency_ms"] for r in mine], dtype=float)
        std = float(np.std(values))  # the population deviation (ddof=0)
        assert row["rows"] == len(values) >= 7
        assert row["mean_score"] == pytest.approx(float(np.mean(values)), abs=1e-9), pair
        assert row["std_score"] == pytest.approx(std, abs=1e-9), pair
        assert row["std_score"] > 0
        assert row["ci95"] == pytest.approx(1.96 * std / math.sqrt(len(values)), abs=1e-9), pair
        assert (row["min_score"], row["max_score"]) == (float(values.min()), float(values.max())), pair
        assert row["latency_p50_ms"] == pytest.approx(float(np.percentile(latencies, 50)), abs=1e-9), pair
        assert row["latency_p95_ms"] == pytest.approx(float(np.percentile(latencies, 95)), abs=1e-9), pair
        tokens_in = sum(r["input_tokens"] for r in mine)
        tokens_out = sum(r["output_tokens"] for r in mine)
        assert (row["input_tokens"], row["output_tokens"]) == (tokens_in, tokens_out), pair
        assert row["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in mine), abs=1e-12), pair
        prices = {"lm-a": (2.0, 8.0), "lm-b": (1.0, 3.0)}[pair[1]]
        assert row["cost_usd"] == pytest.approx((tokens_in * prices[0] + tokens_out * prices[1]) / 1e6, abs=1e-12)

        # Win rate against the baseline, row by row over rows both served; ties count half.
        if pair == BASELINE:
            assert (row["win_rate"], row["wins"], row["ties"], row["losses"]) == (None, 0, 0, 0)
            continue
        both = [(scores[(i, *pair)], baseline[i]) for (i, t, m) in scores if (t, m) == pair and i in baseline]
        wins = sum(a > b for a, b in both)
        ties = sum(a == b for a, b in both)
        losses = sum(a < b for a, b in both)
        assert (row["wins"], row["ties"], row["losses"]) == (wins, ties, losses), pair
        assert wins + ties + losses == 8 == len(both)  # the 8 short rows: every pair served them
        assert row["win_rate"] == pytest.approx((wins + ties / 2) / len(both), abs=1e-12), pair
    # plain x lm-a asks the same model weights, with the same seeds, as the baseline: all ties.
    plain_a = next(row for row in current["table"] if (row["template"], row["model"]) == ("plain", "lm-a"))
    assert (plain_a["ties"], plain_a["win_rate"]) == (8, 0.5)
    # terse pairs answer other prompts, so some rows differ from the baseline's.
    terse = [row for row in current["table"] if row["template"] == "terse"]
    assert all(row["wins"] + row["losses"] > 0 for row in terse)


def test_comparison_of_hand_made_records_matches_numpy() -> None:
    """The same arithmetic on records whose latencies all differ, so each percentile interpolates."""
    rng = np.random.default_rng(7)
    pairs = [("t", "m1"), ("t", "m2")]
    records: list[dict[str, Any]] = []
    for i in range(23):
        for template, model in pairs:
            record = {"id": f"r{i}", "template": template, "model": model}
            if (i % 5 == 0 and model == "m1") or (i % 7 == 0 and model == "m2"):
                records.append(record | {"error": "Prompt exceeds the model's context length"})
                continue
            score = float(rng.integers(0, 3))  # ties are common
            latency = float(rng.uniform(1, 100))
            records.append(record | {"score": score, "latency_ms": latency, "input_tokens": i, "output_tokens": 1})
            records[-1]["cost_usd"] = 1e-6 * i
    table = comparison(records, pairs, Baseline(template="t", model="m2"))
    for row, pair in zip(table, pairs, strict=True):
        mine = [r for r in records if (r["template"], r["model"]) == pair and "error" not in r]
        values = np.array([r["score"] for r in mine])
        latencies = np.array([r["latency_ms"] for r in mine])
        assert (row.rows, row.errors) == (len(mine), 23 - len(mine))
        assert row.mean_score == pytest.approx(float(np.mean(values)), abs=1e-12)
        assert row.std_score == pytest.approx(float(np.std(values)), abs=1e-12)
        assert row.ci95 == pytest.approx(1.96 * float(np.std(values)) / math.sqrt(len(mine)), abs=1e-12)
        assert (row.min_score, row.max_score) == (float(values.min()), float(values.max()))
        assert row.latency_p50_ms == pytest.approx(float(np.percentile(latencies, 50)), abs=1e-9)
        assert row.latency_p95_ms == pytest.approx(float(np.percentile(latencies, 95)), abs=1e-9)
    m1 = {r["id"]: r["score"] for r in records if r["model"] == "m1" and "error" not in r}
    m2 = {r["id"]: r["score"] for r in records if r["model"] == "m2" and "error" not in r}
    both = [(m1[i], m2[i]) for i in m1 if i in m2]
    wins, ties = sum(a > b for a, b in both), sum(a == b for a, b in both)
    assert wins and ties and len(both) - wins - ties
    assert (table[0].wins, table[0].ties, table[0].losses) == (wins, ties, len(both) - wins - ties)
    assert table[0].win_rate == pytest.approx((wins + ties / 2) / len(both), abs=1e-12)
    assert table[1].win_rate is None

"""Prompt evaluations: the API (queued, run by a real worker), the comparison table checked against a
direct count, validation, isolation, crash-resume, and `winnow eval run`."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.conftest import DEMO_LM, DEMO_PROMPTS, CrashAfter, bearer, closed_port, running_worker, wait_for
from tests.spec import assert_error
from winnow.api.app import create_app
from winnow.cli import app as cli_app
from winnow.config import ModelConfig, Settings
from winnow.evals.plan import build_eval_plan, check_eval
from winnow.evals.runner import EvalRunner
from winnow.runtime import Runtime
from winnow.schemas.evals import EvaluationRequest
from winnow.sdg.reward import open_registries
from winnow.sdg.workfiles import FileCheckpoint
from winnow.usage.prices import PriceBook

TEMPLATES = [
    {"name": "plain", "template": "{prompt}"},
    {"name": "terse", "template": "Answer with the number only. {prompt}"},
]


@pytest.fixture
def evals(tmp_path: Path) -> Iterator[tuple[TestClient, Runtime]]:
    priced = ModelConfig(id="demo-lm", path=str(DEMO_LM), input_price_per_mtok=2.0, output_price_per_mtok=8.0)
    settings = Settings(data_dir=tmp_path / "data", workers=0, models=[priced], usage_flush_s=0.2)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        shutil.copy(DEMO_PROMPTS, runtime.settings.data_dir / "arithmetic.jsonl")
        yield client, runtime


def _body(**extra: Any) -> dict[str, Any]:
    body = {
        "name": "arithmetic prompts",
        "dataset_path": "arithmetic.jsonl",
        "templates": TEMPLATES,
        "models": ["demo-lm"],
        "scoring_function": "exact_match",
        "max_tokens": 8,
        "temperature": 0,
        "batch_size": 100,
    }
    return body | extra


def test_evaluation_table_matches_a_direct_count(evals: tuple[TestClient, Runtime]) -> None:
    """The issue's acceptance: 2 templates x demo-lm over the demo prompts with exact_match."""
    client, runtime = evals
    key = runtime.keys.create("evaluator").key
    submitted = client.post("/api/v1/evaluations", json=_body(), headers=bearer(key))
    assert submitted.status_code == 202, submitted.text
    evaluation = submitted.json()
    assert evaluation["id"].startswith("eval-") and evaluation["status"] == "queued"
    assert evaluation["baseline"] == {"template": "plain", "model": "demo-lm"}
    assert client.get(f"/api/v1/evaluations/{evaluation['id']}/results", headers=bearer(key)).status_code == 409

    with running_worker(runtime.settings):
        current = wait_for(client, key, f"/api/v1/evaluations/{evaluation['id']}")
    assert current["status"] == "completed", current
    assert current["counts"] == {"rows_total": 500, "rows_done": 500, "generations": 1000, "errors": 0}

    answers = {json.loads(line)["id"]: json.loads(line)["answer"] for line in DEMO_PROMPTS.read_text().splitlines()}
    results = client.get(f"/api/v1/evaluations/{evaluation['id']}/results", headers=bearer(key))
    assert results.status_code == 200
    records = [json.loads(line) for line in results.text.splitlines()]
    assert len(records) == 1000 and len({(r["id"], r["template"]) for r in records}) == 1000
    by_template: dict[str, dict[str, bool]] = {"plain": {}, "terse": {}}
    for record in records:
        by_template[record["template"]][record["id"]] = record["response"].strip() == answers[record["id"]]

    table = {row["template"]: row for row in current["table"]}
    for name, correct in by_template.items():
        assert table[name]["rows"] == 500
        assert table[name]["mean_score"] == pytest.approx(sum(correct.values()) / 500, abs=1e-12)
    plain, terse = by_template["plain"], by_template["terse"]
    wins = sum(terse[i] and not plain[i] for i in plain)
    losses = sum(plain[i] and not terse[i] for i in plain)
    assert (table["terse"]["wins"], table["terse"]["losses"]) == (wins, losses)
    assert table["terse"]["win_rate"] == pytest.approx((wins + (500 - wins - losses) / 2) / 500)
    assert table["plain"]["win_rate"] is None  # the baseline
    assert table["plain"]["mean_score"] > 0.9  # greedy demo-lm is nearly always right
    tokens_in = sum(r["input_tokens"] for r in records if r["template"] == "terse")
    tokens_out = sum(r["output_tokens"] for r in records if r["template"] == "terse")
    assert (table["terse"]["input_tokens"], table["terse"]["output_tokens"]) == (tokens_in, tokens_out)
    assert table["terse"]["cost_usd"] == pytest.approx((tokens_in * 2.0 + tokens_out * 8.0) / 1e6)
    assert table["terse"]["latency_p50_ms"] <= table["terse"]["latency_p95_ms"]

    # The evaluation's tokens are in the owner's usage, as source eval.
    usage = client.get("/api/v1/usage", headers=bearer(key)).json()["total"]
    assert usage["requests"] == 1000
    listed = client.get("/api/v1/evaluations", headers=bearer(key)).json()
    assert listed["count"] == 1 and listed["evaluations"][0]["id"] == evaluation["id"]


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"models": ["nope"]}, "nope"),
        ({"templates": [{"name": "x", "template": "{question}"}]}, "question"),
        ({"templates": [{"name": "x", "template": "{prompt!r}"}]}, "placeholders"),
        ({"templates": [TEMPLATES[0], TEMPLATES[0]]}, "unique"),
        ({"baseline": {"template": "other", "model": "demo-lm"}}, "baseline"),
        ({"scoring_function": None}, "reward_model"),
        ({"scoring_function": "no_such_fn"}, "no_such_fn"),
        ({"reward_model": "no-such-rm"}, "no-such-rm"),
        ({"dataset_path": "/etc/passwd"}, "outside"),
        ({"dataset_path": "missing.jsonl"}, "does not exist"),
        ({"templates": [TEMPLATES[0], {"name": "long", "template": "{prompt} " + "pad " * 4000}]}, "fits the context"),
    ],
)
def test_bad_evaluations_are_400_and_queue_nothing(
    evals: tuple[TestClient, Runtime], override: dict[str, Any], needle: str
) -> None:
    client, runtime = evals
    key = runtime.keys.create("bad").key
    body = assert_error(client.post("/api/v1/evaluations", json=_body(**override), headers=bearer(key)), 400)
    assert needle in body["message"] + (body.get("details") or "")
    assert client.get("/api/v1/evaluations", headers=bearer(key)).json()["count"] == 0


def test_a_key_sees_only_its_own_evaluations(evals: tuple[TestClient, Runtime]) -> None:
    client, runtime = evals
    owner, other = runtime.keys.create("owner").key, runtime.keys.create("other").key
    evaluation = client.post("/api/v1/evaluations", json=_body(), headers=bearer(owner)).json()
    assert_error(client.get(f"/api/v1/evaluations/{evaluation['id']}", headers=bearer(other)), 404)
    assert_error(client.post(f"/api/v1/evaluations/{evaluation['id']}/cancel", headers=bearer(other)), 404)
    assert client.get("/api/v1/evaluations", headers=bearer(other)).json()["count"] == 0
    # An evaluation is not an SDG job, and vice versa.
    status = client.get(
        "/api/v1/synthetic_data_generation/job_status", params={"job_id": evaluation["id"]}, headers=bearer(owner)
    )
    assert_error(status, 400)
    cancelled = client.post(f"/api/v1/evaluations/{evaluation['id']}/cancel", headers=bearer(owner)).json()
    assert cancelled["status"] == "cancelled"
    assert_error(client.post(f"/api/v1/evaluations/{evaluation['id']}/cancel", headers=bearer(owner)), 409)


def test_a_crash_mid_evaluation_resumes_to_identical_results(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", workers=0, data_roots=[DEMO_PROMPTS.parent])
    spec = EvaluationRequest.model_validate(
        _body(dataset_path=str(DEMO_PROMPTS), batch_size=64, temperature=1.0, seed=11)
    )

    async def run(work: Path, output: Path, checkpoint: FileCheckpoint) -> Any:
        async with open_registries(settings) as (models, rewards):
            plan = build_eval_plan(
                spec, check_eval(spec, settings, models, rewards), models, rewards, PriceBook(settings)
            )
            return await EvalRunner(plan, work, output, checkpoint).run()

    clean = tmp_path / "clean" / "results.jsonl"
    expected = asyncio.run(run(tmp_path / "clean" / "work", clean, FileCheckpoint(tmp_path / "clean.json")))
    crashed = tmp_path / "crashed" / "results.jsonl"
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(run(tmp_path / "crashed" / "work", crashed, CrashAfter(tmp_path / "crashed.json", 3)))
    assert not crashed.exists()
    table = asyncio.run(run(tmp_path / "crashed" / "work", crashed, FileCheckpoint(tmp_path / "crashed.json")))

    def strip(path: Path) -> list[dict[str, Any]]:  # latencies differ run to run; nothing else may
        return [{k: v for k, v in json.loads(line).items() if k != "latency_ms"} for line in path.open()]

    assert strip(crashed) == strip(clean)
    assert [(r.template, r.mean_score, r.wins) for r in table] == [(r.template, r.mean_score, r.wins) for r in expected]


def test_cli_eval_run_prints_the_table(tmp_path: Path) -> None:
    small = tmp_path / "small.jsonl"
    small.write_text("".join(line + "\n" for line in DEMO_PROMPTS.read_text().splitlines()[:40]))
    output = tmp_path / "results.jsonl"
    args = ["eval", "run", "-d", str(small), "-m", "demo-lm", "-s", "exact_match", "--max-tokens", "8"]
    args += ["-t", "plain={prompt}", "-t", "terse=Answer with the number only. {prompt}", "-o", str(output), "--json"]
    result = CliRunner().invoke(cli_app, args, env={"WINNOW_DATA_DIR": str(tmp_path / "data")})
    assert result.exit_code == 0, result.output
    table = json.loads(result.stdout[result.stdout.index("[") :])
    records = [json.loads(line) for line in output.read_text().splitlines()]
    for row in table:
        scores = [r["score"] for r in records if r["template"] == row["template"]]
        assert row["rows"] == 40 and row["mean_score"] == pytest.approx(sum(scores) / 40)


def test_an_arm_whose_rows_all_failed_has_no_win_rate_and_is_not_the_baseline(tmp_path: Path) -> None:
    dead = ModelConfig(id="dead", provider="openai", base_url=f"http://127.0.0.1:{closed_port()}/v1", max_retries=0)
    settings = Settings(
        data_dir=tmp_path / "data", workers=0, models=[ModelConfig(id="demo-lm", path=str(DEMO_LM)), dead]
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        dataset = runtime.settings.data_dir / "four.jsonl"
        dataset.write_text("".join(line + "\n" for line in DEMO_PROMPTS.read_text().splitlines()[:4]))
        key = runtime.keys.create("evaluator").key
        body = _body(dataset_path="four.jsonl", templates=TEMPLATES[:1], models=["demo-lm", "dead"])
        submitted = client.post("/api/v1/evaluations", json=body, headers=bearer(key))
        assert submitted.status_code == 202, submitted.text
        with running_worker(runtime.settings):
            done = wait_for(client, key, f"/api/v1/evaluations/{submitted.json()['id']}")
    assert done["status"] == "completed", done
    table = {row["model"]: row for row in done["table"]}
    assert table["dead"]["errors"] == 4 and table["dead"]["rows"] == 0
    assert table["dead"]["win_rate"] is None and table["dead"]["baseline"] is False
    assert table["demo-lm"]["baseline"] is True and table["demo-lm"]["win_rate"] is None


def test_each_result_row_has_its_own_latency(tmp_path: Path) -> None:
    """One row per batch (max_batch_rows 1): the rows run one after another, so each waits for those
    before it; a row's latency is its own (from its call to its answer), never the chunk's."""
    one_at_a_time = ModelConfig(id="demo-lm", path=str(DEMO_LM), options={"max_batch_rows": 1})
    settings = Settings(data_dir=tmp_path / "data", workers=0, models=[one_at_a_time])
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        dataset = runtime.settings.data_dir / "four.jsonl"
        dataset.write_text("".join(line + "\n" for line in DEMO_PROMPTS.read_text().splitlines()[:4]))
        key = runtime.keys.create("evaluator").key
        submitted = client.post("/api/v1/evaluations", json=_body(dataset_path="four.jsonl"), headers=bearer(key))
        assert submitted.status_code == 202, submitted.text
        evaluation_id = submitted.json()["id"]
        with running_worker(runtime.settings):
            done = wait_for(client, key, f"/api/v1/evaluations/{evaluation_id}")
        assert done["status"] == "completed", done
        results = client.get(f"/api/v1/evaluations/{evaluation_id}/results", headers=bearer(key))
    latencies = [json.loads(line)["latency_ms"] for line in results.text.splitlines()]
    assert len(latencies) == 8 and len(set(latencies)) == 8, latencies

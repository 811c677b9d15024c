"""Job spans against a real OTLP/HTTP receiver (``tests.test_telemetry.Receiver``): an SDG job run by
a real ``winnow worker`` process (the one ``winnow serve`` starts) is a ``job.run`` span per piece of
work (its shard, then its merge) with the job's id, kind, owner and model, the shard's chunks as
children with their generate / score / filter / write stages, tokens after the GenAI conventions,
all sent when the worker stops; an evaluation's and a batch's chunks (a batch's upstream calls under
them, continuing the job's trace), a process engine's round trips; and without an endpoint a
worker's job sends nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.api.test_passthrough import FakeUpstream
from tests.batches.test_worker_killed import create_batch
from tests.conftest import DEMO_PROMPTS, LiveServer, bearer, running_worker, wait_for, wait_for_job
from tests.requests.test_request_log import _settings
from tests.test_telemetry import Receiver
from winnow import telemetry
from winnow.api.app import create_app
from winnow.config import Settings

ROWS, BATCH = 8, 4
SUBMIT = "/api/v1/synthetic_data_generation/submit_job"
JOB = {
    "model": "demo-lm",
    "prompts_path": "prompts.jsonl",
    "batch_size": BATCH,
    "max_gen_len": 4,
    "num_generations": 2,
    "reward_model": "demo-rm",
    "filtering_function": {"name": "none"},
    "seed": 1,
}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    telemetry.shutdown()
    found.server.shutdown()


def _prompts(data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    lines = DEMO_PROMPTS.read_text().splitlines()[:ROWS]
    (data_dir / "prompts.jsonl").write_text("".join(line + "\n" for line in lines))


def _children(receiver: Receiver, parent: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in receiver.spans if s["parent_id"] == parent["span_id"]}


@pytest.mark.slow  # a real server and its worker process
def test_a_worker_s_sdg_job_is_a_span_with_its_chunks(tmp_path: Path, receiver: Receiver) -> None:
    data = tmp_path / "live"
    _prompts(data)
    env = {"WINNOW_WORKERS": "1", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url}
    live = LiveServer(data, env=env).start()
    try:
        key = live.cli("keys", "create", "k", "--admin").stdout.split()[-1]
        with httpx.Client(base_url=live.url, timeout=30) as client:
            job_id = client.post(SUBMIT, json=JOB, headers=bearer(key)).json()["job_id"]
            status = wait_for_job(client, key, job_id)
    finally:
        live.stop()  # the worker stops too, and sends the spans it still holds
    assert status["status"] == "completed", status

    runs = {s["attributes"]["winnow.job.part"]: s for s in receiver.named("job.run")}
    assert set(runs) == {"shard", "merge"}  # one shard of 8 rows, then the merge
    shard, merge = runs["shard"], runs["merge"]
    for run in (shard, merge):
        attributes = run["attributes"]
        assert run["service"] == "winnow-worker" and run["parent_id"] == "" and not run["error"]
        assert (attributes["winnow.job.id"], attributes["winnow.job.kind"]) == (job_id, "sdg")
        assert attributes["gen_ai.request.model"] == "demo-lm" and isinstance(attributes["winnow.key_id"], int)
    counts = status["counts"]
    assert merge["attributes"]["winnow.job.status"] == "completed"
    assert merge["attributes"]["winnow.job.rows_done"] == ROWS
    assert merge["attributes"]["gen_ai.usage.output_tokens"] == counts["output_tokens"]
    assert shard["attributes"]["winnow.job.shard"] == 0

    chunks = sorted(receiver.named("sdg.chunk"), key=lambda s: s["attributes"]["winnow.chunk.index"])
    assert [c["attributes"]["winnow.chunk.index"] for c in chunks] == [0, 1]
    assert {c["parent_id"] for c in chunks} == {shard["span_id"]}
    assert sum(c["attributes"]["gen_ai.usage.input_tokens"] for c in chunks) == counts["input_tokens"]
    for chunk in chunks:
        assert chunk["attributes"]["winnow.chunk.rows"] == BATCH
        assert shard["start"] <= chunk["start"] <= chunk["end"] <= shard["end"]
        stages = _children(receiver, chunk)
        assert set(stages) == {"sdg.generate", "sdg.score", "sdg.filter", "sdg.write"}
        assert stages["sdg.generate"]["attributes"]["gen_ai.request.model"] == "demo-lm"
        assert stages["sdg.generate"]["end"] <= stages["sdg.score"]["start"] <= stages["sdg.write"]["start"]


def test_without_an_endpoint_a_worker_s_job_sends_nothing(tmp_path: Path, receiver: Receiver) -> None:
    settings = Settings(data_dir=tmp_path / "data", workers=0)
    _prompts(settings.data_dir)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client, running_worker(settings):
        key = client.app.state.runtime.keys.create("k").key  # type: ignore[attr-defined]
        job_id = client.post(SUBMIT, json=JOB, headers=bearer(key)).json()["job_id"]
        assert wait_for_job(client, key, job_id)["status"] == "completed"
        assert not telemetry.enabled()
    assert receiver.spans == []


@pytest.mark.slow  # an engine process (torch and the model)
def test_an_evaluation_s_chunks_and_the_engine_process_are_spans(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    settings = Settings(data_dir=tmp_path / "data", workers=0, local_engine="process")
    _prompts(settings.data_dir)
    body = {
        "dataset_path": "prompts.jsonl",
        "templates": [{"name": "plain", "template": "{prompt}"}],
        "models": ["demo-lm"],
        "scoring_function": "exact_match",
        "max_tokens": 4,
        "temperature": 0,
        "batch_size": BATCH,
    }
    with TestClient(create_app(settings), raise_server_exceptions=False) as client, running_worker(settings):
        key = client.app.state.runtime.keys.create("k").key  # type: ignore[attr-defined]
        eval_id = client.post("/api/v1/evaluations", json=body, headers=bearer(key)).json()["id"]
        assert wait_for(client, key, f"/api/v1/evaluations/{eval_id}")["status"] == "completed"
    # The app's shutdown sent what the batch processor held.
    (run,) = receiver.named("job.run")
    assert (run["attributes"]["winnow.job.kind"], run["attributes"]["winnow.job.id"]) == ("eval", eval_id)
    assert run["attributes"]["winnow.job.status"] == "completed"
    assert run["attributes"]["winnow.job.rows_done"] == ROWS
    chunks = receiver.named("eval.chunk")
    assert len(chunks) == ROWS // BATCH and {c["parent_id"] for c in chunks} == {run["span_id"]}
    engine = receiver.named("engine.process")  # each row's call, a round trip to the engine process
    assert len(engine) == ROWS and {e["parent_id"] for e in engine} == {c["span_id"] for c in chunks}


def test_a_batch_s_chunks_carry_the_trace_to_the_upstream(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    with FakeUpstream() as fake:
        settings = _settings(tmp_path, fake.url).model_copy(update={"batch_chunk_lines": 3})
        with TestClient(create_app(settings)) as client, running_worker(settings):
            key = client.app.state.runtime.keys.create("owner").key  # type: ignore[attr-defined]
            batch_id = create_batch(client, key, 6, model="routed")  # its first deployment is down
            assert wait_for(client, key, f"/v1/batches/{batch_id}")["status"] == "completed"
    (run,) = receiver.named("job.run")
    assert (run["attributes"]["winnow.job.kind"], run["attributes"]["winnow.job.id"]) == ("batch", batch_id)
    assert run["attributes"]["winnow.job.rows_done"] == 6 and "gen_ai.request.model" not in run["attributes"]
    chunks = sorted(receiver.named("batch.chunk"), key=lambda s: s["attributes"]["winnow.chunk.first_line"])
    assert [c["attributes"]["winnow.chunk.first_line"] for c in chunks] == [0, 3]
    assert {c["parent_id"] for c in chunks} == {run["span_id"]}
    attempts = receiver.named("router.attempt")
    assert len(attempts) >= 6 and {a["parent_id"] for a in attempts} == {c["span_id"] for c in chunks}
    calls = {s["span_id"] for s in receiver.named("upstream.request") if not s["error"]}
    forwarded = {r["headers"]["traceparent"].rsplit("-", 1)[0] for r in fake.received}  # less the flags
    assert forwarded == {f"00-{run['trace_id']}-{span}" for span in calls}  # the upstream continues the job's trace

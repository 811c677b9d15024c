"""``/v1/fine_tuning/jobs`` driven by the official ``openai`` client, unchanged, against a real
``winnow serve`` with a job worker: a job made from an uploaded file's id trains demo-lm, its model
answers on ``chat.completions`` at once; list, retrieve, events (paged by event id), checkpoints and
cancel in OpenAI's shapes; bad input a 400 in OpenAI's error shape with nothing queued."""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.api.test_openai_fidelity import assert_openai
from tests.api.test_openai_files import jsonl
from tests.conftest import LiveServer, bearer
from tests.finetune.test_api import training_rows

pytestmark = pytest.mark.slow  # a real `winnow serve` and its worker process train demo-lm


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("v1ft") / "data", env={"WINNOW_WORKERS": "1"}).start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def admin(server: LiveServer) -> str:
    return server.cli("keys", "create", "admin", "--admin").stdout.split()[-1]


def _key(server: LiveServer, admin: str) -> str:
    limits = {"generation": "100000/minute", "batch": "100000/minute", "other": "100000/minute"}
    body = {"name": f"ft-{uuid.uuid4().hex[:8]}", "rate_limits": limits}
    created = httpx.post(f"{server.url}/api/v1/keys", json=body, headers=bearer(admin))
    assert created.status_code == 201, created.text
    secret: str = created.json()["key"]
    return secret


def _client(server: LiveServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


def _raw(server: LiveServer, key: str, path: str) -> Any:
    response = httpx.get(f"{server.url}/v1/fine_tuning/jobs{path}", headers=bearer(key))
    assert response.status_code == 200, response.text
    return response.json()


def _until(client: openai.OpenAI, job_id: str, states: tuple[str, ...], timeout: float = 300) -> Any:
    deadline = time.monotonic() + timeout
    while (job := client.fine_tuning.jobs.retrieve(job_id)).status not in states:
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    return job


def test_a_job_trains_and_its_model_answers_on_chat(server: LiveServer, admin: str) -> None:
    key = _key(server, admin)
    client = _client(server, key)
    train = client.files.create(file=("train.jsonl", io.BytesIO(jsonl(training_rows(40)))), purpose="fine-tune")
    hyper = {"n_epochs": 1, "batch_size": 8, "learning_rate_multiplier": 3}
    job = client.fine_tuning.jobs.create(
        model="demo-lm",
        training_file=train.id,
        suffix="arith",
        seed=7,
        metadata={"team": "qa"},
        method={"type": "supervised", "supervised": {"hyperparameters": hyper}},  # type: ignore[typeddict-item]
    )
    assert job.object == "fine_tuning.job" and job.status in ("queued", "validating_files", "running")
    assert job.model == "demo-lm" and job.training_file == train.id and job.seed == 7
    assert job.metadata == {"team": "qa"} and job.fine_tuned_model is None
    assert job.hyperparameters.n_epochs == 1 and job.hyperparameters.batch_size == 8
    assert job.hyperparameters.learning_rate_multiplier == 3.0
    assert job.method is not None and job.method.type == "supervised"

    done = _until(client, job.id, ("succeeded", "failed", "cancelled"))
    assert done.status == "succeeded", done
    assert done.fine_tuned_model == f"demo-lm:ft-arith-{job.id[6:14]}" and done.finished_at >= done.created_at
    assert_openai("FineTuningJob", _raw(server, key, f"/{job.id}"))
    native = httpx.get(f"{server.url}/api/v1/fine_tuning/jobs/{job.id}", headers=bearer(key)).json()
    assert native["status"] == "completed" and native["fine_tuned_model"] == done.fine_tuned_model  # one job

    listed = _raw(server, key, "")
    assert_openai("ListPaginatedFineTuningJobsResponse", listed)
    assert [j.id for j in client.fine_tuning.jobs.list()] == [job.id]

    raw_events = _raw(server, key, f"/{job.id}/events?limit=1000")
    assert_openai("ListFineTuningJobEventsResponse", raw_events)
    events = [e["message"] for e in raw_events["data"]]
    assert events[0] == f"completed: the new model is {done.fine_tuned_model}"  # newest first
    assert events[-1].startswith("validated 40 training row(s)")
    paged = client.fine_tuning.jobs.list_events(job.id, limit=2)
    assert len(paged.data) == 2 and paged.has_more
    assert [e.message for e in paged] == events  # the SDK pages on with after=<last event id>
    after = client.fine_tuning.jobs.list_events(job.id, after=paged.data[-1].id, limit=1)
    assert [e.message for e in after.data] == events[2:3]

    checkpoints = _raw(server, key, f"/{job.id}/checkpoints")
    assert_openai("ListFineTuningJobCheckpointsResponse", checkpoints)
    steps = [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id)]
    assert steps and steps == sorted(steps, reverse=True) and all(0 < s <= 5 for s in steps)

    answer = client.chat.completions.create(
        model=done.fine_tuned_model, messages=[{"role": "user", "content": "What is 17+25?"}], max_tokens=6
    )
    assert answer.model == done.fine_tuned_model and isinstance(answer.choices[0].message.content, str)

    other = _client(server, _key(server, admin))
    with pytest.raises(openai.NotFoundError):
        other.fine_tuning.jobs.retrieve(job.id)
    assert list(other.fine_tuning.jobs.list()) == []


def test_a_dpo_job_maps_its_method_and_cancels(server: LiveServer, admin: str) -> None:
    key = _key(server, admin)
    client = _client(server, key)
    pairs = [
        {"prompt": r["prompt"], "chosen": r["completion"], "rejected": str(int(r["completion"]) + 1)}
        for r in training_rows(1600)
    ]
    train = client.files.create(file=("pairs.jsonl", io.BytesIO(jsonl(pairs))), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="demo-lm",
        training_file=train.id,
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 1, "batch_size": 8}}},
    )
    assert job.method is not None and job.method.type == "dpo" and job.method.dpo is not None
    dpo = job.method.dpo.hyperparameters
    assert dpo is not None and dpo.beta == 0.2 and dpo.n_epochs == 1 and dpo.learning_rate_multiplier == 1.0
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.id == job.id
    done = _until(client, job.id, ("succeeded", "failed", "cancelled"))
    assert done.status == "cancelled" and done.fine_tuned_model is None, done
    assert_openai("FineTuningJob", _raw(server, key, f"/{job.id}"))
    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.cancel(job.id)


def test_bad_jobs_are_refused_and_nothing_is_queued(server: LiveServer, admin: str) -> None:
    key = _key(server, admin)
    client = _client(server, key)
    train = client.files.create(file=("t.jsonl", io.BytesIO(jsonl(training_rows(8)))), purpose="fine-tune")
    line = {"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": {"model": "demo-lm"}}
    batch = client.files.create(file=("b.jsonl", io.BytesIO(jsonl([line]))), purpose="batch")
    theirs = _client(server, _key(server, admin)).files.create(
        file=("t.jsonl", io.BytesIO(jsonl(training_rows(8)))), purpose="fine-tune"
    )
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"training_file": batch.id}, "training_file", "its purpose is 'batch'"),
        ({"training_file": "file-000000000000000000000000"}, "training_file", "no file of this key has this id"),
        ({"training_file": theirs.id}, "training_file", "no file of this key has this id"),
        ({"validation_file": theirs.id}, "validation_file", "no file of this key has this id"),
        ({"model": "no-such-model"}, "model", "no-such-model"),
        ({"suffix": "Not Valid!"}, "suffix", "String should match pattern"),
        ({"method": {"type": "reinforcement"}}, "method.type", "'supervised' or 'dpo'"),
        ({"hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs", "greater than or equal to 1"),
    ]
    for change, param, says in cases:
        body: dict[str, Any] = {"model": "demo-lm", "training_file": train.id, **change}
        with pytest.raises(openai.BadRequestError) as caught:
            client.fine_tuning.jobs.create(**body)
        error: dict[str, Any] = caught.value.body  # type: ignore[assignment]
        assert error["param"] == param and says in error["message"], (change, error)
        assert_openai("ErrorResponse", {"error": error})
    assert list(client.fine_tuning.jobs.list()) == []
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-000000000000000000000000")
    assert json.loads(httpx.get(f"{server.url}/v1/fine_tuning/jobs/nope", headers=bearer(key)).text)["error"]

"""Fine-tuning over HTTP on the in-process app with a real worker: upload, submit, progress,
completion; the new model listed and answering; bad input refused with nothing queued; ownership."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import DEMO_PROMPTS, bearer, wait_for
from winnow.config import Settings

FT = "/api/v1/fine_tuning/jobs"
HELD_OUT = {json.loads(line)["prompt"] for line in DEMO_PROMPTS.read_text().splitlines()}


def training_rows(n: int, start: int = 0) -> list[dict[str, Any]]:
    """``n`` correct additions that are not among the demo's held-out prompts."""
    rows = []
    for k in range(start, 10_000):
        a, b = divmod(k * 37 % 10_000, 100)
        prompt = f"What is {a}+{b}?"
        if prompt not in HELD_OUT:
            rows.append({"prompt": prompt, "completion": str(a + b)})
        if len(rows) == n:
            break
    return rows


def upload(client: TestClient, key: str, rows: list[dict[str, Any]] | str, name: str = "train.jsonl") -> Any:
    body = rows if isinstance(rows, str) else "".join(json.dumps(r) + "\n" for r in rows)
    return client.post(
        "/api/v1/files",
        files={"file": (name, body.encode(), "application/jsonl")},
        data={"purpose": "fine-tune"},
        headers=bearer(key),
    )


def job_body(path: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "base_model": "demo-lm",
        "training_file": path,
        "suffix": "arith",
        "hyperparameters": {"epochs": 1, "batch_size": 8, "learning_rate": 3e-3, "checkpoint_steps": 2},
    }
    body.update(overrides)
    return body


def test_a_job_trains_registers_and_serves_its_model(ft_client: TestClient, admin_key: str) -> None:
    uploaded = upload(ft_client, admin_key, training_rows(40))
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json()["rows"] == 40
    submitted = ft_client.post(FT, json=job_body(uploaded.json()["path"]), headers=bearer(admin_key))
    assert submitted.status_code == 202, submitted.text
    job = submitted.json()
    assert job["object"] == "fine_tuning.job" and job["status"] == "queued"
    done = wait_for(ft_client, admin_key, f"{FT}/{job['id']}", timeout=300)
    assert done["status"] == "completed", done
    assert done["training_rows"] == 40
    model = done["fine_tuned_model"]
    assert model == f"demo-lm:ft-arith-{job['id'][6:14]}"
    assert done["progress"]["step"] == done["progress"]["total_steps"] == 5
    assert done["metrics"]["train_loss"] > 0 and done["metrics"]["steps"] == 5

    events = ft_client.get(f"{FT}/{job['id']}/events", headers=bearer(admin_key)).json()["data"]
    messages = [e["message"] for e in events]
    assert messages[0].startswith("validated 40 training row(s)")
    assert any(m.startswith("checkpoint saved at step 2") for m in messages)
    assert any(e["type"] == "metrics" and "loss" in e["data"] for e in events)
    assert messages[-1] == f"completed: the new model is {model}"
    curve = ft_client.get(f"{FT}/{job['id']}/loss_curve", headers=bearer(admin_key))
    assert curve.status_code == 200 and curve.content.startswith(b"\x89PNG")

    listed = [m["id"] for m in ft_client.get("/api/v1/models", headers=bearer(admin_key)).json()["models"]]
    assert model in listed
    answer = ft_client.post(
        "/api/v1/generate",
        json={"prompt": "What is 17+25?", "model_id": model, "max_tokens": 6, "temperature": 0.0},
        headers=bearer(admin_key),
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["text"].strip() == "42"

    deleted = ft_client.delete(f"/api/v1/models/{model}", headers=bearer(admin_key))
    assert deleted.status_code == 200 and deleted.json() == {"id": model, "object": "model", "deleted": True}
    gone = ft_client.post(
        "/api/v1/generate", json={"prompt": "What is 1+1?", "model_id": model}, headers=bearer(admin_key)
    )
    assert gone.status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"base_model": "nope"}, 400, "base_model"),
        ({"base_model": "demo-rm"}, 400, "base_model"),
        ({"hyperparameters": {"epochs": 0}}, 400, "epochs"),
        ({"hyperparameters": {"learning_rate": 5}}, 400, "learning_rate"),
        ({"hyperparameters": {"lora": {"r": 0}}}, 400, "r"),
        ({"method": "ppo"}, 400, "method"),
        ({"sdg_job": "job-" + "0" * 24}, 400, "exactly one training source"),
    ],
)
def test_bad_input_is_a_400_and_queues_nothing(
    client: TestClient, admin_key: str, body: dict[str, Any], status: int, says: str
) -> None:
    path = upload(client, admin_key, training_rows(4)).json()["path"]
    response = client.post(FT, json={**job_body(path), **body}, headers=bearer(admin_key))
    assert response.status_code == status, response.text
    assert says in response.text
    assert client.get(FT, headers=bearer(admin_key)).json()["data"] == []


def test_bad_training_rows_are_named_by_line(ft_client: TestClient, admin_key: str, runtime: Any) -> None:
    refused = upload(ft_client, admin_key, '{"prompt": "a", "completion": "b"}\n{"prompt": "a"}\nnot json\n')
    assert refused.status_code == 400
    assert "line 2" in refused.text and "line 3" in refused.text
    assert upload(ft_client, admin_key, "").status_code == 400
    folder = runtime.settings.data_dir / "shared"
    folder.mkdir(parents=True)
    empty = folder / "empty.jsonl"
    empty.write_text("")
    response = ft_client.post(FT, json=job_body(str(empty)), headers=bearer(admin_key))
    assert response.status_code == 400 and "no training rows" in response.text
    assert ft_client.get(FT, headers=bearer(admin_key)).json()["data"] == []
    assert not any(p.name.startswith("ftjob-") for p in (runtime.settings.data_dir / "jobs").glob("*"))
    # A preference file without rejected, submitted as dpo from a data-dir path: the worker that
    # prepares it fails the job, naming the line.
    (folder / "pairs.jsonl").write_text('{"prompt": "What is 1+1?", "chosen": "2"}\n')
    response = ft_client.post(FT, json=job_body(str(folder / "pairs.jsonl"), method="dpo"), headers=bearer(admin_key))
    assert response.status_code == 202, response.text
    failed = wait_for(ft_client, admin_key, f"{FT}/{response.json()['id']}", until=("failed", "completed"))
    assert failed["status"] == "failed" and failed["training_rows"] == 0, failed
    assert "line 1" in failed["error"] and "rejected" in failed["error"], failed
    events = ft_client.get(f"{FT}/{failed['id']}/events", headers=bearer(admin_key)).json()["data"]
    assert [e["level"] for e in events] == ["error"] and "line 1" in events[0]["message"]


def test_an_upstream_base_model_is_refused(tmp_path: Path) -> None:
    from winnow.api import create_app
    from winnow.config import ModelConfig

    settings = Settings(
        data_dir=tmp_path / "data",
        workers=0,
        models=[
            *Settings(data_dir=tmp_path / "x").models,
            ModelConfig(id="gpt-x", type="commercial", provider="openai", base_url="http://127.0.0.1:9/v1"),
        ],
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        key = client.app.state.runtime.keys.create("admin", admin=True).key  # type: ignore[attr-defined]
        path = upload(client, key, training_rows(4)).json()["path"]
        response = client.post(FT, json=job_body(path, base_model="gpt-x"), headers=bearer(key))
    assert response.status_code == 400 and "cannot be fine-tuned here" in response.text


def test_a_key_sees_only_its_own_jobs_and_models(ft_client: TestClient, runtime: Any) -> None:
    alice = runtime.keys.create("alice").key
    bob = runtime.keys.create("bob").key
    admin = runtime.keys.create("root", admin=True).key
    path = upload(ft_client, alice, training_rows(8)).json()["path"]
    # bob may not train on alice's upload
    stolen = ft_client.post(FT, json=job_body(path), headers=bearer(bob))
    assert stolen.status_code == 400 and "may not read" in stolen.text
    job = ft_client.post(FT, json=job_body(path, suffix="alice"), headers=bearer(alice)).json()
    done = wait_for(ft_client, alice, f"{FT}/{job['id']}", timeout=300)
    model = done["fine_tuned_model"]
    assert ft_client.get(f"{FT}/{job['id']}", headers=bearer(bob)).status_code == 404
    assert ft_client.get(FT, headers=bearer(bob)).json()["data"] == []
    assert [j["id"] for j in ft_client.get(FT, headers=bearer(admin)).json()["data"]] == [job["id"]]

    def models(key: str) -> list[str]:
        return [m["id"] for m in ft_client.get("/api/v1/models", headers=bearer(key)).json()["models"]]

    assert model in models(alice) and model in models(admin) and model not in models(bob)
    generate = {"prompt": "What is 2+2?", "model_id": model, "max_tokens": 4}
    assert ft_client.post("/api/v1/generate", json=generate, headers=bearer(bob)).status_code == 404
    assert ft_client.post("/api/v1/generate", json=generate, headers=bearer(alice)).status_code == 200
    assert ft_client.delete(f"/api/v1/models/{model}", headers=bearer(bob)).status_code == 404
    assert ft_client.delete("/api/v1/models/demo-lm", headers=bearer(admin)).status_code == 400


def test_a_fine_tuned_model_is_the_base_of_another_job_with_validation_loss(
    ft_client: TestClient, admin_key: str
) -> None:
    path = upload(ft_client, admin_key, training_rows(40)).json()["path"]
    first = ft_client.post(FT, json=job_body(path, suffix="first"), headers=bearer(admin_key)).json()
    parent = wait_for(ft_client, admin_key, f"{FT}/{first['id']}", timeout=300)["fine_tuned_model"]
    body = job_body(path, base_model=parent, suffix="second", validation_split=0.25)
    second = ft_client.post(FT, json=body, headers=bearer(admin_key))
    assert second.status_code == 202, second.text
    done = wait_for(ft_client, admin_key, f"{FT}/{second.json()['id']}", timeout=300)
    assert done["status"] == "completed", done
    assert done["training_rows"] == 30 and done["validation_rows"] == 10
    assert done["metrics"]["validation_loss"] > 0 and done["progress"]["validation_loss"] is not None
    child = done["fine_tuned_model"]
    assert child.startswith(f"{parent}:ft-second-")
    answer = ft_client.post(
        "/api/v1/generate",
        json={"prompt": "What is 17+25?", "model_id": child, "max_tokens": 6, "temperature": 0.0},
        headers=bearer(admin_key),
    )
    assert answer.status_code == 200 and answer.json()["text"].strip() == "42", answer.text


def test_cancelling_a_running_job_stops_it_and_registers_nothing(ft_client: TestClient, admin_key: str) -> None:
    path = upload(ft_client, admin_key, training_rows(1600)).json()["path"]
    body = job_body(path, suffix="stopped")
    body["hyperparameters"]["checkpoint_steps"] = 1000
    job = ft_client.post(FT, json=body, headers=bearer(admin_key)).json()
    running = wait_for(ft_client, admin_key, f"{FT}/{job['id']}", until=("running",), timeout=120)
    deadline_steps = running["progress"]
    while deadline_steps["step"] == 0:  # training has started
        deadline_steps = ft_client.get(f"{FT}/{job['id']}", headers=bearer(admin_key)).json()["progress"]
    scraped = ft_client.get("/metrics").text
    assert f'winnow_fine_tuning{{field="step",job="{job["id"]}"}}' in scraped
    cancelled = ft_client.post(f"{FT}/{job['id']}/cancel", headers=bearer(admin_key))
    assert cancelled.status_code == 200
    done = wait_for(ft_client, admin_key, f"{FT}/{job['id']}", until=("cancelled", "completed", "failed"))
    assert done["status"] == "cancelled", done
    assert done["progress"]["step"] < done["progress"]["total_steps"] == 200
    assert done["fine_tuned_model"] is None
    models = [m["id"] for m in ft_client.get("/api/v1/models", headers=bearer(admin_key)).json()["models"]]
    assert not [m for m in models if ":ft-stopped-" in m]

"""Training on what Winnow made: an SDG job's kept rows (sft) and its preference pairs (dpo, TRL's
DPOTrainer), each to a served model; the feedback export as a source, refused with its reason when empty."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import bearer, wait_for, wait_for_job
from tests.finetune.test_api import FT
from tests.sdg.jobs import SDG, job_body, write_prompts

TINY = {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3, "checkpoint_steps": 100}


def _train(client: TestClient, key: str, **body: Any) -> dict[str, Any]:
    body = {"base_model": "demo-lm", "hyperparameters": TINY, **body}
    submitted = client.post(FT, json=body, headers=bearer(key))
    assert submitted.status_code == 202, submitted.text
    done = wait_for(client, key, f"{FT}/{submitted.json()['id']}", timeout=300)
    assert done["status"] == "completed", done
    return done


def test_an_sdg_job_s_rows_and_pairs_train_models_that_serve(
    ft_client: TestClient, admin_key: str, settings: Any
) -> None:
    prompts = write_prompts(settings.data_dir / "prompts.jsonl", 24)
    body = job_body(prompts, num_generations=4, filtering_function={"name": "best_of_n", "params": {}})
    submitted = ft_client.post(f"{SDG}/submit_job", json={**body, "outputs": ["preference"]}, headers=bearer(admin_key))
    assert submitted.status_code == 200, submitted.text
    job = wait_for_job(ft_client, admin_key, submitted.json()["job_id"], timeout=300)
    assert job["status"] == "completed", job

    sft = _train(ft_client, admin_key, sdg_job=job["job_id"], method="sft", suffix="rows")
    assert sft["training_rows"] == 24  # best-of-n keeps one response a prompt
    pairs = Path(job["output_file_path"]).with_name("output.preference.jsonl").read_text().splitlines()
    dpo = _train(ft_client, admin_key, sdg_job=job["job_id"], method="dpo", suffix="pairs")
    assert dpo["method"] == "dpo" and dpo["training_rows"] == len(pairs) > 0
    assert "rewards/margins" in str(dpo["metrics"]) or dpo["metrics"]["train_loss"] > 0

    rpo = _train(
        ft_client,
        admin_key,
        sdg_job=job["job_id"],
        method="dpo",
        suffix="rpo",
        hyperparameters={**TINY, "sft_weight": 1.0},
    )
    assert rpo["hyperparameters"]["sft_weight"] == 1.0 and rpo["metrics"]["train_loss"] != dpo["metrics"]["train_loss"]

    for done in (sft, dpo, rpo):
        answer = ft_client.post(
            "/api/v1/generate",
            json={"prompt": "What is 17+25?", "model_id": done["fine_tuned_model"], "max_tokens": 6},
            headers=bearer(admin_key),
        )
        assert answer.status_code == 200, answer.text


def test_dpo_needs_the_job_s_preference_output(ft_client: TestClient, admin_key: str, settings: Any) -> None:
    prompts = write_prompts(settings.data_dir / "prompts.jsonl", 8)
    submitted = ft_client.post(f"{SDG}/submit_job", json=job_body(prompts), headers=bearer(admin_key))
    job = wait_for_job(ft_client, admin_key, submitted.json()["job_id"], timeout=300)
    response = ft_client.post(
        FT, json={"base_model": "demo-lm", "sdg_job": job["job_id"], "method": "dpo"}, headers=bearer(admin_key)
    )
    assert response.status_code == 400 and "no preference output" in response.text


def test_another_key_s_sdg_job_is_not_a_source(ft_client: TestClient, runtime: Any, settings: Any) -> None:
    owner, other = runtime.keys.create("owner").key, runtime.keys.create("other").key
    prompts = write_prompts(settings.data_dir / "prompts.jsonl", 8)
    submitted = ft_client.post(f"{SDG}/submit_job", json=job_body(prompts), headers=bearer(owner))
    job = wait_for_job(ft_client, owner, submitted.json()["job_id"], timeout=300)
    response = ft_client.post(FT, json={"base_model": "demo-lm", "sdg_job": job["job_id"]}, headers=bearer(other))
    assert response.status_code == 400 and "sdg_job not found" in response.text


def test_an_empty_feedback_export_is_refused_with_its_reason(client: TestClient, admin_key: str) -> None:
    response = client.post(FT, json={"base_model": "demo-lm", "feedback": True}, headers=bearer(admin_key))
    assert response.status_code == 400
    assert "feedback export has no training rows" in response.text and "no feedback" in response.text


def test_the_feedback_export_trains_a_model(ft_client: TestClient, admin_key: str) -> None:
    corrected = {"What is 57+68?": "125", "What is 19+23?": "42", "What is 80+14?": "94"}
    for prompt, answer in corrected.items():
        generated = ft_client.post(
            "/api/v1/generate",
            json={"prompt": prompt, "model_id": "demo-lm", "max_tokens": 6, "temperature": 1.0},
            headers=bearer(admin_key),
        ).json()
        rated = ft_client.post(
            "/api/v1/feedback",
            json={"generation_id": generated["metadata"]["generation_id"], "corrected_response": answer},
            headers=bearer(admin_key),
        )
        assert rated.status_code in (200, 201), rated.text
    done = _train(ft_client, admin_key, feedback=True, method="sft", suffix="people")
    assert done["training_rows"] == len(corrected)  # each corrected answer once
    rows = ft_client.get(f"{FT}/{done['id']}/events", headers=bearer(admin_key)).json()["data"][0]["message"]
    assert rows == "validated 3 training row(s) from feedback"

"""Human feedback: give it on generations (/generate, /generate/batch, /v1) and SDG rows, list it,
export it as preference pairs or SFT examples; errors are the spec's ErrorResponse."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import DEMO_PROMPTS, bearer, running_worker, wait_for_job
from tests.spec import assert_error
from winnow.api import create_app
from winnow.config import Settings
from winnow.runtime import Runtime

FEEDBACK = "/api/v1/feedback"
PROMPT = "What is 17+25?"


def _generate(client: TestClient, key: str, prompt: str = PROMPT, temperature: float = 1.0) -> dict[str, Any]:
    body = {"prompt": prompt, "model_id": "demo-lm", "max_tokens": 8, "temperature": temperature}
    response = client.post("/api/v1/generate", json=body, headers=bearer(key))
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def _give(client: TestClient, key: str, **body: Any) -> Any:
    return client.post(FEEDBACK, json=body, headers=bearer(key))


def _given(client: TestClient, key: str, status: int = 201, **body: Any) -> dict[str, Any]:
    response = _give(client, key, **body)
    assert response.status_code == status, response.text
    item: dict[str, Any] = response.json()
    return item


def _export(client: TestClient, key: str, fmt: str | None = None) -> list[dict[str, Any]]:
    params = {"format": fmt} if fmt else {}
    response = client.get(f"{FEEDBACK}/export", params=params, headers=bearer(key))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert response.headers["content-disposition"].startswith("attachment")
    return [json.loads(line) for line in response.text.splitlines()]


def test_rated_and_corrected_generations_export_as_preference_pairs(client: TestClient, user_key: str) -> None:
    texts, ids = [], []
    for _ in range(3):
        result = _generate(client, user_key)
        texts.append(result["text"])
        ids.append(result["metadata"]["generation_id"])
    up = _given(client, user_key, generation_id=ids[0], rating="up", labels=["correct"])
    assert up["id"].startswith("fb-") and len(up["id"]) == 27
    assert up["target"] == "generation" and up["generation_id"] == ids[0] and up["index"] == 0
    assert (up["prompt"], up["response"], up["model"]) == (PROMPT, texts[0], "demo-lm")
    assert (up["rating"], up["rating_scale"], up["labels"]) == ("up", "thumbs", ["correct"])
    assert up["created_at"].endswith("Z")
    _given(client, user_key, generation_id=ids[1], rating="down")
    correction = "17 + 25 = 42."  # never a demo-lm answer, so at least two pairs whatever it generated
    fixed = _given(client, user_key, generation_id=ids[2], rating="down", corrected_response=correction, comment="bad")
    assert fixed["corrected_response"] == correction and fixed["comment"] == "bad"

    rows = _export(client, user_key)  # preference is the default
    assert rows and all(set(row) == {"prompt", "chosen", "rejected"} for row in rows)
    assert all(row["prompt"] == PROMPT and row["chosen"] != row["rejected"] for row in rows)
    chosen = dict.fromkeys([texts[0], correction])  # the positive response and the correction
    rejected = dict.fromkeys([texts[1], texts[2]])  # the negatives (the corrected one is one too)
    expected = [(c, r) for c in chosen for r in rejected if c != r]
    assert [(row["chosen"], row["rejected"]) for row in rows] == expected


def test_chat_choices_take_feedback_by_response_id_and_index(client: TestClient, user_key: str) -> None:
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is 5+5?"}]
    # Seeded, so the same choices every run; of several samples, judge the first and the first
    # that differs from it, so the preference pair below always exists.
    body = {"model": "demo-lm", "messages": messages, "n": 6, "max_tokens": 8, "temperature": 1.0, "seed": 4}
    chat = client.post("/v1/chat/completions", json=body, headers=bearer(user_key)).json()
    contents = [choice["message"]["content"] for choice in chat["choices"]]
    first = contents[0]
    index = next(i for i, content in enumerate(contents) if content != first)
    second = contents[index]

    item = _given(client, user_key, generation_id=chat["id"], index=index, rating=5)
    assert (item["response"], item["index"], item["prompt"]) == (second, index, messages)
    assert (item["rating"], item["rating_scale"]) == (5, "stars")
    assert_error(_give(client, user_key, generation_id=chat["id"], index=6, rating=1), 404, "not_found")
    assert_error(_give(client, user_key, generation_id="gen-nope", rating=1), 404, "not_found")

    # A 2-star answer to the same prompt: a conversational preference pair, and one SFT example.
    _given(client, user_key, generation_id=chat["id"], index=0, rating=2)
    assert _export(client, user_key, "preference") == [
        {
            "prompt": messages,
            "chosen": [{"role": "assistant", "content": second}],
            "rejected": [{"role": "assistant", "content": first}],
        }
    ]
    assert _export(client, user_key, "sft") == [{"messages": [*messages, {"role": "assistant", "content": second}]}]


def test_a_key_judges_and_sees_only_its_own_and_an_admin_sees_all(
    client: TestClient, runtime: Runtime, user_key: str, admin_key: str
) -> None:
    other = runtime.keys.create("other").key
    mine = _generate(client, user_key)["metadata"]["generation_id"]
    batch = client.post(
        "/api/v1/generate/batch",
        json={"prompts": ["What is 1+1?", "What is 2+2?"], "model_id": "demo-lm", "max_tokens": 8},
        headers=bearer(other),
    ).json()
    theirs = batch["results"][1]["metadata"]["generation_id"]

    assert_error(_give(client, other, generation_id=mine, rating="up"), 404, "not_found")
    given = _given(client, user_key, generation_id=mine, rating="up", labels=["good", "good", "short"])
    assert given["labels"] == ["good", "short"]
    item = _given(client, other, generation_id=theirs, labels=["math"])
    assert item["prompt"] == "What is 2+2?" and item["response"] == batch["results"][1]["text"]
    assert item["rating"] is None and item["rating_scale"] is None

    def listed(key: str, **params: Any) -> list[str]:
        response = client.get(FEEDBACK, params=params, headers=bearer(key))
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["count"] == len(body["items"])
        return [i["id"] for i in body["items"]]

    assert listed(user_key) == [given["id"]]
    assert listed(other) == [item["id"]]
    assert listed(admin_key) == [item["id"], given["id"]]  # newest first
    assert listed(admin_key, generation_id=mine) == [given["id"]]
    assert listed(admin_key, label="math") == [item["id"]]
    assert listed(admin_key, limit=1) == [item["id"]]
    assert listed(other, generation_id=mine) == []
    # An admin may judge any key's generation.
    _given(client, admin_key, generation_id=mine, rating="down")
    assert all(row["prompt"] == PROMPT for row in _export(client, admin_key, "sft"))
    assert _export(client, other, "sft") == []  # labels alone choose nothing
    assert_error(client.get(FEEDBACK, params={"job_id": "nope"}, headers=bearer(user_key)), 400, "validation_error")


def test_malformed_feedback_is_400(client: TestClient, user_key: str) -> None:
    generation_id = _generate(client, user_key)["metadata"]["generation_id"]
    row = {"job_id": "job-" + "0" * 24, "id": "add-0001", "index": 0}
    bad: list[dict[str, Any]] = [
        {"rating": "up"},  # no target
        {"generation_id": generation_id, **row, "rating": "up"},  # both targets
        {"generation_id": generation_id},  # no judgement
        {"generation_id": generation_id, "labels": []},
        {"generation_id": generation_id, "rating": 6},
        {"generation_id": generation_id, "rating": 0},
        {"generation_id": generation_id, "rating": "meh"},
        {"generation_id": generation_id, "rating": True},
        {"generation_id": generation_id, "rating": "5"},
        {"generation_id": generation_id, "rating": "up", "index": -1},
        {"generation_id": generation_id, "rating": "up", "colour": "red"},
        {"generation_id": generation_id, "labels": ["x"] * 21},
        {"generation_id": generation_id, "comment": ""},
        {"job_id": "job-1", "id": "add-0001", "index": 0, "rating": "up"},
        {"job_id": row["job_id"], "id": "add-0001", "rating": "up"},  # a row needs its index
    ]
    for body in bad:
        response = client.post(FEEDBACK, json=body, headers=bearer(user_key))
        assert_error(response, 400, "validation_error")
    details = assert_error(_give(client, user_key, rating="up"), 400)["details"]
    assert "generation_id" in details and "job_id" in details
    details = assert_error(_give(client, user_key, generation_id=generation_id), 400)["details"]
    assert "at least one of rating" in details
    assert_error(client.post(FEEDBACK, json=[1], headers=bearer(user_key)), 400, "validation_error")
    assert_error(client.get(f"{FEEDBACK}/export", params={"format": "csv"}, headers=bearer(user_key)), 400)
    assert_error(client.get(FEEDBACK, params={"limit": 0}, headers=bearer(user_key)), 400)
    assert_error(client.post(FEEDBACK, json={"generation_id": generation_id, "rating": "up"}), 401, "unauthorized")
    # Whole-number floats are JSON integers.
    assert _given(client, user_key, generation_id=generation_id, rating=4.0)["rating"] == 4


def test_sft_export_shape_for_plain_prompts(client: TestClient, user_key: str) -> None:
    a = _generate(client, user_key)
    # Greedy, so the same text every run; neither correction below is a demo-lm answer.
    b = _generate(client, user_key, "What is 2+3?", temperature=0.0)
    same = _generate(client, user_key, "What is 4+4?", temperature=0.0)
    correction = "2 + 3 = 5."
    assert b["text"] != correction
    _given(client, user_key, generation_id=a["metadata"]["generation_id"], rating=4)
    _given(client, user_key, 200, generation_id=a["metadata"]["generation_id"], rating="up")  # updates the 4
    _given(client, user_key, generation_id=b["metadata"]["generation_id"], rating=3, corrected_response=correction)
    # A "correction" that repeats the response is an SFT example but pairs with nothing.
    _given(client, user_key, generation_id=same["metadata"]["generation_id"], corrected_response=same["text"])
    rows = _export(client, user_key, "sft")
    assert rows == [
        {"prompt": PROMPT, "completion": a["text"]},
        {"prompt": "What is 2+3?", "completion": correction},
        {"prompt": "What is 4+4?", "completion": same["text"]},
    ]
    # 3 stars is neither good nor bad; the corrected original is rejected against its correction.
    pairs = _export(client, user_key, "preference")
    assert pairs == [{"prompt": "What is 2+3?", "chosen": correction, "rejected": b["text"]}]


def test_generations_kept_without_text_cannot_take_feedback(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", workers=0, store_generations=False)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        key = client.app.state.runtime.keys.create("k").key  # type: ignore[attr-defined]
        generation_id = _generate(client, key)["metadata"]["generation_id"]
        body = assert_error(_give(client, key, generation_id=generation_id, rating="up"), 409, "conflict")
        assert "store_generations" in body["details"]


def _run_job(client: TestClient, runtime: Runtime, key: str, body: dict[str, Any]) -> dict[str, Any]:
    job = client.post("/api/v1/synthetic_data_generation/submit_job", json=body, headers=bearer(key)).json()
    with running_worker(runtime.settings):
        return wait_for_job(client, key, job["job_id"], ("completed", "failed", "cancelled"), timeout=60)


def test_sdg_rows_take_feedback_by_job_row_id_and_index(client: TestClient, runtime: Runtime, user_key: str) -> None:
    prompts = runtime.settings.data_dir / "prompts.jsonl"
    prompts.write_text("".join(line + "\n" for line in DEMO_PROMPTS.read_text().splitlines()[:10]))
    row_id = {"job_id": "job-" + "0" * 24, "id": "add-0001", "index": 0}
    assert_error(_give(client, user_key, **row_id, rating="up"), 404, "not_found")  # no such job
    body = {
        "model": "demo-lm",
        "prompts_path": str(prompts),
        "batch_size": 5,
        "max_gen_len": 8,
        "num_generations": 2,
        "temperature": 1.0,
        "reward_model": "demo-rm",
        "seed": 3,
    }
    job = _run_job(client, runtime, user_key, body)
    assert job["status"] == "completed", job
    rows = [json.loads(line) for line in Path(job["output_file_path"]).read_text().splitlines()]
    row = rows[-1]

    item = _given(client, user_key, job_id=job["job_id"], id=row["id"], index=row["index"], rating="down")
    assert item["target"] == "sdg_row" and item["generation_id"] is None
    assert (item["job_id"], item["row_id"], item["index"], item["model"]) == (
        job["job_id"],
        row["id"],
        row["index"],
        "demo-lm",
    )
    assert item["prompt"] == row["prompt"] and item["response"] == row["response"]["content"]
    missing = {"job_id": job["job_id"], "id": "no-such-row", "index": 0, "rating": "up"}
    assert_error(client.post(FEEDBACK, json=missing, headers=bearer(user_key)), 404, "not_found")
    out_of_range = {"job_id": job["job_id"], "id": row["id"], "index": 99, "rating": "up"}
    assert_error(client.post(FEEDBACK, json=out_of_range, headers=bearer(user_key)), 404, "not_found")
    other = runtime.keys.create("other").key
    assert_error(_give(client, other, job_id=job["job_id"], id=row["id"], index=row["index"], rating="up"), 404)
    listed = client.get(FEEDBACK, params={"job_id": job["job_id"]}, headers=bearer(user_key)).json()
    assert [i["id"] for i in listed["items"]] == [item["id"]]

    _given(client, user_key, 200, job_id=job["job_id"], id=row["id"], index=row["index"], corrected_response="fixed")
    sft = _export(client, user_key, "sft")
    assert sft == [{"messages": [*row["prompt"], {"role": "assistant", "content": "fixed"}]}]


def test_a_second_judgement_of_a_response_updates_the_first(
    client: TestClient, runtime: Runtime, user_key: str
) -> None:
    generation_id = _generate(client, user_key)["metadata"]["generation_id"]
    first = _given(client, user_key, generation_id=generation_id, rating="up")
    again = _give(client, user_key, generation_id=generation_id, labels=["terse"], comment="short")
    assert again.status_code == 200, again.text
    updated = again.json()
    assert updated["id"] == first["id"]
    assert (updated["rating"], updated["labels"], updated["comment"]) == ("up", ["terse"], "short")  # rating kept
    down = _give(client, user_key, generation_id=generation_id, rating=2, labels=[])
    assert down.status_code == 200 and down.json()["id"] == first["id"]
    assert (down.json()["rating"], down.json()["labels"], down.json()["comment"]) == (2, [], "short")
    listed = client.get(FEEDBACK, params={"generation_id": generation_id}, headers=bearer(user_key)).json()
    assert [i["id"] for i in listed["items"]] == [first["id"]] and listed["count"] == 1
    admin = runtime.keys.create("reviewer", admin=True).key  # another key's judgement is its own
    theirs = _given(client, admin, generation_id=generation_id, rating="down")
    assert theirs["id"] != first["id"]
    other_choice = _give(client, user_key, generation_id=generation_id, index=1, rating="up")
    assert other_choice.status_code == 404  # (one choice only): a new target, not an update

"""Every list of the API pages with a cursor, as OpenAI's lists do: ``limit`` items, newest first,
``after`` the id of the previous page's last item, ``has_more`` while older ones follow; and the
job lists narrow by status, model and creation time."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel
from sqlalchemy import update

from tests.conftest import DEMO_PROMPTS, bearer
from tests.sdg.jobs import job_body
from winnow.db import Feedback, SdgJob
from winnow.runtime import Runtime
from winnow.schemas.evals import EvaluationRequest
from winnow.schemas.finetune import FineTuningJobRequest
from winnow.schemas.sdg import SubmitJobRequest
from winnow.sdg.inputs import PromptFile

SDG = "/api/v1/synthetic_data_generation/jobs"
PROMPTS = PromptFile(path=DEMO_PROMPTS, rows=3, size=1, sha256="0" * 64)


def _spec(kind: str, model: str = "demo-lm") -> BaseModel:
    """A valid request of ``kind`` (sdg, eval or ft) that uses ``model``."""
    if kind == "sdg":
        return SubmitJobRequest.model_validate(job_body(DEMO_PROMPTS, model=model))
    if kind == "eval":
        template = [{"name": "t", "template": "{prompt}"}]
        return EvaluationRequest.model_validate(
            {"dataset_path": str(DEMO_PROMPTS), "templates": template, "models": [model]}
        )
    return FineTuningJobRequest.model_validate({"base_model": model, "training_file": str(DEMO_PROMPTS)})


def _queue(runtime: Runtime, key: str, kind: str, count: int, model: str = "demo-lm") -> list[str]:
    """``count`` queued jobs of ``kind`` owned by ``key``, oldest first (straight into the store: the
    lists are what is tested, not the submit checks)."""
    owner = runtime.keys.authenticate(key)
    return [runtime.jobs.create(_spec(kind, model), PROMPTS, owner, kind).id for _ in range(count)]


def _page(client: TestClient, key: str, path: str, **params: Any) -> dict[str, Any]:
    response = client.get(path, params=params, headers=bearer(key))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_the_105th_job_is_reachable_through_the_cursor(client: TestClient, runtime: Runtime, user_key: str) -> None:
    ids = _queue(runtime, user_key, "sdg", 105)
    first = _page(client, user_key, SDG, limit=100)
    assert first["count"] == 100 and first["has_more"] is True
    assert [j["job_id"] for j in first["jobs"]] == ids[::-1][:100]  # newest first
    assert (first["first_id"], first["last_id"]) == (ids[-1], ids[5])
    rest = _page(client, user_key, SDG, limit=100, after=first["last_id"])
    assert [j["job_id"] for j in rest["jobs"]] == ids[4::-1]  # the oldest job is on the second page
    assert rest["has_more"] is False and rest["count"] == 5


def test_jobs_created_in_the_same_instant_page_without_repeats_or_gaps(
    client: TestClient, runtime: Runtime, user_key: str
) -> None:
    ids = _queue(runtime, user_key, "sdg", 7)
    same = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with runtime.db.session() as session:
        session.execute(update(SdgJob).values(created_at=same))
    seen: list[str] = []
    after = None
    while True:
        page = _page(client, user_key, SDG, limit=2, **({"after": after} if after else {}))
        seen += [j["job_id"] for j in page["jobs"]]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert sorted(seen) == sorted(ids) and len(seen) == 7


def test_a_job_submitted_between_pages_does_not_shift_the_next_page(
    client: TestClient, runtime: Runtime, user_key: str
) -> None:
    ids = _queue(runtime, user_key, "sdg", 4)
    first = _page(client, user_key, SDG, limit=2)
    _queue(runtime, user_key, "sdg", 1)
    second = _page(client, user_key, SDG, limit=2, after=first["last_id"])
    assert [j["job_id"] for j in second["jobs"]] == [ids[1], ids[0]]


def test_fine_tuning_list_says_has_more_when_more_follow(client: TestClient, runtime: Runtime, user_key: str) -> None:
    ids = _queue(runtime, user_key, "ft", 2)
    path = "/api/v1/fine_tuning/jobs"
    first = _page(client, user_key, path, limit=1)
    assert [j["id"] for j in first["data"]] == [ids[1]]
    assert first["has_more"] is True and first["object"] == "list"
    second = _page(client, user_key, path, limit=1, after=first["last_id"])
    assert [j["id"] for j in second["data"]] == [ids[0]] and second["has_more"] is False


def test_evaluations_page(client: TestClient, runtime: Runtime, user_key: str) -> None:
    ids = _queue(runtime, user_key, "eval", 3)
    first = _page(client, user_key, "/api/v1/evaluations", limit=2)
    assert [e["id"] for e in first["evaluations"]] == [ids[2], ids[1]] and first["has_more"] is True
    second = _page(client, user_key, "/api/v1/evaluations", limit=2, after=first["last_id"])
    assert [e["id"] for e in second["evaluations"]] == [ids[0]] and second["has_more"] is False


def _feedback(runtime: Runtime, key: str, count: int, labels: list[str]) -> list[str]:
    owner = runtime.keys.authenticate(key)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    ids = [f"fb-{uuid.uuid4().hex[:24]}" for _ in range(count)]
    with runtime.db.session() as session:
        for i, fid in enumerate(ids):
            session.add(
                Feedback(
                    id=fid,
                    owner_key_id=owner.id,
                    created_at=start + timedelta(seconds=i),
                    target="generation",
                    generation_id=f"gen-{i}",
                    row_index=0,
                    response="r",
                    labels=labels if i % 2 else [],
                )
            )
    return ids


def test_feedback_pages_past_any_limit_and_with_a_label_filter(
    client: TestClient, runtime: Runtime, user_key: str
) -> None:
    ids = _feedback(runtime, user_key, 5, ["good"])
    first = _page(client, user_key, "/api/v1/feedback", limit=3)
    assert [i["id"] for i in first["items"]] == ids[:1:-1] and first["has_more"] is True
    second = _page(client, user_key, "/api/v1/feedback", limit=3, after=first["last_id"])
    assert [i["id"] for i in second["items"]] == [ids[1], ids[0]] and second["has_more"] is False
    labelled = _page(client, user_key, "/api/v1/feedback", limit=1, label="good")
    assert [i["id"] for i in labelled["items"]] == [ids[3]] and labelled["has_more"] is True
    older = _page(client, user_key, "/api/v1/feedback", limit=1, label="good", after=labelled["last_id"])
    assert [i["id"] for i in older["items"]] == [ids[1]] and older["has_more"] is False


def test_a_cursor_that_is_not_in_the_list_is_refused(
    client: TestClient, runtime: Runtime, user_key: str, admin_key: str
) -> None:
    (theirs,) = _queue(runtime, admin_key, "sdg", 1)
    _queue(runtime, user_key, "sdg", 1)
    for after in (theirs, "job-" + "0" * 24):
        response = client.get(SDG, params={"after": after}, headers=bearer(user_key))
        assert response.status_code == 400, response.text
        assert "cursor" in response.json()["message"].lower()


@pytest.mark.parametrize("kind", ["sdg", "eval", "ft"])
def test_job_lists_filter_by_status_model_and_creation_time(
    client: TestClient, runtime: Runtime, user_key: str, kind: str
) -> None:
    path, items, ident = {
        "sdg": (SDG, "jobs", "job_id"),
        "eval": ("/api/v1/evaluations", "evaluations", "id"),
        "ft": ("/api/v1/fine_tuning/jobs", "data", "id"),
    }[kind]
    old, new = _queue(runtime, user_key, kind, 2)
    (other,) = _queue(runtime, user_key, kind, 1, "other-lm")
    with runtime.db.session() as session:
        session.execute(update(SdgJob).where(SdgJob.id == old).values(created_at=datetime(2025, 1, 1, tzinfo=UTC)))
        session.execute(update(SdgJob).where(SdgJob.id == new).values(status="failed"))

    def listed(**params: Any) -> list[str]:
        return [item[ident] for item in _page(client, user_key, path, **params)[items]]

    assert listed(model="other-lm") == [other]
    assert sorted(listed(model="demo-lm")) == sorted([old, new])
    assert listed(status="failed") == [new]
    assert listed(created_before="2025-06-01T00:00:00Z") == [old]
    assert old not in listed(created_after="2025-06-01T00:00:00Z")

"""The console's lists and the pages around them, in Debian's Chromium at 1280 and 390 px against a
real ``winnow serve`` with one job worker: the jobs list pages back to an older job and filters by
status, model and date (the submit form above it); a failed playground send leaves the conversation
usable; an evaluation arm whose rows all failed shows no win rate and a prompt over the context is
refused at submit; the feedback page fits a phone, a second save updates the same feedback, the
review queue shows the prompt's reference fields and skips reviewed samples; the job page shows the
job's parameters, duration and cost."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import DEMO_LM, LiveServer, bearer, closed_port, wait_for, wait_for_job
from tests.sdg.jobs import job_body, submit
from tests.web.browser import PHONE, Console, admin, browser, console, expect, open_console
from winnow.config import Settings
from winnow.db import ApiKey, Database, SdgJob

pytestmark = pytest.mark.slow  # Chromium against a real `winnow serve` and its worker

__all__ = ["admin", "browser", "console"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("lists")
    config = root / "winnow.yaml"
    models = [
        {
            "id": "demo-lm",
            "path": str(DEMO_LM),
            "context_length": 64,
            "input_price_per_mtok": 2.0,
            "output_price_per_mtok": 8.0,
        },
        {"id": "dead", "provider": "openai", "base_url": f"http://127.0.0.1:{closed_port()}/v1", "max_retries": 0},
    ]
    config.write_text(json.dumps({"models": models}))  # JSON is YAML
    live = LiveServer(root / "live", env={"WINNOW_WORKERS": "1", "WINNOW_CONFIG": str(config)}).start()
    yield live
    live.stop()


def _insert_jobs(server: LiveServer, key_name: str, jobs: list[tuple[str, str]]) -> list[str]:
    """Jobs (model, status) of the key, straight into the server's database, oldest first, a minute
    apart and already ended (so the worker leaves them alone): the list is what is tested."""
    db = Database(Settings(data_dir=server.data_dir).effective_database_url)
    start = datetime.now(UTC) - timedelta(days=2)
    ids = []
    with db.session() as session:
        owner = session.scalars(select(ApiKey.id).where(ApiKey.name == key_name)).one()
        for i, (model, status) in enumerate(jobs):
            job_id = f"job-{i:024x}"
            created = start + timedelta(minutes=i)
            session.add(
                SdgJob(
                    id=job_id,
                    kind="sdg",
                    owner_key_id=owner,
                    params=job_body("p.jsonl", model=model),
                    status=status,
                    stage=status,
                    prompts_path="p.jsonl",
                    prompts_total=1,
                    prompts_sha256="0" * 64,
                    output_path=str(server.data_dir / "jobs" / job_id / "out.jsonl"),
                    checkpoint={},
                    cancel_requested=False,
                    attempts=0,
                    output_bytes=0,
                    created_at=created,
                    updated_at=created,
                    finished_at=created,
                )
            )
            ids.append(job_id)
    db.dispose()
    return ids


@contextmanager
def _at(browser: Any, server: LiveServer, console: Console, viewport: dict[str, int] | None) -> Iterator[Console]:
    """The test's own console (``viewport`` None: 1280x800) or a fresh one at ``viewport``."""
    if viewport is None:
        yield console
        return
    context, other = open_console(browser, server, viewport)
    try:
        yield other
    finally:
        context.close()


def _below(page: Any, upper: str, lower: str) -> bool:
    top = page.locator(upper).bounding_box()
    bottom = page.locator(lower).bounding_box()
    return bool(top["y"] + top["height"] <= bottom["y"])


def test_the_jobs_list_pages_to_an_older_job_and_filters(
    browser: Any, console: Console, server: LiveServer, admin: str
) -> None:
    key = server.cli("keys", "create", "pager").stdout.strip().splitlines()[-1]  # only these jobs are its
    ids = _insert_jobs(server, "pager", [("demo-lm", "completed")] + [("other-lm", "cancelled")] * 55)
    oldest = ids[0]
    console.sign_in(key, then="/ui/jobs")
    page = console.page
    rows = page.locator("#jobs tbody tr")
    expect(rows).to_have_count(50)
    assert _below(page, "#submit", "#jobs")  # the form is not below the list
    expect(page.locator(f'#jobs tr[data-job-id="{oldest}"]')).to_have_count(0)
    expect(page.locator("#jobs-pager")).to_contain_text("older jobs follow")
    page.get_by_role("button", name="Older jobs →").click()
    expect(page.locator(f'#jobs tr[data-job-id="{oldest}"]')).to_be_visible()
    expect(rows).to_have_count(6)
    expect(page.locator("#jobs-pager")).to_contain_text("page 2")
    console.shot("jobs-page-2")
    page.get_by_role("button", name="← Newer jobs").click()
    expect(rows).to_have_count(50)
    expect(page.locator(f'#jobs tr[data-job-id="{ids[-1]}"]')).to_be_visible()

    page.locator("#flt-status").select_option("completed")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    expect(page.locator(f'#jobs tr[data-job-id="{oldest}"]')).to_be_visible()
    page.locator("#flt-status").select_option("")
    page.locator("#flt-model").fill("other-lm")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(50)
    expect(page.locator(f'#jobs tr[data-job-id="{oldest}"]')).to_have_count(0)
    page.locator("#flt-model").fill("")
    tomorrow = (datetime.now() + timedelta(days=1)).strftime("%Y-%m-%d")
    page.locator("#flt-from").fill(tomorrow)
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(0)
    expect(page.locator("#jobs-empty")).to_have_text("No jobs match these filters.")
    console.shot("jobs-filtered")

    context, phone = open_console(browser, server, PHONE)
    try:
        phone.sign_in(key, then="/ui/jobs")
        expect(phone.page.locator("#jobs tbody tr")).to_have_count(50)
        phone.page.get_by_role("button", name="Older jobs →").click()
        expect(phone.page.locator(f'#jobs tr[data-job-id="{oldest}"]')).to_be_visible()
        assert phone.no_horizontal_scroll()
        phone.shot("jobs-390x844")
    finally:
        context.close()


def test_a_failed_playground_send_leaves_the_conversation_usable(
    browser: Any, console: Console, server: LiveServer, admin: str
) -> None:
    for viewport, name in ((None, "playground-failed"), (PHONE, "playground-failed-390x844")):
        with _at(browser, server, console, viewport) as current:
            current.sign_in(admin, then="/ui/playground")
            page = current.page
            page.locator("#p-model").select_option("demo-lm")
            page.locator("#p-temp").fill("0")
            page.locator("#p-max").fill("4")
            page.get_by_label("Message").fill("What is 2+2? " * 40)  # far over demo-lm's 64-token context
            page.get_by_role("button", name="Send").click()
            failed = page.locator(".msg.user.failed")
            expect(failed).to_have_count(1)
            expect(failed.locator(".error")).to_contain_text("context")
            expect(page.locator(".msg.assistant")).to_have_count(0)
            expect(page.get_by_label("Message")).to_have_value(re.compile(r"^What is 2\+2\?"))  # back to edit
            current.shot(name)
            page.get_by_label("Message").fill("What is 3+4?")
            page.get_by_role("button", name="Send").click()  # no "New chat" in between
            answer = page.locator(".msg.assistant .content")
            expect(answer).to_have_count(1)
            expect(answer).not_to_have_text("", timeout=60_000)
            expect(page.get_by_role("button", name="Rate answer 1 up")).to_be_visible()
            expect(page.locator("#flash")).to_be_hidden()
            if viewport is not None:
                assert current.no_horizontal_scroll()
            current.shot(f"{name}-then-answered")


def test_an_all_failed_arm_shows_no_win_rate_and_a_long_template_is_refused(
    browser: Any, console: Console, server: LiveServer, admin: str, tmp_path: Path
) -> None:
    dataset = server.data_dir / "two.jsonl"
    dataset.write_text(
        '{"id": "a", "prompt": "What is 2+2?", "answer": "4"}\n{"id": "b", "prompt": "What is 3+3?", "answer": "6"}\n'
    )
    body = {
        "name": "dead arm",
        "dataset_path": str(dataset),
        "templates": [{"name": "plain", "template": "{prompt}"}],
        "models": ["demo-lm", "dead"],
        "scoring_function": "exact_match:answer",
        "max_tokens": 4,
    }
    with httpx.Client(base_url=server.url, timeout=60) as client:
        created = client.post("/api/v1/evaluations", json=body, headers=bearer(admin))
        assert created.status_code == 202, created.text
        evaluation = wait_for(client, admin, f"/api/v1/evaluations/{created.json()['id']}")
    assert evaluation["status"] == "completed", evaluation
    for viewport in (None, PHONE):
        with _at(browser, server, console, viewport) as current:
            current.sign_in(admin, then=f"/ui/evals?id={evaluation['id']}")
            table = current.page.locator("#comparison tbody tr")
            expect(table).to_have_count(2)
            expect(table.nth(0)).to_contain_text("baseline")
            expect(table.nth(1)).to_contain_text("dead")
            expect(table.nth(1)).not_to_contain_text("baseline")
            expect(table.nth(1)).to_contain_text("no rows compared")
            current.shot("evals-dead-arm" if viewport is None else "evals-dead-arm-390x844")
            if viewport is not None:
                assert current.no_horizontal_scroll()

    page = console.page
    page.set_input_files("#e-file", str(dataset))
    page.locator("#e-models").select_option(["demo-lm"])
    page.locator("#e-templates").fill("long={prompt} " + "pad " * 300)
    page.get_by_role("button", name="Start evaluation").click()
    expect(page.locator("#flash")).to_contain_text("fits the context of demo-lm")
    console.shot("evals-context-refused")


@pytest.fixture(scope="module")
def reviewed_job(server: LiveServer, admin: str) -> str:
    """A completed job over three prompts with an ``answer`` each (the review queue's references)."""
    prompts = server.data_dir / "answers.jsonl"
    rows = [("q1", "What is 2+2?", "4"), ("q2", "What is 9+9?", "18"), ("q3", "What is 4+5?", "9")]
    prompts.write_text("".join(json.dumps({"id": i, "prompt": p, "answer": a}) + "\n" for i, p, a in rows))
    with httpx.Client(base_url=server.url, timeout=60) as client:
        job = submit(client, admin, job_body(prompts, seed=7))
        assert wait_for_job(client, admin, job["job_id"])["status"] == "completed"
    return str(job["job_id"])


def test_the_feedback_page_fits_a_phone_updates_saved_feedback_and_reviews_unreviewed(
    browser: Any, console: Console, server: LiveServer, admin: str, reviewed_job: str
) -> None:
    context, phone = open_console(browser, server, PHONE)
    try:
        phone.sign_in(admin, then="/ui/feedback")
        phone.page.locator("#q-job").select_option(reviewed_job)
        expect(phone.page.locator("#q-where")).to_contain_text("Sample 1 of 3")
        assert phone.no_horizontal_scroll()
        phone.shot("feedback-390x844")
    finally:
        context.close()

    console.sign_in(admin, then=f"/ui/feedback?job={reviewed_job}")
    page = console.page
    expect(page.locator("#q-where")).to_contain_text("Sample 1 of 3 · 0 reviewed")
    expect(page.locator("#q-reference")).to_contain_text("answer")
    expect(page.locator("#q-reference")).to_contain_text("4")
    first = page.locator("#q-id").inner_text()
    page.get_by_role("button", name="Up (u)").click()  # rates and moves on
    expect(page.locator("#q-where")).to_contain_text("Sample 2 of 3 · 1 reviewed")
    listed = page.locator("#feedback tbody tr")
    expect(listed).to_have_count(1)
    page.get_by_role("button", name="Previous (k)").click()
    expect(page.locator("#q-id")).to_have_text(first)
    page.locator("#q-labels").fill("terse")
    page.locator("#q-comment").fill("fine")
    page.get_by_role("button", name=re.compile("^Save labels")).click()
    expect(page.locator("#q-current")).to_contain_text("labels: terse")
    expect(page.locator("#q-current")).to_contain_text("up")  # the rating stays
    expect(listed).to_have_count(1)  # the same feedback, updated: not a second row
    expect(listed.first).to_contain_text("terse")

    page.get_by_label("Unreviewed only").check()  # on a reviewed sample: on to the next unreviewed
    expect(page.locator("#q-where")).to_contain_text("Sample 2 of 3")
    page.get_by_role("button", name="Down (d)").click()
    expect(page.locator("#q-where")).to_contain_text("Sample 3 of 3 · 2 reviewed")
    page.get_by_role("button", name="Previous (k)").click()  # all before it are reviewed: stays
    expect(page.locator("#q-where")).to_contain_text("Sample 3 of 3")
    page.get_by_label("Unreviewed only").uncheck()
    page.get_by_role("button", name="Previous (k)").click()
    expect(page.locator("#q-where")).to_contain_text("Sample 2 of 3")
    expect(listed).to_have_count(2)
    console.shot("feedback")


def test_the_job_page_shows_parameters_duration_and_cost(
    browser: Any, console: Console, server: LiveServer, admin: str, reviewed_job: str
) -> None:
    for viewport in (None, PHONE):
        with _at(browser, server, console, viewport) as current:
            current.sign_in(admin, then=f"/ui/jobs/{reviewed_job}")
            summary = current.page.locator("#summary")
            expect(summary).to_contain_text("completed")
            for term, value in (
                ("Prompts file", "answers.jsonl"),
                ("Generations per prompt (n)", "1"),
                ("Temperature", "1"),
                ("Max tokens per response", "4"),
                ("Seed", "7"),
            ):
                expect(summary.locator("dt", has_text=term)).to_have_count(1)
                expect(summary.locator(f'dt:text-is("{term}") + dd')).to_contain_text(value)
            expect(summary.locator('dt:text-is("Duration") + dd')).to_have_text(
                re.compile(r"^\d+(\.\d)?s$|^\d+m \d+s$")
            )
            expect(summary.locator('dt:text-is("Cost") + dd')).to_have_text(re.compile(r"^\$0\.\d*[1-9]\d*$"))
            current.shot("job-parameters" if viewport is None else "job-parameters-390x844")
            if viewport is not None:
                assert current.no_horizontal_scroll()

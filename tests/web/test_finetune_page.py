"""The console's fine-tuning page in Debian's Chromium against a real ``winnow serve`` with one job
worker: upload a training file and start a job from the form, watch it complete in the list, read
its detail (loss curve, metrics, events), try the new model in the playground and delete it; and
hostile file names, training rows and API errors show as text and run nothing."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, bearer, wait_for_job
from tests.finetune.test_api import training_rows
from tests.sdg.jobs import job_body, submit
from tests.web.browser import PHONE, Console, admin, browser, console, expect, open_console

pytestmark = pytest.mark.slow  # Chromium against a real `winnow serve` that trains a model

__all__ = ["admin", "browser", "console"]

XSS = '<img src=x onerror="window.__xss = 1">'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("finetune-page") / "live", env={"WINNOW_WORKERS": "1"}).start()
    yield live
    live.stop()


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _upload(server: LiveServer, key: str, path: Path) -> str:
    files = {"file": (path.name, path.read_bytes(), "application/jsonl")}
    answer = httpx.post(
        f"{server.url}/api/v1/files", headers=bearer(key), files=files, data={"purpose": "fine-tune"}, timeout=60
    )
    answer.raise_for_status()
    return str(answer.json()["path"])


def _models(server: LiveServer, key: str) -> list[str]:
    listed = httpx.get(f"{server.url}/api/v1/models", headers=bearer(key), timeout=60).json()["models"]
    return [m["id"] for m in listed]


def test_start_a_job_from_the_form_watch_it_train_and_delete_its_model(
    browser: Any, console: Console, server: LiveServer, admin: str, tmp_path: Path
) -> None:
    train = _jsonl(tmp_path / "train.jsonl", training_rows(24))
    console.sign_in(admin, then="/ui/fine-tuning")
    page = console.page
    expect(page.get_by_role("link", name="Fine-tuning")).to_have_attribute("aria-current", "page")
    expect(page.locator("#ft-base option")).to_have_text(["demo-lm"])  # local models only
    page.get_by_label("An uploaded JSONL file").check()
    page.set_input_files("#ft-file", str(train))
    expect(page.locator("#ft-file-info")).to_have_text(re.compile(r"^Uploaded train\.jsonl: 24 training rows"))
    page.get_by_label("Epochs").fill("1")
    page.get_by_label("Batch size").fill("8")
    page.get_by_label("Learning rate").fill("0.003")
    page.get_by_label("LoRA rank").fill("8")
    page.get_by_label("Suffix").fill("console")
    page.get_by_role("button", name="Start fine-tuning").click()
    link = page.locator("#ft-started a")
    expect(link).to_have_text(re.compile(r"^ftjob-[0-9a-f]{24}$"))
    job_id = link.inner_text()
    model = f"demo-lm:ft-console-{job_id[6:14]}"
    row = page.locator(f'#ft-jobs tr[data-job-id="{job_id}"]')
    expect(row).to_contain_text("demo-lm")
    expect(row).to_contain_text("sft")
    # A second job waits behind the first (one worker); its Cancel button in the list cancels it.
    queued = httpx.post(
        f"{server.url}/api/v1/fine_tuning/jobs",
        headers=bearer(admin),
        json={"base_model": "demo-lm", "training_file": _upload(server, admin, train), "suffix": "never"},
        timeout=120,
    ).json()["id"]
    waiting = page.locator(f'#ft-jobs tr[data-job-id="{queued}"]')
    waiting.get_by_role("button", name=f"Cancel {queued}").click()
    expect(waiting).to_have_attribute("data-status", "cancelled")
    expect(row).to_have_attribute("data-status", "completed", timeout=240_000)  # the list polls; no reload
    expect(row).to_contain_text("3 / 3 steps")
    expect(row).to_contain_text(re.compile(r"loss \d"))
    expect(row.locator("td.model-id")).to_have_text(model)
    expect(page.locator("#ft-updated")).to_have_text("")  # polling stopped with nothing running
    console.shot("finetune-list")

    row.get_by_role("link", name=job_id).click()
    page.wait_for_url(re.compile(rf"/ui/fine-tuning/{job_id}$"))
    summary = page.locator("#ft-summary")
    expect(summary).to_contain_text("completed")
    expect(summary).to_contain_text(model)
    expect(page.locator("#ft-hyper")).to_contain_text("epochs1")
    expect(page.locator("#ft-hyper")).to_contain_text("learning rate0.003")
    expect(page.locator("#ft-hyper")).to_contain_text("r 8 · alpha 16")
    expect(page.locator("#ft-metrics")).to_contain_text("steps3")
    expect(page.locator("#ft-metrics")).to_contain_text("train loss")
    expect(page.locator("#ft-curve")).to_be_visible()
    page.wait_for_function("() => document.querySelector('#ft-curve').naturalWidth > 0")
    curve = page.locator("#ft-curve").get_attribute("src")
    assert curve and curve.startswith("blob:")  # fetched with the key, shown from an object URL
    events = page.locator("#ft-events tbody tr")
    expect(events.first).to_contain_text("validated 24 training row(s)")
    expect(page.locator("#ft-events")).to_contain_text(f"completed: the new model is {model}")
    total = events.count()
    assert total >= 5
    page.get_by_label("Events per page").select_option("5")  # paging: five at a time
    expect(events).to_have_count(5)
    expect(page.locator("#ft-events-where")).to_have_text("events 1\u20135, more after")
    page.get_by_role("button", name="Next page").click()
    expect(page.locator("#ft-events-where")).to_contain_text("events 6\u2013")
    expect(page.get_by_role("button", name="Previous page")).to_be_enabled()
    expect(page.get_by_role("button", name="Cancel job")).to_be_hidden()
    assert console.no_horizontal_scroll()
    console.shot("finetune-job")

    phone, small = open_console(browser, server, PHONE)
    small.sign_in(admin, then="/ui/fine-tuning")
    expect(small.page.locator(f'#ft-jobs tr[data-job-id="{job_id}"]')).to_have_attribute("data-status", "completed")
    assert small.no_horizontal_scroll()
    small.shot("finetune-list-phone")
    small.goto(f"/ui/fine-tuning/{job_id}")
    small.page.wait_for_function("() => document.querySelector('#ft-curve').naturalWidth > 0")
    expect(small.page.locator("#ft-events tbody tr").first).to_be_visible()
    assert small.no_horizontal_scroll()
    small.shot("finetune-job-phone")
    phone.close()
    assert not [e for e in small.errors if "Content Security Policy" in e or "uncaught" in e], small.errors

    try_it = page.get_by_role("link", name="Try it in the playground")
    expect(try_it).to_have_attribute("href", f"/ui/playground?model={model.replace(':', '%3A')}")
    try_it.click()
    page.wait_for_url(re.compile(r"/ui/playground\?model="))
    expect(page.locator("#p-model")).to_have_value(model)  # preselected
    page.go_back()

    expect(page.get_by_role("button", name="Delete model")).to_be_visible()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete model").click()
    expect(summary).to_contain_text(f"{model} (deleted)")
    expect(page.get_by_role("button", name="Delete model")).to_be_hidden()
    expect(page.get_by_role("link", name="Try it in the playground")).to_be_hidden()
    assert model not in _models(server, admin)


def test_a_job_trains_on_a_completed_sdg_job_and_cancels_from_its_page(
    console: Console, server: LiveServer, admin: str
) -> None:
    prompts = _jsonl(
        server.data_dir / "sdg-prompts.jsonl", [{"id": f"p{i}", "prompt": f"What is {i}+{i}?"} for i in range(6)]
    )
    with httpx.Client(base_url=server.url, timeout=60) as client:
        sdg = submit(client, admin, job_body(prompts))["job_id"]
        assert wait_for_job(client, admin, sdg)["status"] == "completed"
    console.sign_in(admin, then="/ui/fine-tuning")
    page = console.page
    expect(page.get_by_label("A completed synthetic-data job")).to_be_checked()
    choice = page.locator(f'#ft-sdg option[value="{sdg}"]')
    expect(choice).to_contain_text("demo-lm · 6 rows kept")
    page.locator("#ft-sdg").select_option(sdg)
    page.get_by_label("Epochs").fill("100")  # long enough to be cancelled before it ends
    page.get_by_role("button", name="Start fine-tuning").click()
    expect(page.locator("#ft-started")).to_contain_text("a worker checks its training rows")
    page.locator("#ft-started a").click()
    page.wait_for_url(re.compile(r"/ui/fine-tuning/ftjob-[0-9a-f]{24}$"))
    page.get_by_role("button", name="Cancel job").click()
    expect(page.locator("#ft-summary")).to_contain_text("cancelled")
    expect(page.get_by_role("button", name="Cancel job")).to_be_hidden()
    expect(page.get_by_role("button", name="Delete model")).to_be_hidden()


def test_hostile_file_names_rows_and_api_errors_show_as_text(
    console: Console, server: LiveServer, admin: str, tmp_path: Path
) -> None:
    console.sign_in(admin, then="/ui/fine-tuning")
    page = console.page
    page.get_by_label("An uploaded JSONL file").check()
    # A row whose role is markup: the API refuses the file and its details quote the row.
    bad = _jsonl(tmp_path / "bad.jsonl", [{"messages": [{"role": XSS, "content": "hi"}]}])
    page.set_input_files("#ft-file", str(bad))
    error = page.locator("#ft-error")
    expect(error).to_contain_text("The file was refused: Not a training file")
    expect(error).to_contain_text(XSS)  # the details quote the row, as text
    # A file name that is markup (no quotes: the browser sends those as %22), shown after its upload.
    hostile = _jsonl(tmp_path / "<img src=x onerror=window.__xss=1>.jsonl", training_rows(8))
    page.set_input_files("#ft-file", str(hostile))
    expect(page.locator("#ft-file-info")).to_contain_text(
        "Uploaded <img src=x onerror=window.__xss=1>.jsonl: 8 training rows"
    )
    expect(error).to_be_hidden()
    # A base model id that is markup: the API's 400 names it in its message.
    page.evaluate("(v) => document.querySelector('#ft-base').append(new Option(v, v, true, true))", XSS)
    page.get_by_role("button", name="Start fine-tuning").click()
    expect(error).to_contain_text(f"Not started: base_model: Model '{XSS}' not found")
    expect(error).to_contain_text("available: demo-lm")
    # A suffix the API refuses: its validation error, in the form.
    page.locator("#ft-base").select_option("demo-lm")
    page.get_by_label("Suffix").fill("<b>NO</b>")
    page.get_by_role("button", name="Start fine-tuning").click()
    expect(error).to_contain_text("Not started: Invalid request parameters")
    expect(error).to_contain_text("suffix: String should match pattern")
    assert page.locator("main img").count() == 0 and page.locator("main b").count() == 0
    assert page.evaluate("window.__xss") is None
    assert console.no_horizontal_scroll()
    console.shot("finetune-errors")
    jobs = httpx.get(f"{server.url}/api/v1/fine_tuning/jobs", headers=bearer(admin), timeout=60).json()["data"]
    assert not [j for j in jobs if j["base_model"] != "demo-lm"]  # nothing hostile was queued

"""End-to-end journeys through the console in Debian's Chromium against a real ``winnow serve``
with one job worker: submit a job from the form and watch it complete, read its histogram and
page through its samples, stream a playground answer, create and revoke a key; and user content
full of HTML payloads shows as text and runs nothing."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import JOB_STATUS, LiveServer, bearer, wait_for_job
from tests.sdg.jobs import SDG, job_body, submit, write_prompts
from tests.web.browser import PHONE, Console, admin, browser, console, expect, open_console
from winnow.config import Settings
from winnow.runtime import Runtime

pytestmark = pytest.mark.slow  # Chromium against a real `winnow serve` and its worker

__all__ = ["admin", "browser", "console"]

PAYLOADS = ["<script>window.__xss = 1</script>", '"><img src=x onerror="window.__xss = 1">']


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("journeys") / "live", env={"WINNOW_WORKERS": "1"}).start()
    yield live
    live.stop()


def _prompts(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"id": f"p{i}", "prompt": t}) + "\n" for i, t in enumerate(texts)))
    return path


def test_submit_a_job_from_the_form_and_browse_its_samples(
    browser: Any, console: Console, server: LiveServer, admin: str, tmp_path: Path
) -> None:
    prompts = _prompts(tmp_path / "four.jsonl", ["What is 1+2?", "What is 3+4?", "What is 5+6?", "What is 7+8?"])
    console.sign_in(admin, then="/ui/jobs")
    page = console.page
    page.set_input_files("#f-file", str(prompts))
    page.locator("#f-model").select_option("demo-lm")
    page.locator("#f-reward").select_option("demo-rm")
    page.locator("#f-scoring").select_option("raw")
    page.locator("#f-filter").select_option("none")
    page.get_by_label("Generations per prompt").fill("2")
    page.get_by_label("Max tokens per response").fill("4")
    expect(page.get_by_role("button", name="Submit job")).to_be_disabled()  # not before the estimate
    page.get_by_role("button", name="Estimate (dry run)").click()
    estimate = page.locator("#estimate-table")
    expect(estimate).to_contain_text("4 prompts")
    expect(estimate).to_contain_text("Generations8")
    expect(estimate).to_contain_text("Output tokens (at most)32")
    console.shot("jobs-estimate")
    page.get_by_role("button", name="Submit job").click()
    link = page.locator("#estimate-out a")
    expect(link).to_have_text(re.compile(r"^job-[0-9a-f]{24}$"))
    job_id = link.inner_text()
    row = page.locator(f'#jobs tr[data-job-id="{job_id}"]')
    expect(row).to_have_attribute("data-status", "completed", timeout=120_000)  # the list polls; no reload
    expect(row).to_contain_text("4 / 4 prompts · 8 scored · 8 kept")
    expect(row).to_contain_text("demo-lm")
    console.shot("jobs")

    row.get_by_role("link", name=job_id).click()
    page.wait_for_url(re.compile(rf"/ui/jobs/{job_id}$"))
    expect(page.locator("#summary")).to_contain_text("completed")
    histogram = page.locator("#histogram")
    expect(histogram).to_be_visible()
    page.wait_for_function("() => document.querySelector('#histogram').naturalWidth > 0")
    rows = page.locator("#rows tbody tr")
    expect(rows).to_have_count(8)
    page.locator("#rows-limit").select_option("5")
    expect(rows).to_have_count(5)
    expect(page.locator("#rows-where")).to_contain_text("page 1")
    page.get_by_role("button", name="Next page").click()
    expect(rows).to_have_count(3)
    expect(page.locator("#rows-where")).to_contain_text("page 2")
    expect(page.get_by_role("button", name="Next page")).to_be_disabled()
    page.get_by_role("button", name="Previous page").click()
    expect(rows).to_have_count(5)
    page.locator("#rows-sort").select_option("desc")
    scores = [float(s.replace(",", "")) for s in page.locator("#rows tbody td:nth-child(5)").all_inner_texts()]
    assert scores == sorted(scores, reverse=True)
    ids = page.locator("#rows tbody td:first-child").all_inner_texts()
    page.get_by_label("Search this page").fill(ids[0])
    expect(rows).to_have_count(ids.count(ids[0]))
    with page.expect_download() as download:
        page.get_by_role("button", name="Download output (JSONL)").click()
    lines = Path(download.value.path()).read_text().splitlines()
    assert len(lines) == 8 and all(json.loads(line)["id"].startswith("p") for line in lines)
    page.get_by_label("Search this page").fill("")
    console.shot("job")
    page.get_by_role("button", name="Next page").click()
    expect(page.locator("#rows-where")).to_contain_text("page 2")
    third = page.locator("#rows tbody tr").nth(2)
    sample = f"{third.locator('td').nth(0).inner_text()} #{third.locator('td').nth(1).inner_text()}"
    third.get_by_role("link", name=f"Rate {sample}").click()  # into the review queue at that sample
    expect(page.locator("#q-id")).to_have_text(sample)
    page.keyboard.press("u")
    expect(page.locator("#feedback tbody tr")).to_have_count(1)
    expect(page.locator("#feedback tbody")).to_contain_text(sample)
    page.go_back()

    context, phone = open_console(browser, server, PHONE)
    try:
        phone.sign_in(admin, then=f"/ui/jobs/{job_id}")
        expect(phone.page.locator("#rows tbody tr")).to_have_count(8)
        assert phone.no_horizontal_scroll()
        phone.shot("job-390x844")
    finally:
        context.close()


def test_rate_five_samples_from_the_review_queue_with_the_keyboard(
    console: Console, server: LiveServer, admin: str
) -> None:
    prompts = _prompts(server.data_dir / "review.jsonl", ["What is 2+2?", "What is 9+9?", "What is 4+5?"])
    with httpx.Client(base_url=server.url, timeout=30) as client:
        job = submit(client, admin, job_body(prompts, num_generations=2, temperature=1.0))
        assert wait_for_job(client, admin, job["job_id"])["status"] == "completed"
    console.sign_in(admin, then="/ui/feedback")
    page = console.page
    page.locator("#q-job").select_option(job["job_id"])
    expect(page.locator("#q-where")).to_contain_text("Sample 1 of 6 · 0 reviewed")
    seen: set[str] = set()
    for n in range(5):  # thumbs up for a prompt's first response, down for its second
        expect(page.locator("#q-where")).to_contain_text(f"Sample {n + 1} of 6 · {n} reviewed")
        prompt_id = page.locator("#q-id").inner_text().split(" #")[0]
        page.keyboard.press("d" if prompt_id in seen else "u")
        seen.add(prompt_id)
    expect(page.locator("#q-where")).to_contain_text("Sample 6 of 6 · 5 reviewed")
    page.keyboard.press("k")
    expect(page.locator("#q-where")).to_contain_text("Sample 5 of 6")
    expect(page.locator("#q-current")).to_have_text(re.compile(r"^(up|down)$"))
    page.keyboard.press("l")
    expect(page.locator("#q-labels")).to_be_focused()
    page.keyboard.type("checked")
    page.keyboard.press("Control+Enter")
    expect(page.locator("#q-current")).to_contain_text("labels: checked")
    expect(page.locator("#feedback tbody tr")).to_have_count(5)  # the labels update that sample's feedback
    console.shot("feedback")

    with page.expect_download() as download:
        page.get_by_role("button", name="Download preference pairs (JSONL)").click()
    exported = Path(download.value.path()).read_text().splitlines()
    api = httpx.get(f"{server.url}/api/v1/feedback/export", params={"format": "preference"}, headers=bearer(admin))
    assert exported == api.text.splitlines()  # the console shows exactly the API's export
    assert len(exported) >= 1 and all({"prompt", "chosen", "rejected"} <= json.loads(line).keys() for line in exported)
    expect(page.locator("#export-result")).to_have_text(f"preference: {api.headers['X-Winnow-Rows']} rows")


def test_run_an_evaluation_and_read_its_table(console: Console, server: LiveServer, admin: str) -> None:
    dataset = server.data_dir / "eval.jsonl"
    dataset.write_text(
        "".join(f'{{"id": "e{i}", "prompt": "What is {i}+{i}?", "answer": "{2 * i}"}}\n' for i in range(6))
    )
    console.sign_in(admin, then="/ui/evals")
    page = console.page
    page.set_input_files("#e-file", str(dataset))
    page.get_by_label("Name", exact=True).fill("two templates")
    page.locator("#e-models").select_option(["demo-lm"])
    page.get_by_label("Scoring function").fill("exact_match")
    page.locator("#e-templates").fill("plain={prompt}\nterse=Answer with a number. {prompt}")
    page.get_by_role("button", name="Start evaluation").click()
    row = page.locator("#evals tbody tr").first
    expect(row).to_have_attribute("data-status", "completed", timeout=120_000)
    eval_id = row.get_attribute("data-eval-id")
    table = page.locator("#comparison tbody tr")
    expect(table).to_have_count(2)
    expect(page.locator("#eval-chart canvas")).to_have_count(1)
    api = httpx.get(f"{server.url}/api/v1/evaluations/{eval_id}", headers=bearer(admin)).json()
    for shown, pair in zip(table.all(), api["table"], strict=True):  # the same numbers as the API
        cells = shown.locator("td").all_inner_texts()
        assert cells[:4] == [pair["template"], pair["model"], str(pair["rows"]), str(pair["errors"])]
        assert cells[4].startswith(f"{pair['mean_score']:.4f}".rstrip("0").rstrip(".")), cells
    expect(page.locator("#results tbody tr")).to_have_count(12)
    page.locator("#r-template").select_option("terse")
    expect(page.locator("#results tbody tr")).to_have_count(6)
    console.shot("evaluations")


def test_playground_streams_an_answer(console: Console, admin: str) -> None:
    console.sign_in(admin, then="/ui/playground")
    page = console.page
    page.locator("#p-model").select_option("demo-lm")
    page.get_by_label("Max tokens").fill("8")
    page.get_by_label("Message").fill("What is 17+25?")
    page.get_by_role("button", name="Send").click()
    expect(page.locator(".msg.user")).to_have_text("userWhat is 17+25?")
    expect(page.locator("#stats")).to_contain_text("completion tokens", timeout=60_000)
    answer = page.locator(".msg.assistant .content")
    assert answer.inner_text().strip(), "the streamed answer is empty"
    expect(page.locator("#stats")).to_contain_text("first token")
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    page.get_by_role("button", name="Rate answer 1 up").click()
    expect(page.locator(".msg.assistant")).to_contain_text("rated up")
    console.shot("playground")


def test_admin_creates_and_revokes_a_key_and_the_ui_refuses_it(
    browser: Any, console: Console, server: LiveServer, admin: str
) -> None:
    console.sign_in(admin, then="/ui/keys")
    page = console.page
    page.get_by_label("Name").fill("reviewer-1")
    page.get_by_label("Generation limit (e.g. 200/minute)").fill("50/minute")
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("#secret-value")
    expect(secret).to_have_text(re.compile(r"^wn-"))
    key = secret.inner_text()
    expect(page.locator('#keys tr[data-key="reviewer-1"]')).to_contain_text("generation 50/minute")
    page.locator("#b-key").select_option("reviewer-1")
    page.get_by_label("USD", exact=True).fill("5")
    page.get_by_role("button", name="Set budget").click()
    expect(page.locator('#keys tr[data-key="reviewer-1"]')).to_contain_text("$5 / month")
    console.shot("keys")

    context, user = open_console(browser, server)
    try:
        user.sign_in(key)
        expect(user.page.locator("#who")).to_have_text("reviewer-1")
        expect(user.page.get_by_role("link", name="Keys")).to_be_hidden()  # not an admin

        page.get_by_role("button", name="Revoke reviewer-1").click()
        page.get_by_role("button", name="Confirm revoking reviewer-1").click()
        expect(page.locator('#keys tr[data-key="reviewer-1"]')).to_have_count(0)
        page.get_by_label("Show revoked").check()
        expect(page.locator('#keys tr[data-key="reviewer-1"]')).to_be_visible()

        user.goto("/ui/jobs")  # the next API call is refused: back to sign-in, saying why
        user.page.wait_for_url(re.compile(r"/ui/signin\?"))
        expect(user.page.locator("#signin-error")).to_contain_text("Unknown or revoked API key")
        user.page.get_by_label("API key").fill(key)
        user.page.get_by_role("button", name="Sign in").click()
        expect(user.page.locator("#signin-error")).to_contain_text("This key was refused")
        assert user.page.evaluate("sessionStorage.length") == 0
    finally:
        context.close()


def _xss_free(page: Any) -> None:
    assert page.evaluate("window.__xss") is None, "an injected handler ran"
    assert page.locator("img[src='x']").count() == 0, "a payload was parsed as HTML"
    assert page.locator("main script").count() == 0


def test_user_content_is_shown_as_text_and_runs_nothing(console: Console, server: LiveServer, admin: str) -> None:
    """Payloads through prompts, responses, feedback labels, comments and corrections, key names, a job
    id in the URL, the sign-in message and the playground: each shows literally, and nothing runs."""
    prompts = _prompts(server.data_dir / "xss.jsonl", PAYLOADS)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        job = submit(client, admin, job_body(prompts, max_gen_len=2))
        done = wait_for_job(client, admin, job["job_id"])
        assert done["status"] == "completed", done
        output = Path(
            client.get(JOB_STATUS, params={"job_id": job["job_id"]}, headers=bearer(admin)).json()["output_file_path"]
        )
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    for row, payload in zip(rows, reversed(PAYLOADS), strict=True):  # responses carry payloads too
        row["response"]["content"] = payload
    output.write_text("".join(json.dumps(row) + "\n" for row in rows))
    runtime = Runtime.open(Settings(data_dir=server.data_dir, workers=0))
    try:
        for payload in PAYLOADS:  # the API refuses such names; the database does not
            runtime.keys.create(payload)
    finally:
        runtime.close()

    console.sign_in(admin, then=f"/ui/jobs/{job['job_id']}")
    page = console.page
    cells = page.locator("#rows tbody td.text")
    expect(cells).to_have_count(4)
    texts = cells.all_inner_texts()
    for payload in PAYLOADS:
        assert texts.count(payload) == 2, texts  # once as a prompt, once as a response
    _xss_free(page)

    console.goto(f"/ui/feedback?job={job['job_id']}")
    expect(page.locator("#q-prompt")).to_have_text(PAYLOADS[0])
    expect(page.locator("#q-response")).to_have_text(PAYLOADS[1])
    page.get_by_label("Labels (comma-separated)").fill(PAYLOADS[1])
    page.get_by_label("Comment").fill(PAYLOADS[0])
    page.get_by_label("Corrected response").fill(PAYLOADS[1])
    page.get_by_role("button", name=re.compile("^Save labels")).click()
    expect(page.locator("#feedback tbody .label")).to_have_text(PAYLOADS[1])
    expect(page.locator("#feedback tbody td.text").first).to_have_text(PAYLOADS[0])
    _xss_free(page)

    console.goto("/ui/keys")
    for payload in PAYLOADS:
        expect(page.locator("#keys tbody td:first-child", has_text=payload)).to_have_text(payload)
    _xss_free(page)

    console.goto("/ui/playground")
    page.locator("#p-model").select_option("demo-lm")
    page.get_by_label("Max tokens").fill("2")
    page.get_by_label("Message").fill(PAYLOADS[1])
    page.get_by_role("button", name="Send").click()
    expect(page.locator(".msg.user .content")).to_have_text(PAYLOADS[1])
    expect(page.locator("#stats")).to_contain_text("total", timeout=60_000)
    _xss_free(page)

    console.goto('/ui/jobs/"><img src=x onerror="window.__xss=1">')
    expect(page.locator("main h1")).to_be_visible()
    _xss_free(page)

    console.goto("/ui/signin?" + str(httpx.QueryParams({"reason": PAYLOADS[1]})))
    # The sign-in card shows only its own messages, keyed by code: a planted reason shows nothing.
    expect(page.locator("#signin-error")).to_be_hidden()
    expect(page.locator("body")).not_to_contain_text(PAYLOADS[1])
    _xss_free(page)


def test_a_running_job_progresses_in_the_list_and_cancels_from_it(
    console: Console, server: LiveServer, admin: str
) -> None:
    prompts = write_prompts(server.data_dir / "long.jsonl", 5000)  # minutes of work: it cannot end first
    with httpx.Client(base_url=server.url, timeout=30) as client:
        job = submit(client, admin, job_body(prompts, num_generations=4, max_gen_len=64, batch_size=8))
    console.sign_in(admin, then="/ui/jobs")
    page = console.page
    row = page.locator(f'#jobs tr[data-job-id="{job["job_id"]}"]')
    expect(row).to_have_attribute("data-status", re.compile("^(queued|running)$"))
    expect(row.locator("progress")).to_have_attribute("max", "5000")
    bar = f'#jobs tr[data-job-id="{job["job_id"]}"] progress'
    above = "([selector, value]) => document.querySelector(selector)?.value > value"
    page.wait_for_function(above, arg=[bar, 0], timeout=120_000)
    first = page.locator(bar).evaluate("node => node.value")
    page.wait_for_function(above, arg=[bar, first], timeout=120_000)  # it moves with no reload
    expect(row).to_contain_text("ETA")
    row.get_by_role("button", name=f"Cancel {job['job_id']}").click()
    expect(row).to_have_attribute("data-status", "cancelled", timeout=120_000)
    expect(row.get_by_role("button")).to_have_count(0)


def test_a_plain_key_sees_only_its_own_data(console: Console, server: LiveServer, admin: str) -> None:
    user = server.cli("keys", "create", "plain-user").stdout.strip().splitlines()[-1]
    with httpx.Client(base_url=server.url, timeout=30) as client:
        submit(client, admin, job_body(write_prompts(server.data_dir / "admins.jsonl", 2)))
        theirs = {j["job_id"] for j in client.get(f"{SDG}/jobs", headers=bearer(admin)).json()["jobs"]}
        budget = {"usd": 5, "tokens": 1000, "period": "month"}
        assert client.put("/api/v1/keys/plain-user/budget", json=budget, headers=bearer(admin)).status_code == 200
    console.sign_in(user)
    page = console.page
    expect(page.locator("#budget")).to_contain_text("$0 of $5 · $5 left")  # the API's budget standing
    expect(page.locator("#budget")).to_contain_text("0 of 1,000 · 1,000 left")
    expect(page.locator("#budget meter")).to_have_count(2)
    console.goto("/ui/jobs")
    expect(page.locator("#who")).to_have_text("plain-user")
    expect(page.locator("#jobs-empty")).to_be_visible()  # the admin's jobs are not listed
    expect(page.get_by_role("link", name="Keys")).to_be_hidden()
    console.goto("/ui/keys")
    expect(page.locator("#flash")).to_have_text("Only an admin key can manage keys.")
    expect(page.locator("#keys tbody tr")).to_have_count(0)
    console.goto(f"/ui/jobs/{sorted(theirs)[0]}")
    expect(page.locator("#flash")).to_contain_text("not found")  # another key's job, as the API says

"""The console's Prompts pages in Debian's Chromium against a real ``winnow serve``: the list, a
prompt's versions side by side with the server's line diff, a label moved with the form, a prompt
created from the form; hostile template text shows as text (no script runs, the strict CSP holds),
and at 390 px neither page scrolls sideways."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, bearer
from tests.web.browser import PHONE, Console, admin, browser, console, expect, open_console

pytestmark = pytest.mark.slow  # Chromium against a real `winnow serve`

__all__ = ["admin", "browser", "console"]

HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
LONG = "word " * 60 + "averyveryverylongunbrokenwordthatmustwrapinsteadofscrollingsideways" * 3


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("prompts-page") / "live").start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def seeded(server: LiveServer, admin: str) -> str:
    """A prompt with two versions whose texts are hostile markup, ``production`` on version 2."""
    with httpx.Client(base_url=server.url, headers=bearer(admin)) as http:
        first = {"name": "support", "template": f"Q: {{question}}\n{HOSTILE}", "system": LONG, "description": HOSTILE}
        assert http.post("/api/v1/prompts", json=first).status_code == 201
        second = {
            "template": f"Question: {{question}}\n{HOSTILE}\nThink first.",
            "labels": ["production"],
            "message": HOSTILE,
        }
        assert http.post("/api/v1/prompts/support/versions", json=second).status_code == 201
    return admin


def _not_pwned(page: Any) -> None:
    assert page.evaluate("window.__pwned") is None


def test_versions_side_by_side_diff_and_a_label_moved(console: Console, seeded: str, server: LiveServer) -> None:
    console.sign_in(seeded, then="/ui/prompts")
    page = console.page
    row = page.locator('tr[data-prompt="support"]')
    expect(row).to_contain_text("production → v2")
    expect(row).to_contain_text("Question: {question}")
    row.get_by_role("link", name="support").click()
    page.wait_for_url(re.compile(r"/ui/prompts/support$"))
    expect(page.locator("article.version")).to_have_count(2)
    expect(page.locator('article.version[data-version="1"]')).to_contain_text(HOSTILE)  # as text
    expect(page.locator(".diff-line.insert", has_text="{question}")).to_have_text("+ Question: {question}")
    expect(page.locator(".diff-line.delete", has_text="{question}")).to_have_text("- Q: {question}")
    expect(page.locator(".diff-line.equal")).to_have_text("  " + HOSTILE)
    expect(page.locator("#prompt-summary")).to_contain_text(HOSTILE)
    assert page.locator("#diff img, #side-by-side img, #diff script, #side-by-side script").count() == 0
    _not_pwned(page)

    page.get_by_role("textbox", name="Label").fill("production")
    page.locator("#ml-version").select_option("1")
    page.get_by_role("button", name="Move label").click()
    expect(page.locator('#labels tr[data-label="production"]')).to_contain_text("v1")
    expect(page.locator('#versions tr[data-version="1"]')).to_contain_text("production")
    shown = httpx.get(f"{server.url}/api/v1/prompts/support", headers=bearer(seeded)).json()
    assert shown["labels"] == {"production": 1}
    console.shot("prompt")


def test_a_prompt_made_from_the_form_and_refused_input(console: Console, seeded: str) -> None:
    console.sign_in(seeded, then="/ui/prompts")
    page = console.page
    page.get_by_label("Name").fill("greeting")
    page.get_by_label("Template, with {field} placeholders").fill("Hello {name} {0}")
    page.get_by_role("button", name="Create prompt").click()
    expect(page.locator("#flash")).to_contain_text("plain {field} placeholders")
    page.get_by_label("Template, with {field} placeholders").fill(f"Hello {{name}} {HOSTILE}")
    page.get_by_role("button", name="Create prompt").click()
    expect(page.locator('tr[data-prompt="greeting"]')).to_contain_text(
        "Hello {name} <script>window.__pwned = 1</script>"
    )
    _not_pwned(page)


def test_the_prompts_pages_fit_a_phone(browser: Any, server: LiveServer, seeded: str) -> None:
    context, phone = open_console(browser, server, PHONE)
    try:
        phone.sign_in(seeded, then="/ui/prompts")
        expect(phone.page.locator('tr[data-prompt="support"]')).to_be_visible()
        assert phone.no_horizontal_scroll()
        phone.goto("/ui/prompts/support")
        expect(phone.page.locator("article.version")).to_have_count(2)
        expect(phone.page.locator(".diff-line").first).to_be_visible()
        assert phone.no_horizontal_scroll()
        phone.shot("prompt-390x844")
    finally:
        context.close()
    assert not [e for e in phone.errors if "Content Security Policy" in e or "uncaught" in e], phone.errors

"""The web console in Debian's Chromium against a real ``winnow serve``: sign-in, overview,
security headers, layout at laptop and phone sizes, offline API docs."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, bearer, until
from tests.web.browser import DESKTOP, PHONE, Console, admin, browser, console, expect, open_console

pytestmark = pytest.mark.slow  # Chromium against a real `winnow serve`

__all__ = ["admin", "browser", "console"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("console") / "live").start()
    yield live
    live.stop()


# Every page a signed-in admin can open (the sign-in page besides).
PAGES = (
    "/ui/",
    "/ui/jobs",
    "/ui/feedback",
    "/ui/evals",
    "/ui/fine-tuning",
    "/ui/playground",
    "/ui/keys",
    "/ui/requests",
)


def test_console_pages_send_strict_csp_and_deny_framing(server: LiveServer) -> None:
    for path in (*PAGES, "/ui/signin", "/api/v1/docs"):
        response = httpx.get(server.url + path)
        assert response.status_code == 200
        csp = response.headers["content-security-policy"]
        assert "script-src 'self';" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp and "base-uri 'none'" in csp
        assert response.headers["x-frame-options"] == "DENY"
        assert "<script>" not in response.text  # every script is a file
    assert httpx.get(server.url + "/api/v1/health").headers["x-frame-options"] == "DENY"
    root = httpx.get(server.url + "/", follow_redirects=False)
    assert root.status_code == 307 and root.headers["location"] == "/ui/"


def test_sign_in_with_a_key_shows_the_overview(console: Console, server: LiveServer, admin: str) -> None:
    httpx.post(
        server.url + "/api/v1/generate",
        headers=bearer(admin),
        json={"model_id": "demo-lm", "prompt": "What is 2+2?", "max_tokens": 4},
        timeout=60,
    ).raise_for_status()

    def usage_has_the_generation() -> bool:  # usage rows are written in the background
        report = httpx.get(server.url + "/api/v1/usage", params={"group_by": "model"}, headers=bearer(admin))
        return any(row["group"] == "demo-lm" for row in report.json()["rows"])

    until("the generation's usage row", usage_has_the_generation)
    console.sign_in(admin)
    page = console.page
    expect(page.locator("#who")).to_have_text("console-admin (admin)")
    expect(page.locator("#models")).to_contain_text("demo-lm")
    expect(page.locator("#models")).to_contain_text("available")
    expect(page.locator("#health")).to_contain_text("ready")
    expect(page.locator("#budget")).to_contain_text("console-admin")
    expect(page.locator("#usage-chart canvas")).to_have_count(1)
    expect(page.locator("#usage-table")).to_contain_text("demo-lm")
    expect(page.get_by_role("link", name="Keys")).to_be_visible()
    assert console.no_horizontal_scroll()
    console.shot("overview")


def test_a_wrong_key_gets_a_clear_message(console: Console) -> None:
    page = console.goto("/ui/signin")
    page.get_by_label("API key").fill("wn-not-a-real-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#signin-error")).to_contain_text("This key was refused")
    assert page.url.endswith("/ui/signin")
    console.errors.clear()  # the browser logs the 401 itself


def test_pages_need_a_session(console: Console, server: LiveServer) -> None:
    page = console.goto("/ui/jobs")
    page.wait_for_url(re.compile(r"/ui/signin\?next=%2Fui%2Fjobs$"))
    expect(page.get_by_label("API key")).to_be_focused()


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280x800", "390x844"])
def test_every_page_fits_without_horizontal_scroll(
    browser: Any, server: LiveServer, admin: str, viewport: dict[str, int]
) -> None:
    context, console = open_console(browser, server, viewport)
    try:
        console.sign_in(admin)
        for path in PAGES:
            page = console.goto(path)
            expect(page.locator("main h1")).to_be_visible()
            page.wait_for_load_state("networkidle")
            assert console.no_horizontal_scroll(), f"{path} scrolls sideways at {viewport}"
            console.shot(
                f"{path.removeprefix('/ui').strip('/') or 'overview'}-{viewport['width']}x{viewport['height']}"
            )
        console.goto("/ui/")
        expect(console.page.locator("#usage-table")).to_contain_text("demo-lm")
        console.shot(f"overview-{viewport['width']}x{viewport['height']}")
    finally:
        context.close()


def test_console_is_keyboard_navigable(console: Console, admin: str) -> None:
    console.sign_in(admin)
    page = console.page
    page.keyboard.press("Tab")
    expect(page.locator(".skip")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Winnow")).to_be_focused()
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Jobs")).to_be_focused()
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/ui/jobs$"))
    expect(page.get_by_role("link", name="Jobs")).to_have_attribute("aria-current", "page")


def test_api_docs_render_offline(console: Console) -> None:
    page = console.goto("/api/v1/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Winnow")
    expect(page.locator(".opblock-tag-section").first).to_be_visible()
    assert console.offsite == []
    console.shot("api-docs")


def test_signing_out_forgets_the_key(console: Console, admin: str) -> None:
    console.sign_in(admin)
    console.page.get_by_role("button", name="Sign out").click()
    console.page.wait_for_url(re.compile(r"/ui/signin"))
    assert console.page.evaluate("sessionStorage.length") == 0

"""Playwright on Debian's Chromium for the console's browser tests (Playwright's own browser
download cannot work offline). Where /usr/bin/chromium or playwright is missing they skip, saying why."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LiveServer

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def browser_or_skip() -> Any:
    if not CHROMIUM.exists():
        pytest.skip(f"browser tests need Debian's Chromium at {CHROMIUM} (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("browser tests need the playwright package (the dev extra)")
    return sync_playwright


@dataclass
class Console:
    """A page on the console with what it logged: console errors (CSP violations show there),
    uncaught exceptions, and requests that tried to leave the machine."""

    page: Any
    server: LiveServer
    errors: list[str] = field(default_factory=list)
    offsite: list[str] = field(default_factory=list)

    def goto(self, path: str) -> Any:
        self.page.goto(self.server.url + path)
        return self.page

    def sign_in(self, key: str, then: str = "/ui/") -> None:
        self.goto(f"/ui/signin?next={then}")
        self.page.get_by_label("API key").fill(key)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_url(re.compile(re.escape(self.server.url + then) + r"$"))

    def shot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def no_horizontal_scroll(self) -> bool:
        return bool(self.page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth"))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_playwright = browser_or_skip()
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def admin(server: LiveServer) -> str:
    """An admin key on the test module's ``server``."""
    return server.cli("keys", "create", "console-admin", "--admin").stdout.strip().splitlines()[-1]


@pytest.fixture
def console(browser: Any, server: LiveServer) -> Iterator[Console]:
    """A fresh browser context on the module's ``server``; afterwards, the page must not have tried
    to leave the machine, hit the CSP, or thrown."""
    context, page = open_console(browser, server)
    yield page
    context.close()
    assert not page.offsite, f"the console tried to reach other hosts: {page.offsite}"
    assert not [e for e in page.errors if "Content Security Policy" in e or "uncaught" in e], page.errors


def open_console(browser: Any, server: LiveServer, viewport: dict[str, int] = DESKTOP) -> tuple[Any, Console]:
    context = browser.new_context(viewport=viewport)
    context.set_default_timeout(30_000)
    page = context.new_page()
    console = Console(page, server)
    page.on("console", lambda msg: console.errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: console.errors.append(f"uncaught: {exc}"))

    def guard(route: Any) -> None:
        if route.request.url.startswith(server.url) or route.request.url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            console.offsite.append(route.request.url)
            route.abort()

    context.route("**/*", guard)
    return context, console


def expect(actual: Any) -> Any:
    """Playwright's auto-waiting assertions (imported late: the module loads without playwright)."""
    from playwright.sync_api import expect as playwright_expect

    playwright_expect.set_options(timeout=30_000)  # a bound on a hang on a busy machine, not a timing
    return playwright_expect(actual)

"""The sign-in page shows only its own messages, and the keys page shows why the last admin key
cannot be revoked (Debian's Chromium against a real ``winnow serve`` with one admin key)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import LiveServer
from tests.web.browser import Console, admin, browser, console, expect

pytestmark = pytest.mark.slow  # Chromium against a real `winnow serve`

__all__ = ["admin", "browser", "console"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("signin") / "live").start()
    yield live
    live.stop()


def test_signin_shows_no_sentence_from_the_url_only_its_own_messages(console: Console) -> None:
    planted = "Your account is locked. Call 555-0100 and read out your key."
    page = console.goto("/ui/signin?reason=" + planted.replace(" ", "+"))
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    expect(page.locator("#signin-error")).to_be_hidden()
    assert "555-0100" not in page.content()
    page = console.goto("/ui/signin?reason=signed-out")
    expect(page.locator("#signin-error")).to_have_text("Signed out.")
    page = console.goto("/ui/signin?reason=key-refused")
    expect(page.locator("#signin-error")).to_contain_text("Unknown or revoked API key")
    page = console.goto("/ui/signin?reason=toString")  # not a code, though every object has it
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    expect(page.locator("#signin-error")).to_be_hidden()


def test_keys_page_shows_why_the_last_admin_key_stays(console: Console, admin: str) -> None:
    console.sign_in(admin, then="/ui/keys")
    page = console.page
    page.get_by_role("button", name="Revoke console-admin").click()
    page.get_by_role("button", name="Confirm revoking console-admin").click()
    expect(page.locator("#flash")).to_contain_text("Refusing to revoke the last active admin key")
    expect(page.locator("#flash")).to_contain_text("create another admin key first")
    expect(page.locator('#keys tr[data-key="console-admin"]')).to_contain_text("yes")
    console.goto("/ui/keys")  # the key still works
    expect(page.locator('#keys tr[data-key="console-admin"]')).to_be_visible()

"""The console's request log, in Debian's Chromium against a real ``winnow serve`` that keeps
bodies: the Requests page lists calls newest first, filters by status, model and key, pages back
with its cursor and fits a 390 px phone; a call's page shows its fields and its bodies as text (a
hostile body never becomes markup); the overview shows API calls apart from job traffic and the
keys page each key's spend and last call."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import DEMO_LM, LiveServer, bearer
from tests.web.browser import PHONE, Console, admin, browser, console, expect, open_console

pytestmark = pytest.mark.slow  # Chromium against a real `winnow serve`

__all__ = ["admin", "browser", "console"]
HOSTILE = '<img src=x onerror="window.pwned=1"><script>window.pwned=1</script>'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("requests")
    config = root / "winnow.yaml"
    models = [{"id": "demo-lm", "path": str(DEMO_LM), "input_price_per_mtok": 2.0, "output_price_per_mtok": 8.0}]
    config.write_text(json.dumps({"models": models, "request_log": {"bodies": True, "flush_s": 0.2}}))
    live = LiveServer(root / "live", env={"WINNOW_CONFIG": str(config)}).start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def calls(server: LiveServer, admin: str) -> dict[str, Any]:
    """alice's calls: 55 model listings, a chat with a hostile prompt, a 404; the admin's one generate."""
    alice = server.cli("keys", "create", "alice").stdout.strip().splitlines()[-1]
    with httpx.Client(base_url=server.url, headers=bearer(alice), timeout=60) as http:
        for _ in range(55):
            assert http.get("/v1/models").status_code == 200
        chat = {"model": "demo-lm", "messages": [{"role": "user", "content": HOSTILE}], "max_tokens": 4}
        assert http.post("/v1/chat/completions", json=chat).status_code == 200
        assert http.post("/v1/chat/completions", json={**chat, "model": "nope"}).status_code == 404
    body = {"prompt": "What is 1+1?", "model_id": "demo-lm", "max_tokens": 2}
    assert httpx.post(f"{server.url}/api/v1/generate", json=body, headers=bearer(admin), timeout=60).status_code == 200
    rows = httpx.get(f"{server.url}/api/v1/requests", params={"limit": 3}, headers=bearer(admin)).json()["data"]
    return {"alice": alice, "hostile": rows[2]["id"], "generate": rows[0]["id"]}


def test_the_list_filters_and_pages(console: Console, admin: str, calls: dict[str, Any]) -> None:
    console.sign_in(admin, "/ui/requests")
    page = console.page
    rows = page.locator("#requests tbody tr")
    expect(rows).to_have_count(50)
    expect(rows.first).to_have_attribute("data-request-id", calls["generate"])
    page.get_by_role("button", name="Older calls →").click()
    expect(rows).to_have_count(8)  # 58 calls: 55 + chat + 404 + generate
    page.get_by_role("button", name="← Newer calls").click()
    expect(rows).to_have_count(50)

    page.get_by_label("Status").select_option("error")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-status", "404")
    expect(rows.first).to_contain_text("model_not_found")

    page.get_by_label("Status").select_option("")
    page.get_by_label("Model").fill("demo-lm")
    page.get_by_label("Key").fill("alice")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-request-id", calls["hostile"])


def test_a_calls_page_shows_its_hostile_body_as_text(console: Console, calls: dict[str, Any]) -> None:
    console.sign_in(calls["alice"], "/ui/requests")
    page = console.page
    page.locator(f'tr[data-request-id="{calls["hostile"]}"] a').click()
    body = page.locator("#request-body")
    expect(body).to_contain_text("<script>window.pwned=1</script>")
    expect(page.locator("#summary")).to_contain_text("demo-lm")
    expect(page.locator("#summary")).to_contain_text("alice")
    expect(page.locator("#attempts-none")).to_be_visible()  # a local model: no router attempts
    expect(page.locator("#give button")).to_have_count(2)
    assert body.locator("img, script").count() == 0
    assert page.evaluate("window.pwned === undefined")


def test_overview_and_keys_show_api_calls_spend_and_last_use(
    console: Console, admin: str, calls: dict[str, Any]
) -> None:
    console.sign_in(admin, "/ui/")
    page = console.page
    expect(page.locator('#traffic tr[data-kind="api"]')).to_contain_text("API calls")
    expect(page.locator("#api-stats")).to_contain_text("p99")
    expect(page.locator("#spend tbody")).to_contain_text("console-admin")
    expect(page.locator("#spend tbody")).to_contain_text("alice")
    page.locator("#spend-by").select_option("model")
    expect(page.locator("#spend tbody tr")).to_have_count(1)
    expect(page.locator("#spend tbody tr")).to_contain_text("demo-lm")
    console.goto("/ui/keys")
    expect(page.locator('#keys tr[data-key="alice"]')).not_to_contain_text("never")
    expect(page.locator('#keys tr[data-key="console-admin"]')).to_contain_text("$")


@pytest.mark.parametrize("path", ["/ui/requests", "detail"])
def test_the_pages_fit_a_phone(browser: Any, server: LiveServer, calls: dict[str, Any], path: str) -> None:
    context, phone = open_console(browser, server, PHONE)
    try:
        target = f"/ui/requests/{calls['hostile']}" if path == "detail" else path
        phone.sign_in(calls["alice"], target)
        anchor = "#request-body" if path == "detail" else "#requests tbody tr"
        expect(phone.page.locator(anchor).first).to_be_visible()
        assert phone.no_horizontal_scroll()
    finally:
        context.close()

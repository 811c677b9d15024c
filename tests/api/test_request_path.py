"""The lean /v1 path for upstream models (api/passthrough.py) answers as the FastAPI routes do: the
same headers, error shapes, limits, budgets and metrics; bodies it does not take (chunked, invalid)
reach the routes whole and are counted once."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.api.test_passthrough import ECHO_USAGE, FakeUpstream
from tests.conftest import LiveServer, bearer, in_one_rate_window

pytestmark = pytest.mark.slow  # a real `winnow serve` in front of the fake upstream

CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def server(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data = tmp_path_factory.mktemp("request-path") / "data"
    model = {"id": "fake", "type": "commercial", "provider": "openai", "base_url": f"{fake.url}/v1", "max_retries": 0}
    config = data.parent / "winnow.yaml"
    config.write_text(json.dumps({"models": [model]}))
    live = LiveServer(data, env={"WINNOW_CONFIG": str(config)}).start()
    yield live
    live.stop()


def _key(server: LiveServer, name: str, *extra: str) -> str:
    return server.cli("keys", "create", name, *extra).stdout.split()[-1]


def test_a_forwarded_answer_carries_request_id_and_rate_limit_headers(server: LiveServer, fake: FakeUpstream) -> None:
    key = _key(server, "headers")
    answer = httpx.post(
        f"{server.url}/v1/chat/completions", json=CHAT, headers={**bearer(key), "X-Request-Id": "req-42"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-request-id"] == "req-42"
    assert answer.headers["content-type"] == "application/json"
    assert {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"} <= set(answer.headers)
    assert answer.json()["model"] == "fake" and answer.json()["usage"] == ECHO_USAGE


def test_a_chunked_body_takes_the_routes_and_gets_the_same_answer(server: LiveServer, fake: FakeUpstream) -> None:
    key = _key(server, "chunked")
    fake.received.clear()

    def pieces() -> Iterator[bytes]:  # no Content-Length: sent chunked
        body = json.dumps(CHAT).encode()
        yield body[:10]
        yield body[10:]

    chunked = httpx.post(
        f"{server.url}/v1/chat/completions",
        content=pieces(),
        headers={**bearer(key), "Content-Type": "application/json"},
    )
    whole = httpx.post(f"{server.url}/v1/chat/completions", json=CHAT, headers=bearer(key))
    assert chunked.status_code == whole.status_code == 200, chunked.text
    assert chunked.json() == whole.json()
    assert fake.received[0]["body"] == fake.received[1]["body"]


def test_refused_bodies_keep_the_routes_errors_and_count_one_hit(server: LiveServer, fake: FakeUpstream) -> None:
    key = _key(server, "strict", "--rate-limits", '{"generation": "3/minute"}')
    fake.received.clear()
    url = f"{server.url}/v1/chat/completions"
    in_one_rate_window(10)
    invalid = httpx.post(url, json={**CHAT, "temperature": "hot"}, headers=bearer(key))
    assert invalid.status_code == 400
    error = invalid.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_type", "temperature") and "temperature" in error["message"]
    assert httpx.post(url, content=b"{nope", headers=bearer(key)).status_code == 400
    assert httpx.post(url, json=CHAT, headers=bearer(key)).status_code == 200  # the third hit of 3
    limited = httpx.post(url, json=CHAT, headers=bearer(key))
    assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(limited.headers["retry-after"]) >= 1
    assert len(fake.received) == 1  # nothing refused reached the upstream


def test_no_key_and_no_budget_are_refused_before_the_upstream(server: LiveServer, fake: FakeUpstream) -> None:
    fake.received.clear()
    url = f"{server.url}/v1/chat/completions"
    anonymous = httpx.post(url, json=CHAT)
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "invalid_api_key"
    unknown = httpx.post(url, json={**CHAT, "model": "nope"})  # the key is checked before the model
    assert unknown.status_code == 401, unknown.text
    admin = _key(server, "admin-of-budgets", "--admin")
    created = httpx.post(  # through the API, so that the server holds the budget at once
        f"{server.url}/api/v1/keys",
        json={"name": "broke", "budget": {"tokens": 5, "period": "day"}},
        headers=bearer(admin),
    )
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    broke = httpx.post(url, json={**CHAT, "messages": [{"role": "user", "content": "x" * 50}]}, headers=bearer(key))
    assert broke.status_code == 429 and broke.json()["error"]["code"] == "insufficient_quota"  # OpenAI's spent quota
    assert fake.received == []


def test_forwarded_requests_are_counted_under_their_route(server: LiveServer) -> None:
    key = _key(server, "metrics")
    assert httpx.post(f"{server.url}/v1/completions", json={"model": "fake", "prompt": "2+2="}, headers=bearer(key))
    metrics = httpx.get(f"{server.url}/metrics").text
    lines = [line for line in metrics.splitlines() if line.startswith("winnow_http_requests_total{")]
    assert any('route="/v1/completions"' in line and 'status="200"' in line for line in lines), lines


def test_a_body_not_sent_as_json_is_refused_as_the_routes_refuse_it(server: LiveServer) -> None:
    key = _key(server, "untyped")
    bodies = {
        "/api/v1/generate": {"model_id": "demo-lm", "prompt": "hi", "max_tokens": 2},
        "/v1/completions": {"model": "fake", "prompt": "hi", "max_tokens": 2},
    }
    for path, sent in bodies.items():
        body = json.dumps(sent).encode()
        untyped = httpx.post(f"{server.url}{path}", content=body, headers=bearer(key))
        assert untyped.status_code == 400, untyped.text
        text = httpx.post(f"{server.url}{path}", content=body, headers={**bearer(key), "Content-Type": "text/plain"})
        assert text.status_code == 400, text.text

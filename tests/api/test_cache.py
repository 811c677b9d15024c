"""The exact-response cache of an upstream model, in memory and in Redis, in a real `winnow serve`:
a deterministic request asked again is answered without the upstream, billed as cached at no
cost and marked in the headers; anything not deterministic always reaches the upstream."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.api.test_passthrough import FakeUpstream
from tests.api.test_router import _usage_rows
from tests.conftest import REDIS_URL, LiveServer, bearer, reachable

pytestmark = pytest.mark.slow  # a real `winnow serve` in front of a fake upstream

PRICE = (11 * 1.0 + 7 * 2.0) / 1e6  # the fake's usage block at the models' prices


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def gateway(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    data = tmp_path_factory.mktemp("cache") / "data"
    upstream = {
        "type": "commercial",
        "provider": "openai",
        "base_url": f"{fake.url}/v1",
        "upstream_model": "up-model-1",
        "input_price_per_mtok": 1.0,
        "output_price_per_mtok": 2.0,
    }
    models = [
        {"id": "memory", **upstream, "cache": {"ttl_s": 600}},
        {"id": "redis", **upstream, "cache": {"ttl_s": 600, "backend": "redis"}},
    ]
    config = data.parent / "cache.yaml"
    config.write_text(json.dumps({"models": models, "redis_url": REDIS_URL}))
    server = LiveServer(data, env={"WINNOW_CONFIG": str(config)}).start()
    admin = server.cli("keys", "create", "admin", "--admin").stdout.split()[-1]
    yield server, admin
    server.stop()


@pytest.fixture(params=["memory", "redis"])
def model(request: pytest.FixtureRequest, fake: FakeUpstream) -> str:
    if request.param == "redis" and not reachable("127.0.0.1", 6379):
        pytest.skip("no Redis on 127.0.0.1:6379")
    fake.received.clear()
    fake.answers.clear()
    return str(request.param)


def _ask(gateway: tuple[LiveServer, str], body: dict[str, Any], path: str = "/v1/chat/completions") -> httpx.Response:
    server, admin = gateway
    response = httpx.post(f"{server.url}{path}", json=body, headers=bearer(admin), timeout=30)
    assert response.status_code == 200, response.text
    return response


def test_a_deterministic_request_asked_again_is_answered_from_the_cache(
    gateway: tuple[LiveServer, str], fake: FakeUpstream, model: str
) -> None:
    server, admin = gateway
    # A question of this run only (Redis outlives it).
    messages = [{"role": "user", "content": f"What is 2+2? ({uuid.uuid4().hex})"}]
    first = _ask(gateway, {"model": model, "messages": messages, "temperature": 0, "max_tokens": 5})
    assert (first.headers["x-winnow-cache"], first.headers["x-winnow-attempts"]) == ("miss", "1")
    # The same request, its fields in another order: the same answer, and the upstream is not asked.
    again = _ask(gateway, {"max_tokens": 5, "temperature": 0.0, "messages": messages, "model": model})
    assert (again.headers["x-winnow-cache"], again.headers["x-winnow-attempts"]) == ("hit", "0")
    assert again.headers["x-winnow-deployment"] == first.headers["x-winnow-deployment"]
    assert again.json() == first.json() and again.json()["model"] == model
    assert len(fake.received) == 1
    # Billed: the hit's tokens are recorded, as cached, at no cost.
    assert _usage_rows(server, admin, 2) == [
        (model, first.headers["x-winnow-deployment"], 1, 0, pytest.approx(PRICE)),
        (model, first.headers["x-winnow-deployment"], 0, 1, 0.0),
    ]
    # A fixed seed makes a request deterministic too; /v1/completions is cached the same way.
    seeded = {"model": model, "prompt": messages[0]["content"], "seed": 7, "temperature": 0.8}
    assert _ask(gateway, seeded, "/v1/completions").headers["x-winnow-cache"] == "miss"
    assert _ask(gateway, seeded, "/v1/completions").headers["x-winnow-cache"] == "hit"
    assert len(fake.received) == 2


def test_requests_that_are_not_deterministic_always_reach_the_upstream(
    gateway: tuple[LiveServer, str], fake: FakeUpstream, model: str
) -> None:
    server, admin = gateway
    messages = [{"role": "user", "content": f"Tell a story ({uuid.uuid4().hex})"}]
    for body in (
        {"model": model, "messages": messages},  # the upstream's default temperature
        {"model": model, "messages": messages, "temperature": 0.7},
    ):
        for _ in range(2):
            assert "x-winnow-cache" not in _ask(gateway, body).headers
    streamed = {"model": model, "messages": messages, "temperature": 0, "stream": True}
    for _ in range(2):
        assert "x-winnow-cache" not in _ask(gateway, streamed).headers
    # A pinned deployment is asked, whatever the cache holds.
    pinned = {"model": model, "messages": messages, "temperature": 0}
    assert _ask(gateway, pinned).headers["x-winnow-cache"] == "miss"
    deployment = fake.url.removeprefix("http://")
    response = httpx.post(
        f"{server.url}/v1/chat/completions",
        json=pinned,
        headers={**bearer(admin), "x-winnow-deployment": deployment},
        timeout=30,
    )
    assert response.status_code == 200 and "x-winnow-cache" not in response.headers
    assert len(fake.received) == 8
    assert all(cached == 0 for _, _, _, cached, _ in _usage_rows(server, admin, 8))

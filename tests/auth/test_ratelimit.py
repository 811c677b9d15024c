"""Per-key, per-class rate limits: 429 with Retry-After and X-RateLimit-* headers.

The limiter's clock is frozen in these tests (``freeze``), so that no outcome depends on how fast
the requests run: a loop that crosses a window boundary is weighed differently (see
``test_a_window_boundary_weighs_the_previous_window``)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import REDIS_URL, bearer, reachable
from tests.spec import assert_error
from winnow.api import create_app
from winnow.auth import Principal, RateLimiter
from winnow.config import RateLimits, Settings
from winnow.errors import RateLimitExceeded
from winnow.runtime import Runtime

# The middle of a minute (1_800_000_000 is a multiple of 60): a test's requests stay in one window.
MID_WINDOW = 1_800_000_030.0


def freeze(limiter: RateLimiter, at: float = MID_WINDOW) -> list[float]:
    """Stop ``limiter``'s clock at ``at``; the returned list's one item is the time, to move it."""
    now = [at]
    limiter.clock = lambda: now[0]
    return now


def test_1001st_other_request_is_429_and_another_key_is_unaffected(client: TestClient, runtime: Runtime) -> None:
    freeze(runtime.limiter)
    first = runtime.keys.create("first").key
    second = runtime.keys.create("second").key
    for i in range(1000):
        response = client.get("/api/v1/status", headers=bearer(first))
        assert response.status_code == 200, (i, response.text)
    assert response.headers["x-ratelimit-limit"] == "1000"
    assert response.headers["x-ratelimit-remaining"] == "0"
    refused = client.get("/api/v1/status", headers=bearer(first))
    body = assert_error(refused, 429, "rate_limit_exceeded")
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-remaining"] == "0"
    assert int(refused.headers["x-ratelimit-reset"]) > 0
    assert "other" in body["details"]
    other = client.get("/api/v1/status", headers=bearer(second))
    assert other.status_code == 200
    assert other.headers["x-ratelimit-remaining"] == "999"


def test_a_window_boundary_weighs_the_previous_window(client: TestClient, runtime: Runtime) -> None:
    """What made the test above fail on a loaded box: 500 requests a second before a minute's end
    and 500 a second after it. The previous minute's 500 still weigh 500 * 59/60 = 491.7, so after
    1,000 requests 9 remain (1000 - floor(991.7)): 1,009 requests pass in what the seed calls a
    minute's limit of 1,000."""
    key = runtime.keys.create("straddler").key
    now = freeze(runtime.limiter, MID_WINDOW + 29)  # 1 s before the boundary
    for _ in range(500):
        assert client.get("/api/v1/status", headers=bearer(key)).status_code == 200
    now[0] = MID_WINDOW + 31  # 1 s after it
    for _ in range(500):
        response = client.get("/api/v1/status", headers=bearer(key))
        assert response.status_code == 200
    assert response.headers["x-ratelimit-remaining"] == "9"
    codes = [client.get("/api/v1/status", headers=bearer(key)).status_code for _ in range(10)]
    assert codes == [200] * 9 + [429]
    # Half way through the window the previous one weighs half: 500 * 0.5 + 509 + 1 = 760.
    now[0] = MID_WINDOW + 60
    assert client.get("/api/v1/status", headers=bearer(key)).headers["x-ratelimit-remaining"] == "240"


def test_per_key_override_beats_the_default(client: TestClient, runtime: Runtime) -> None:
    freeze(runtime.limiter)
    key = runtime.keys.create("tight", rate_limits={"other": "3/minute"}).key
    codes = [client.get("/api/v1/status", headers=bearer(key)).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]


def test_probes_and_refused_keys_neither_count_against_nor_are_refused_by_a_limit(tmp_path: Path) -> None:
    """Probes (no key needed) are never rate limited, even past every limit there is, and neither
    they nor requests refused for want of a valid key spend any key's allowance."""
    tight = Settings(data_dir=tmp_path / "data", workers=0, rate_limits=RateLimits(other="3/minute"))
    with TestClient(create_app(tight)) as client:
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        freeze(runtime.limiter)
        key = runtime.keys.create("probed").key
        for _ in range(6):  # twice the limit
            for probe in ("/api/v1/health", "/api/v1/ready"):
                for headers in ({}, bearer(key)):
                    response = client.get(probe, headers=headers)
                    # /ready may be 503 on a loaded machine (its thresholds); never 401 or 429
                    assert response.status_code in (200, 503), (probe, response.status_code, response.text)
                    assert "x-ratelimit-remaining" not in response.headers
            assert_error(client.get("/api/v1/status"), 401)
            assert_error(client.get("/api/v1/status", headers=bearer("wn-" + "x" * 43)), 401)
        counted = [client.get("/api/v1/status", headers=bearer(key)) for _ in range(4)]
    assert [r.status_code for r in counted] == [200, 200, 200, 429]
    assert [r.headers["x-ratelimit-remaining"] for r in counted] == ["2", "1", "0", "0"]


def _principal(name: str, **limits: str) -> Principal:
    return Principal(id=1, name=name, is_admin=False, rate_limits=limits, key_id=uuid.uuid4().hex)


def test_classes_are_counted_separately() -> None:
    limiter = RateLimiter(
        RateLimits(generation="2/minute", batch="1/minute", other="5/minute"), clock=lambda: MID_WINDOW
    )
    who = _principal("p")

    async def run() -> None:
        await limiter.hit(who, "batch")
        with pytest.raises(RateLimitExceeded):
            await limiter.hit(who, "batch")
        await limiter.hit(who, "generation")
        await limiter.hit(who, "generation")
        with pytest.raises(RateLimitExceeded) as refused:
            await limiter.hit(who, "generation")
        assert refused.value.headers["X-RateLimit-Limit"] == "2"
        state = await limiter.hit(who, "other")
        assert state.remaining == 4

    asyncio.run(run())


@pytest.mark.skipif(not reachable("127.0.0.1", 6379), reason="no Redis server on 127.0.0.1:6379")
def test_two_limiters_sharing_redis_enforce_one_limit() -> None:
    limits = RateLimits(generation="5/minute")
    who = _principal("shared")

    async def run() -> list[bool]:
        a, b = (RateLimiter(limits, REDIS_URL, clock=lambda: MID_WINDOW) for _ in range(2))
        outcomes = []
        for i in range(8):
            try:
                await (a if i % 2 else b).hit(who, "generation")
                outcomes.append(True)
            except RateLimitExceeded:
                outcomes.append(False)
        return outcomes

    assert asyncio.run(run()) == [True] * 5 + [False] * 3

"""Two `winnow serve` processes sharing one database and one Redis enforce one rate limit per key."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import REDIS_URL, LiveServer, bearer, in_one_rate_window, reachable

pytestmark = [
    pytest.mark.slow,  # two `winnow serve` processes
    pytest.mark.skipif(not reachable("127.0.0.1", 6379), reason="no Redis server on 127.0.0.1:6379"),
]


def test_101_generations_across_two_servers_sharing_redis_get_exactly_one_429(tmp_path: Path) -> None:
    env = {"WINNOW_REDIS_URL": REDIS_URL}
    one = LiveServer(tmp_path / "data", env=env).start()
    two = LiveServer(tmp_path / "data", env=env).start()  # the same SQLite database: the same keys
    try:
        key = one.cli("keys", "create", "shared").stdout.split()[-1]
        body = {"prompt": "What is 1+1?", "model_id": "demo-lm", "max_tokens": 2, "temperature": 0}

        def call(i: int) -> int:
            server = one if i % 2 else two
            return httpx.post(f"{server.url}/api/v1/generate", json=body, headers=bearer(key), timeout=60).status_code

        in_one_rate_window()
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(call, range(101)))
        assert statuses.count(200) == 100 and statuses.count(429) == 1, statuses
        # Both servers agree the key is spent.
        for server in (one, two):
            refused = httpx.post(f"{server.url}/api/v1/generate", json=body, headers=bearer(key))
            assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    finally:
        one.stop()
        two.stop()

"""`winnow serve --http-workers N`: N API processes on one port, one rate limit and one budget per
key across them (Redis and the shared database), and a clear refusal without Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.api.test_passthrough import ECHO_USAGE, FakeUpstream
from tests.conftest import (
    REDIS_URL,
    TEST_KEY_LIMITS,
    LiveServer,
    bearer,
    closed_port,
    in_one_rate_window,
    reachable,
    until,
)

pytestmark = pytest.mark.slow  # `winnow serve --http-workers 2` processes

CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}


def test_more_than_one_http_worker_without_redis_is_refused_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "WINNOW_DATA_DIR": str(tmp_path / "data")}
    env.pop("WINNOW_REDIS_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "winnow", "serve", "--http-workers", "2", "--port", str(closed_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--http-workers" in lines[0] and "redis_url" in lines[0], done.stderr


class MultiServer(LiveServer):
    """A ``winnow serve --http-workers 2`` (LiveServer starts a plain ``winnow serve``)."""

    def start(self, timeout: float = 60.0, tries: int = 1) -> MultiServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        command = [sys.executable, "-m", "winnow", "serve", "--port", str(self.port), "--http-workers", "2"]
        self.proc = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if len(self.api_processes()) == 2 and all(self.healthy() for _ in range(4)):
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not start: {self.log()}")

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/api/v1/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def api_processes(self) -> list[psutil.Process]:
        assert self.proc is not None
        children = psutil.Process(self.proc.pid).children()
        return [c for c in children if "spawn_main" in " ".join(c.cmdline())]


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as upstream:
        yield upstream


@pytest.mark.skipif(not reachable("127.0.0.1", 6379), reason="no Redis server on 127.0.0.1:6379")
def test_two_http_workers_share_one_rate_limit_and_one_budget(tmp_path: Path, fake: FakeUpstream) -> None:
    config = tmp_path / "winnow.yaml"
    model = {"id": "fake", "type": "commercial", "provider": "openai", "base_url": f"{fake.url}/v1", "max_retries": 0}
    config.write_text(json.dumps({"models": [model]}))
    env = {"WINNOW_CONFIG": str(config), "WINNOW_REDIS_URL": REDIS_URL, "WINNOW_USAGE_FLUSH_S": "0.2"}
    server = MultiServer(tmp_path / "data", env=env).start()
    try:
        assert len(server.api_processes()) == 2
        limited = server.cli("keys", "create", "limited", "--rate-limits", '{"generation": "20/minute"}')
        key = limited.stdout.split()[-1]

        def call(_: int) -> int:  # a new connection each: the kernel hands them to either process
            return httpx.post(
                f"{server.url}/v1/chat/completions", json=CHAT, headers=bearer(key), timeout=30
            ).status_code

        in_one_rate_window()
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(call, range(21)))
        assert statuses.count(200) == 20 and statuses.count(429) == 1, statuses

        # A budget of 20 tokens: the first answer spends 18; after a flush beat both processes know
        # it, and each refuses every request whose input (9 tokens estimated) would pass the cap.
        budget = server.cli(
            "keys",
            "create",
            "budgeted",
            "--budget-tokens",
            "20",
            "--budget-period",
            "total",
            "--rate-limits",
            TEST_KEY_LIMITS,
        )  # its budget is polled below: limits of its own, so that the polling is never a 429
        key = budget.stdout.split()[-1]
        assert call(0) == 200  # a process that has not read the budget yet serves it too

        def standing() -> dict[str, Any]:  # one process's ledger: whichever takes the new connection
            return dict(httpx.get(f"{server.url}/api/v1/usage/budget", headers=bearer(key), timeout=30).json())

        # Until both processes hold the budget and the spend: 20 answers in a row, each on a new
        # connection (either process's), say so; a process that still missed either would serve on.
        until(
            "both processes to hold the budget and the spend",
            lambda: all(
                (answer := standing())["budget"] is not None and answer["spent_tokens"] == ECHO_USAGE["total_tokens"]
                for _ in range(20)
            ),
        )
        assert [call(i) for i in range(8)] == [429] * 8  # /v1's insufficient_quota
        usage = httpx.get(f"{server.url}/api/v1/usage", headers=bearer(key)).json()["total"]
        assert usage["total_tokens"] == ECHO_USAGE["total_tokens"]
    finally:
        server.stop()

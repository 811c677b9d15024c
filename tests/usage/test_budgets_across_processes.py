"""Budgets with real processes sharing one database: two servers enforce one budget, a new period
lets the key spend again, and an evaluation pauses on its owner's budget and resumes when raised.

Every wait is on a condition the other process makes true (bounded by a deadline that only stops
a hang). The test owns the day its usage rows fall in, so that the real UTC midnight passing
mid-test changes nothing: as each row lands it is dated a day ahead (a period's spend is every row
since the period's start, so it stays in today's period, or tomorrow's if midnight passes), and a
new day is simulated by moving the rows two days back, which is what the period's start moving
forward looks like to every process."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import DEMO_PROMPTS, TEST_KEY_LIMITS, LiveServer, bearer, until
from tests.spec import assert_error

pytestmark = pytest.mark.slow  # `winnow serve` and worker processes

BUDGET_TOKENS = 100
QUESTION = {"model_id": "demo-lm", "prompt": "What is 17+25?", "max_tokens": 8, "temperature": 0}


def _spent(server: LiveServer, key: str) -> int:
    answer = httpx.get(f"{server.url}/api/v1/usage/budget", headers=bearer(key), timeout=30).json()
    return int(answer["spent_tokens"]) if answer.get("budget") else -1


def _generate(server: LiveServer, key: str) -> httpx.Response:
    return httpx.post(f"{server.url}/api/v1/generate", json=QUESTION, headers=bearer(key), timeout=60)


def _usage_rows(data_dir: Path) -> int:
    with sqlite3.connect(data_dir / "winnow.db") as db:
        return int(db.execute("SELECT count(*) FROM usage_records").fetchone()[0])


def _date_new_rows_a_day_ahead(data_dir: Path) -> None:
    """The rows written since the last call (dated now) move a day ahead: still in this period."""
    with sqlite3.connect(data_dir / "winnow.db") as db:
        db.execute(
            "UPDATE usage_records SET created_at = datetime(created_at, '+1 day')"
            " WHERE julianday(created_at) < julianday('now', '+12 hours')"
        )


def _a_day_passes(data_dir: Path) -> None:
    """As if UTC midnight passed: everything spent so far (dated a day ahead) falls in the previous period."""
    with sqlite3.connect(data_dir / "winnow.db") as db:
        db.execute("UPDATE usage_records SET created_at = datetime(created_at, '-2 day')")


@pytest.fixture
def two_servers(tmp_path: Path) -> Iterator[tuple[LiveServer, LiveServer, str]]:
    data = tmp_path / "data"
    one = LiveServer(data).start()
    two = LiveServer(data).start()
    try:
        admin = one.cli("keys", "create", "admin", "--admin", "--rate-limits", TEST_KEY_LIMITS).stdout.split()[-1]
        yield one, two, admin
    finally:
        one.stop()
        two.stop()


def test_two_servers_enforce_one_budget_and_a_new_period_resets_it(
    two_servers: tuple[LiveServer, LiveServer, str],
) -> None:
    one, two, admin = two_servers
    created = httpx.post(
        f"{one.url}/api/v1/keys",
        json={
            "name": "shared",
            "budget": {"tokens": BUDGET_TOKENS, "period": "day"},
            "rate_limits": json.loads(TEST_KEY_LIMITS),
        },
        headers=bearer(admin),
    )
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    until("the second server to learn the budget", lambda: _spent(two, key) == 0)

    spent, served = 0, {one.url: 0, two.url: 0}
    for turn in range(20):
        server = (one, two)[turn % 2]
        response = _generate(server, key)
        if response.status_code != 200:
            break
        spent += response.json()["metrics"]["total_tokens"]
        served[server.url] += 1
        until("the answer's usage row", lambda rows=sum(served.values()): _usage_rows(one.data_dir) == rows)
        _date_new_rows_a_day_ahead(one.data_dir)
        # Both servers see the spend (each from the shared database) before the next request.
        until(f"both servers to see {spent} tokens", lambda total=spent: _spent(one, key) == _spent(two, key) == total)
    assert_error(response, 402, "budget_exceeded")
    assert all(served.values())  # each server served part of the budget
    assert BUDGET_TOKENS - 16 < spent <= BUDGET_TOKENS + 16  # refused within one request of the cap
    for server in (one, two):
        assert_error(_generate(server, key), 402, "budget_exceeded")

    _a_day_passes(one.data_dir)
    for server in (one, two):
        until(f"{server.url} to start the new day", lambda s=server: _spent(s, key) == 0)  # type: ignore[misc]
        assert _generate(server, key).status_code == 200


def test_an_evaluation_pauses_on_its_budget_and_resumes_when_raised(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = LiveServer(data, env={"WINNOW_WORKERS": "1"}).start()  # a server and its worker process
    try:
        admin = server.cli("keys", "create", "admin", "--admin", "--rate-limits", TEST_KEY_LIMITS).stdout.split()[-1]
        key = server.cli("keys", "create", "evals", "--rate-limits", TEST_KEY_LIMITS).stdout.split()[-1]
        auth = bearer(key)
        budget = f"{server.url}/api/v1/keys/evals/budget"
        # 40 rows of ~16 tokens each; 200 tokens stop it part-way.
        assert httpx.put(budget, json={"tokens": 200, "period": "total"}, headers=bearer(admin)).status_code == 200
        dataset = data / "rows.jsonl"
        dataset.write_text("".join(line + "\n" for line in DEMO_PROMPTS.read_text().splitlines()[:40]))
        body = {
            "dataset_path": str(dataset),
            "templates": [{"name": "plain", "template": "{prompt}"}],
            "models": ["demo-lm"],
            "scoring_function": "exact_match",
            "max_tokens": 8,
            "batch_size": 4,
        }
        created = httpx.post(f"{server.url}/api/v1/evaluations", json=body, headers=auth, timeout=60)
        assert created.status_code == 202, created.text
        url = f"{server.url}/api/v1/evaluations/{created.json()['id']}"

        def status() -> dict[str, Any]:
            return dict(httpx.get(url, headers=auth, timeout=30).json())

        paused = until("the evaluation to pause", lambda: (s := status())["status"] in ("paused", "completed") and s)
        assert paused["status"] == "paused", paused
        assert paused["error"].startswith("budget_exceeded")
        done_before = paused["counts"]["rows_done"]
        assert 0 < done_before < 40

        assert httpx.put(budget, json={"tokens": 100_000, "period": "total"}, headers=bearer(admin)).status_code == 200
        done = until("the evaluation to complete", lambda: (s := status())["status"] in ("completed", "failed") and s)
        assert done["status"] == "completed", done
        assert done["counts"]["rows_done"] == 40 and done["table"][0]["rows"] == 40
        usage = httpx.get(f"{server.url}/api/v1/usage", headers=auth, timeout=30).json()["total"]
        assert usage["requests"] == 40  # each row billed once across the pause
    finally:
        server.stop()

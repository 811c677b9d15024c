"""The CLI against a real ``winnow serve`` (with its worker): ``winnow sdg submit/status/list/cancel/
download`` over HTTP (WINNOW_URL, WINNOW_API_KEY); ``winnow keys budget``, ``winnow usage`` and
``winnow models list``, which read the configuration and database the server uses (WINNOW_DATA_DIR)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from tests.conftest import LiveServer, bearer, wait_for_job
from tests.sdg.jobs import SDG, job_body, submit, wait_running, write_prompts
from winnow.cli import app
from winnow.client import Winnow

pytestmark = pytest.mark.slow  # a real `winnow serve` and its worker process

ENDED = ("completed", "failed", "cancelled")


@dataclass
class Served:
    live: LiveServer
    key: str
    http: httpx.Client
    job: dict[str, Any]  # a job the CLI submitted, completed

    def cli(self, *args: str, key: str | None = None) -> Result:
        env = {
            "WINNOW_URL": self.live.url,
            "WINNOW_API_KEY": key or self.key,
            "WINNOW_DATA_DIR": str(self.live.data_dir),
        }
        return CliRunner().invoke(app, list(args), env=env)

    def new_key(self, name: str) -> str:
        """A key of its own for a test whose usage must not mix with the others'."""
        return self.live.cli("keys", "create", name).stdout.split()[-1]


def _json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _submit(served: Served, body: dict[str, Any], tmp: Path, key: str | None = None) -> dict[str, Any]:
    body_file = tmp / f"body-{time.monotonic_ns()}.json"
    body_file.write_text(json.dumps(body))
    job: dict[str, Any] = _json(served.cli("sdg", "submit", f"@{body_file}", key=key))
    assert job["status"] == "queued" and job["job_id"].startswith("job-"), job
    return job


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("cli-server")
    live = LiveServer(root / "data", env={"WINNOW_WORKERS": "1"}).start()
    key = live.cli("keys", "create", "owner").stdout.split()[-1]
    try:
        with httpx.Client(base_url=live.url, timeout=30) as http:
            served = Served(live, key, http, {})
            prompts = write_prompts(live.data_dir / "small.jsonl", 12)
            submitted = _submit(served, job_body(prompts, num_generations=2), root)
            served.job = wait_for_job(http, key, submitted["job_id"], ENDED)
            assert served.job["status"] == "completed", served.job
            yield served
    finally:
        live.stop()


def test_sdg_status_list_and_download_of_a_job_the_cli_submitted(served: Served, tmp_path: Path) -> None:
    job_id = served.job["job_id"]
    status = _json(served.cli("sdg", "status", job_id))
    assert status["status"] == "completed" and status["counts"]["prompts_read"] == 12
    assert status["counts"]["responses_generated"] == 24

    listed = _json(served.cli("sdg", "list"))
    assert job_id in [job["job_id"] for job in listed["jobs"]] and listed["count"] == len(listed["jobs"])

    target = tmp_path / "out.jsonl"
    downloaded = served.cli("sdg", "download", job_id, "-o", str(target))
    assert downloaded.exit_code == 0, downloaded.output
    assert downloaded.stdout.strip() == str(target)
    served_bytes = served.http.get(f"{SDG}/jobs/{job_id}/output", headers=bearer(served.key)).content
    assert target.read_bytes() == served_bytes
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert len(rows) == 24 and {row["index"] for row in rows} == {0, 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]  # no .part left


def test_sdg_commands_fail_with_the_servers_error_and_exit_1(served: Served, tmp_path: Path) -> None:
    missing = "job-" + "0" * 24
    for args in (("sdg", "status", missing), ("sdg", "cancel", missing)):
        result = served.cli(*args)
        assert result.exit_code == 1 and result.stdout == ""
        assert result.output.startswith("error: Job not found"), result.output
    target = tmp_path / "out.jsonl"
    result = served.cli("sdg", "download", missing, "-o", str(target))
    assert result.exit_code == 1 and "Job not found" in result.output and not target.exists()
    refused = served.cli("sdg", "list", key="wn-" + "x" * 43)
    assert refused.exit_code == 1 and refused.output.startswith("error: Unknown or revoked API key"), refused.output
    bad = served.cli("sdg", "submit", json.dumps(job_body("/etc/passwd")))
    assert bad.exit_code == 1 and "prompts_path" in bad.output, bad.output


def test_sdg_cancel_stops_a_running_job(served: Served, tmp_path: Path) -> None:
    key = served.new_key("canceller")
    prompts = write_prompts(served.live.data_dir / "many.jsonl", 500)
    job_id = _submit(served, job_body(prompts, batch_size=2), tmp_path, key)["job_id"]
    wait_running(served.http, key, job_id, read=2)

    cancelled = _json(served.cli("sdg", "cancel", job_id, key=key))
    assert cancelled["job_id"] == job_id and cancelled["status"] in ("running", "cancelled")
    ended = wait_for_job(served.http, key, job_id, ENDED)
    assert ended["status"] == "cancelled", ended
    assert ended["counts"]["prompts_read"] < 500

    status = _json(served.cli("sdg", "status", job_id, key=key))
    assert status["status"] == "cancelled"
    again = served.cli("sdg", "cancel", job_id, key=key)
    assert again.exit_code == 1
    assert again.output.startswith("error: The job has already ended (status cancelled)"), again.output


def _server_budget(served: Served) -> dict[str, Any]:
    response = served.http.get("/api/v1/usage/budget", headers=bearer(served.key))
    assert response.status_code == 200, response.text
    budget: dict[str, Any] = response.json()
    return budget


def _server_sees(served: Served, budget: dict[str, Any] | None, timeout: float = 30.0) -> dict[str, Any]:
    """Poll the server's view of the key's budget until it is ``budget`` (it re-reads budgets every
    usage_flush_s, 1 s); the timeout only bounds a hang."""
    deadline = time.monotonic() + timeout
    while (seen := _server_budget(served)).get("budget") != budget and time.monotonic() < deadline:
        time.sleep(0.1)
    return seen


def test_usage_and_keys_budget_act_on_the_servers_database(served: Served) -> None:
    counts = served.job["counts"]
    job_tokens = counts["input_tokens"] + counts["output_tokens"]
    assert job_tokens > 0

    report = _json(served.cli("usage", "--key", "owner", "--group-by", "key", "--json"))
    assert [row["group"] for row in report["rows"]] == ["owner"]
    owner = report["rows"][0]
    assert (owner["input_tokens"], owner["output_tokens"]) == (counts["input_tokens"], counts["output_tokens"])
    assert owner["requests"] == 12 and report["total"]["total_tokens"] == job_tokens  # a row per prompt
    table = served.cli("usage", "--group-by", "model")
    assert table.exit_code == 0 and "demo-lm" in table.stdout, table.output

    shown = _json(served.cli("keys", "budget", "owner"))
    assert shown["key"] == "owner" and shown["budget"] is None

    set_ = _json(served.cli("keys", "budget", "owner", "--usd", "5", "--tokens", "1000000", "--period", "total"))
    wanted = {"usd": 5.0, "tokens": 1000000, "period": "total"}
    assert set_["key"] == "owner" and set_["budget"] == wanted
    assert set_["spent_tokens"] == job_tokens and set_["remaining_tokens"] == 1000000 - job_tokens
    seen = _server_sees(served, wanted)
    assert seen["budget"] == wanted and seen["remaining_tokens"] == set_["remaining_tokens"], seen

    cleared = _json(served.cli("keys", "budget", "owner", "--clear"))
    assert cleared["budget"] is None
    assert _server_sees(served, None).get("budget") is None

    nobody = served.cli("keys", "budget", "nobody")
    assert nobody.exit_code == 1 and "no live key called 'nobody'" in nobody.output, nobody.output


def test_models_list_shows_the_models_the_server_serves(served: Served) -> None:
    listed = _json(served.cli("models", "list", "--json"))
    served_models = served.http.get("/api/v1/models", headers=bearer(served.key))
    assert served_models.status_code == 200, served_models.text
    assert listed == served_models.json()["models"]  # the same models, described alike
    assert "demo-lm" in {m["id"] for m in listed}
    table = served.cli("models", "list")
    assert table.exit_code == 0 and "demo-lm" in table.stdout, table.output


def test_sdg_list_pages_with_limit_and_after_and_filters(served: Served) -> None:
    key = served.new_key("pages")
    prompts = write_prompts(served.live.data_dir / "one.jsonl", 1)
    ids = [submit(served.http, key, job_body(prompts))["job_id"] for _ in range(3)]
    first = _json(served.cli("sdg", "list", "--limit", "2", key=key))
    assert [job["job_id"] for job in first["jobs"]] == ids[:0:-1] and first["has_more"] is True
    rest = _json(served.cli("sdg", "list", "--limit", "2", "--after", first["last_id"], key=key))
    assert [job["job_id"] for job in rest["jobs"]] == [ids[0]] and rest["has_more"] is False
    assert _json(served.cli("sdg", "list", "--model", "no-such-model", key=key))["jobs"] == []
    for job_id in ids:
        wait_for_job(served.http, key, job_id, ENDED)
    done = _json(served.cli("sdg", "list", "--status", "completed", "--model", "demo-lm", key=key))
    assert sorted(job["job_id"] for job in done["jobs"]) == sorted(ids)
    with Winnow(base_url=served.live.url, api_key=key) as client:  # the SDK pages the same way
        page = client.sdg.list(limit=1, after=ids[2])
        assert [job.job_id for job in page.jobs] == [ids[1]] and page.has_more and page.last_id == ids[1]

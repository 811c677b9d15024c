"""A real ``winnow serve`` process on loopback, driven over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.conftest import LiveServer
from tests.spec import assert_valid

pytestmark = pytest.mark.slow  # real `winnow serve` processes


def test_served_process_answers_probes_and_keys(live_server: LiveServer) -> None:
    health = httpx.get(f"{live_server.url}/api/v1/health")
    assert health.status_code == 200
    assert_valid("HealthResponse", health.json())
    assert httpx.get(f"{live_server.url}/api/v1/status").status_code == 401
    key = live_server.cli("keys", "create", "live").stdout.strip().splitlines()[-1]
    status = httpx.get(f"{live_server.url}/api/v1/status", headers={"Authorization": f"Bearer {key}"})
    assert status.status_code == 200
    assert_valid("DetailedStatusResponse", status.json())
    live_server.cli("keys", "revoke", "live")
    assert (Path(live_server.data_dir) / "winnow.db").exists()


def test_json_access_log_has_one_line_per_request(tmp_path: Path) -> None:
    server = LiveServer(tmp_path / "json", env={"WINNOW_LOG_JSON": "1"}).start()
    try:
        httpx.get(f"{server.url}/api/v1/health", headers={"X-Request-ID": "trace-42"})
        httpx.get(f"{server.url}/api/v1/status")
    finally:
        server.stop()
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    access = [entry for entry in lines if entry["logger"] == "winnow.access"]
    by_id = {entry["request_id"]: entry for entry in access}
    assert by_id["trace-42"]["status"] == 200 and by_id["trace-42"]["message"] == "GET /api/v1/health"
    assert any(e["status"] == 401 and e["key"] == "-" for e in access)
    assert all("latency_ms" in e for e in access)

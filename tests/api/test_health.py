"""The probes, validated against the seed spec's schemas."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import bearer, closed_port
from tests.spec import assert_error, assert_valid
from winnow.db import Database
from winnow.runtime import Runtime


def test_health_needs_no_key_and_matches_spec(client: TestClient) -> None:
    response = client.get("/api/v1/health")
    assert response.status_code == 200
    assert_valid("HealthResponse", response.json())
    assert response.json()["status"] == "healthy"


def test_status_without_key_is_401_error_response(client: TestClient) -> None:
    response = client.get("/api/v1/status")
    assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


def test_status_reports_real_figures(client: TestClient, user_key: str) -> None:
    import psutil

    response = client.get("/api/v1/status", headers=bearer(user_key))
    assert response.status_code == 200
    body = response.json()
    assert_valid("DetailedStatusResponse", body)
    assert body["system"]["memory"]["total"] == psutil.virtual_memory().total
    assert body["system"]["cpu"]["count"] == psutil.cpu_count()
    assert body["system"]["disk"]["total"] > 0


def test_status_warns_past_thresholds(client: TestClient, runtime: Runtime, user_key: str) -> None:
    runtime.settings.thresholds.memory_warn_percent = 0.0
    body = client.get("/api/v1/status", headers=bearer(user_key)).json()
    assert body["status"] == "degraded"
    assert any("memory usage" in w for w in body["warnings"])


def test_status_is_500_when_resources_are_below_floor(client: TestClient, runtime: Runtime, user_key: str) -> None:
    runtime.settings.thresholds.min_disk_free_mb = 10**12
    body = assert_error(client.get("/api/v1/status", headers=bearer(user_key)), 500, "system_unhealthy")
    assert "disk free" in body["details"]


def test_ready_when_all_checks_pass(client: TestClient) -> None:
    response = client.get("/api/v1/ready")
    assert response.status_code == 200
    assert_valid("ReadinessResponse", response.json())
    assert response.json()["checks"] == {
        "memory_available": True,
        "disk_available": True,
        "database": True,
        "models": True,
    }


def test_ready_is_503_naming_the_database_when_it_is_unreachable(client: TestClient, runtime: Runtime) -> None:
    healthy = runtime.db
    runtime.db = Database(f"postgresql+psycopg://nobody@127.0.0.1:{closed_port()}/none?connect_timeout=1")
    try:
        response = client.get("/api/v1/ready")
    finally:
        runtime.db = healthy
    assert response.status_code == 503
    body = response.json()
    assert_valid("ReadinessResponse", body)
    assert body["ready"] is False and body["failing"] == ["database"]


def test_ready_is_503_when_memory_is_short(client: TestClient, runtime: Runtime) -> None:
    runtime.settings.thresholds.min_memory_available_mb = 10**9
    response = client.get("/api/v1/ready")
    assert response.status_code == 503
    assert response.json()["failing"] == ["memory_available"]

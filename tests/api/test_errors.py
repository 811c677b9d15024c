"""Every error path answers with the spec's ErrorResponse and a stable code."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import bearer
from tests.spec import assert_error
from winnow.api import create_app
from winnow.config import Settings


def test_unknown_route_is_404(client: TestClient) -> None:
    body = assert_error(client.get("/api/v1/nowhere"), 404, "not_found")
    assert body["details"] == "GET /api/v1/nowhere"


def test_wrong_method_is_405(client: TestClient) -> None:
    assert_error(client.post("/api/v1/health"), 405, "method_not_allowed")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/api/v1/generate", "POST"),
        ("POST", "/api/v1/health", "GET"),
        ("PATCH", "/api/v1/keys", "GET, POST"),  # two routes on one path
        ("GET", "/api/v1/keys/someone/budget", "DELETE, PUT"),
        ("PUT", "/api/v1/models/demo-lm", "DELETE, GET"),  # DELETE: fine-tuned models
        ("POST", "/api/v1/synthetic_data_generation/jobs/abc/output", "GET"),
        ("POST", "/api/v1/docs", "GET, HEAD"),  # a Starlette route on the app itself
        ("GET", "/v1/chat/completions", "POST"),
        ("DELETE", "/v1/models", "GET"),
        ("POST", "/metrics", "GET"),
    ],
)
def test_405_allow_lists_the_methods_the_path_serves(client: TestClient, method: str, path: str, allow: str) -> None:
    """RFC 9110: a 405 names the methods the target serves, whichever router holds them."""
    response = client.request(method, path)
    assert response.status_code == 405, response.text
    assert response.headers["Allow"] == allow


def test_validation_error_is_400_naming_the_field(client: TestClient, admin_key: str) -> None:
    response = client.post("/api/v1/keys", json={"name": "ok", "admin": "maybe"}, headers=bearer(admin_key))
    body = assert_error(response, 400, "validation_error")
    assert body["details"].startswith("admin:")


def test_invalid_json_is_400(client: TestClient, admin_key: str) -> None:
    response = client.post(
        "/api/v1/keys",
        content=b"{not json",
        headers={**bearer(admin_key), "content-type": "application/json"},
    )
    body = assert_error(response, 400, "validation_error")
    assert "JSON" in body["details"]


def test_body_over_the_limit_is_413(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, max_body_bytes=1000))
    with TestClient(app) as small:
        key = small.app.state.runtime.keys.create("a", admin=True).key  # type: ignore[attr-defined]
        big = b'{"name": "' + b"x" * 5000 + b'"}'
        declared = small.post("/api/v1/keys", content=big, headers={**bearer(key), "content-type": "application/json"})
        assert_error(declared, 413, "payload_too_large")

        def chunks():  # type: ignore[no-untyped-def]
            yield big[:800]
            yield big[800:]

        streamed = small.post(
            "/api/v1/keys", content=chunks(), headers={**bearer(key), "content-type": "application/json"}
        )
        assert_error(streamed, 413, "payload_too_large")


def test_unhandled_exception_is_500_without_traceback(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(settings)

    @app.get("/api/v1/boom")
    def boom() -> None:
        raise RuntimeError("secret internals")

    with TestClient(app, raise_server_exceptions=False) as test_client:
        winnow_logger = logging.getLogger("winnow")  # does not propagate to the root logger
        winnow_logger.addHandler(caplog.handler)
        try:
            response = test_client.get("/api/v1/boom", headers={"X-Request-ID": "req-123"})
        finally:
            winnow_logger.removeHandler(caplog.handler)
    body = assert_error(response, 500, "internal_error")
    assert "secret internals" not in response.text and "Traceback" not in response.text
    assert body["details"] == "request id req-123"
    assert any(r.exc_info and getattr(r, "request_id", None) == "req-123" for r in caplog.records)


def test_request_id_is_echoed_or_made(client: TestClient) -> None:
    assert client.get("/api/v1/health", headers={"X-Request-ID": "abc-1"}).headers["x-request-id"] == "abc-1"
    made = client.get("/api/v1/health", headers={"X-Request-ID": "bad id with spaces"}).headers["x-request-id"]
    assert made != "bad id with spaces" and len(made) == 32


@pytest.mark.parametrize(
    "bad", [{"name": "k", "admin": 0}, {"name": 5}, {"name": "k", "rate_limits": {"gen": "1/second"}}]
)
def test_request_bodies_are_strictly_typed(client: TestClient, admin_key: str, bad: dict) -> None:  # type: ignore[type-arg]
    assert_error(client.post("/api/v1/keys", json=bad, headers=bearer(admin_key)), 400, "validation_error")

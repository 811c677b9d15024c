"""API keys: hashed at rest, 401 for every bad key, 403 for non-admins on admin routes."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.conftest import bearer
from tests.spec import assert_error
from winnow.errors import AuthenticationFailed, Conflict, NotFound
from winnow.runtime import Runtime


def test_key_is_random_and_only_its_hash_is_stored(runtime: Runtime) -> None:
    first = runtime.keys.create("a").key
    second = runtime.keys.create("b").key
    assert first != second and len(first) >= 40  # 32 random bytes, url-safe
    with runtime.db.engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM api_keys")).fetchall()
    dumped = repr(rows)
    assert first not in dumped and second not in dumped
    assert first[len("wn-") + 10 :] not in dumped


def test_authenticate_known_unknown_and_revoked(runtime: Runtime) -> None:
    key = runtime.keys.create("carol").key
    assert runtime.keys.authenticate(key).name == "carol"
    with pytest.raises(AuthenticationFailed):
        runtime.keys.authenticate("wn-" + "x" * 43)
    runtime.keys.revoke("carol")
    with pytest.raises(AuthenticationFailed):
        runtime.keys.authenticate(key)


def test_live_names_are_unique_but_reusable_after_revoke(runtime: Runtime) -> None:
    runtime.keys.create("dave")
    with pytest.raises(Conflict):
        runtime.keys.create("dave")
    runtime.keys.revoke("dave")
    runtime.keys.create("dave")
    assert [k.name for k in runtime.keys.list(include_revoked=True)] == ["dave", "dave"]
    with pytest.raises(NotFound):
        runtime.keys.revoke("nobody")


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Basic abc", "Bearer not-a-winnow-key", "Bearer wn-" + "A" * 43],
    ids=["missing", "empty", "wrong-scheme", "malformed", "unknown"],
)
def test_bad_keys_get_401_with_www_authenticate(client: TestClient, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    response = client.get("/api/v1/status", headers=headers)
    assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


def test_revoked_key_is_refused_at_once(client: TestClient, runtime: Runtime, admin_key: str) -> None:
    victim = runtime.keys.create("victim").key
    assert client.get("/api/v1/status", headers=bearer(victim)).status_code == 200
    assert client.delete("/api/v1/keys/victim", headers=bearer(admin_key)).status_code == 200
    assert_error(client.get("/api/v1/status", headers=bearer(victim)), 401)


def test_non_admin_key_gets_403_on_key_routes(client: TestClient, user_key: str) -> None:
    assert_error(client.get("/api/v1/keys", headers=bearer(user_key)), 403, "forbidden")
    assert_error(client.post("/api/v1/keys", json={"name": "x"}, headers=bearer(user_key)), 403)


def test_admin_manages_keys_over_http(client: TestClient, admin_key: str) -> None:
    created = client.post(
        "/api/v1/keys",
        json={"name": "svc", "rate_limits": {"generation": "5/second"}},
        headers=bearer(admin_key),
    )
    assert created.status_code == 201
    secret = created.json()["key"]
    assert client.get("/api/v1/status", headers=bearer(secret)).status_code == 200
    listed = client.get("/api/v1/keys", headers=bearer(admin_key)).json()
    assert {k["name"] for k in listed["keys"]} == {"admin", "svc"}
    assert all("key" not in k and "key_hash" not in k for k in listed["keys"])
    assert_error(client.post("/api/v1/keys", json={"name": "svc"}, headers=bearer(admin_key)), 409, "conflict")
    assert_error(
        client.post("/api/v1/keys", json={"name": "z", "rate_limits": {"gen": "1/s"}}, headers=bearer(admin_key)),
        400,
    )
    assert client.delete("/api/v1/keys/svc", headers=bearer(admin_key)).json()["revoked_at"]
    assert_error(client.delete("/api/v1/keys/svc", headers=bearer(admin_key)), 404, "not_found")


def test_the_last_active_admin_key_cannot_be_revoked(client: TestClient, runtime: Runtime, admin_key: str) -> None:
    """Not even by itself: a 409 that says how to go on; a second admin makes it revocable."""
    refused = client.delete("/api/v1/keys/admin", headers=bearer(admin_key))
    body = assert_error(refused, 409, "conflict")
    assert body["message"] == "Refusing to revoke the last active admin key"
    assert "create another admin key first" in body["details"]
    assert client.get("/api/v1/keys", headers=bearer(admin_key)).status_code == 200  # still works
    runtime.keys.create("plain")  # a non-admin key does not count
    assert_error(client.delete("/api/v1/keys/admin", headers=bearer(admin_key)), 409)
    second = runtime.keys.create("admin-2", admin=True).key
    assert client.delete("/api/v1/keys/admin", headers=bearer(second)).json()["revoked_at"]
    assert_error(client.delete("/api/v1/keys/admin-2", headers=bearer(second)), 409, "conflict")
    with pytest.raises(Conflict):
        runtime.keys.revoke("admin-2")

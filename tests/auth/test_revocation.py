"""A key revoked through one server is refused by every other server sharing the database within
``key_cache_ttl_s`` (each process trusts a verified key that long without a lookup)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import LiveServer, bearer
from tests.spec import assert_error

pytestmark = pytest.mark.slow  # two `winnow serve` processes

TTL_S = 1.0
# A bound on a hang, well past the TTL: a server that never drops its cached key fails here.
DEADLINE_S = 15 * TTL_S


def _status(server: LiveServer, key: str) -> httpx.Response:
    return httpx.get(f"{server.url}/api/v1/status", headers=bearer(key), timeout=30)


def test_a_key_revoked_on_one_server_is_refused_by_another_within_the_cache_ttl(tmp_path: Path) -> None:
    shared = tmp_path / "shared"  # one data dir, so one SQLite database, for both servers
    env = {"WINNOW_KEY_CACHE_TTL_S": str(TTL_S)}
    a = LiveServer(shared, env).start()
    try:
        b = LiveServer(shared, env).start()
        try:
            admin = a.cli("keys", "create", "boss", "--admin").stdout.split()[-1]
            victim = a.cli("keys", "create", "victim").stdout.split()[-1]
            assert _status(b, victim).status_code == 200  # B has verified (and cached) the key
            assert _status(a, victim).status_code == 200

            revoked = httpx.delete(f"{a.url}/api/v1/keys/victim", headers=bearer(admin), timeout=30)
            assert revoked.status_code == 200 and revoked.json()["revoked_at"], revoked.text
            assert_error(_status(a, victim), 401, "unauthorized")  # the revoking server: at once

            deadline = time.monotonic() + DEADLINE_S
            answer = _status(b, victim)
            while answer.status_code == 200 and time.monotonic() < deadline:
                time.sleep(TTL_S / 10)
                answer = _status(b, victim)
            assert_error(answer, 401, "unauthorized")  # the other server, once its cache entry expired
            assert_error(_status(b, victim), 401, "unauthorized")  # and from then on
            assert _status(b, admin).status_code == 200  # other keys are unaffected
        finally:
            b.stop()
    finally:
        a.stop()

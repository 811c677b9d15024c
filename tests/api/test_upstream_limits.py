"""What an upstream can do to Winnow, and may not: a real `winnow serve` in front of fake upstreams
in processes of their own (tests/api/chaos_upstream.py) that trickle a byte a second, answer 50 MB,
echo the key they were sent, or want HTTP basic auth. ``timeout_s`` bounds a whole call and the
call fails over; an answer past ``max_upstream_response_bytes`` fails over or is a 502, without the
server holding it; a base_url's credentials are sent as basic auth and shown nowhere; Winnow's
upstream keys and bearer tokens are redacted from what a client gets and from the log."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.chaos_upstream import BASIC_PASSWORD, BASIC_USER, FIRST_PIECE
from tests.api.test_passthrough import STREAM_PIECES, FakeUpstream
from tests.api.test_router import Doomed
from tests.conftest import LiveServer, bearer

pytestmark = pytest.mark.slow  # a real `winnow serve`, fake upstreams in processes

TIMEOUT_S = 2.0
# How much later than timeout_s a failed-over call may end: a fixed allowance for starting the
# second try, far below what an unbounded wait would take (the trickle never ends).
SLACK_S = 6.0
CAP = 2 * 1024 * 1024
UPSTREAM_KEY = "plain-upstream-key-0123456789"  # looks like no token: only Winnow knows it is one
CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
MODES = ("trickle", "trickle-after-first", "echo-auth", "huge", "basic-auth")


@pytest.fixture(scope="module")
def healthy() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture(scope="module")
def chaos() -> Iterator[dict[str, Doomed]]:
    procs = {mode: Doomed(mode) for mode in MODES}
    yield procs
    for proc in procs.values():
        proc.kill()


def _with_creds(url: str, user: str, password: str) -> str:
    return url.replace("http://", f"http://{user}:{password}@") + "/v1"


@pytest.fixture(scope="module")
def gateway(
    healthy: FakeUpstream, chaos: dict[str, Doomed], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, str]]:
    data = tmp_path_factory.mktemp("upstream-limits") / "data"

    def model(model_id: str, *deployments: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {
            "id": model_id,
            "type": "commercial",
            "provider": "openai",
            "upstream_model": "up-model-1",
            "api_key_env": "LIMITS_UPSTREAM_KEY",
            "max_retries": 0,
            "timeout_s": TIMEOUT_S,
            "deployments": list(deployments),
            **extra,
        }

    def of(name: str) -> dict[str, Any]:
        return {"id": name, "base_url": f"{chaos[name].url}/v1"}

    ok = {"id": "ok", "base_url": f"{healthy.url}/v1"}
    basic = chaos["basic-auth"].url
    models = [
        model("slow", of("trickle"), ok),
        model("slow-stream", of("trickle"), ok),
        model("slow-sdk", of("trickle"), ok),
        model("idle", of("trickle-after-first"), ok),
        model("echoes", of("echo-auth")),
        model("huge", of("huge"), ok),
        model("huge-only", of("huge")),
        model("huge-stream", of("huge")),
        model("huge-sdk", of("huge"), ok),
        model("creds", {"base_url": _with_creds(basic, BASIC_USER, BASIC_PASSWORD)}),
        model("wrong-creds", {"base_url": _with_creds(basic, BASIC_USER, "not-the-password")}, ok),
        model("bad-key", {"id": "bad-key", "base_url": f"{healthy.url}/v1", "api_key_env": "BROKEN_KEY"}, ok),
    ]
    config = data.parent / "limits.yaml"
    config.write_text(
        json.dumps(
            {"models": models, "max_upstream_response_bytes": CAP, "rate_limits": {"generation": "100000/minute"}}
        )
    )
    env = {
        "WINNOW_CONFIG": str(config),
        "LIMITS_UPSTREAM_KEY": UPSTREAM_KEY,
        "BROKEN_KEY": "sk-broken\r\nX-Injected: 1",  # a header aiohttp refuses to send
    }
    server = LiveServer(data, env=env).start()
    admin = server.cli("keys", "create", "admin", "--admin").stdout.split()[-1]
    yield server, admin
    server.stop()


def _chat(server: LiveServer, key: str, model: str, **extra: Any) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/chat/completions", json={"model": model, **CHAT, **extra}, headers=bearer(key), timeout=30
    )


def _generate(server: LiveServer, key: str, model: str) -> httpx.Response:
    body = {"model_id": model, "prompt": "What is 2+2?", "max_tokens": 3}
    return httpx.post(f"{server.url}/api/v1/generate", json=body, headers=bearer(key), timeout=30)


def _events(response: httpx.Response) -> list[Any]:
    return [
        line[6:] if line[6:] == "[DONE]" else json.loads(line[6:])
        for line in response.text.split("\n\n")
        if line.startswith("data: ")
    ]


def _peak_rss_mb(server: LiveServer) -> float:
    assert server.proc is not None
    status = Path(f"/proc/{server.proc.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024


def _usage_rows(server: LiveServer, key: str) -> list[tuple[Any, ...]]:
    """Every usage row: (model, deployment, length of its stored content)."""
    httpx.get(f"{server.url}/api/v1/usage", headers=bearer(key))  # writes the buffered rows
    with sqlite3.connect(Path(server.data_dir) / "winnow.db") as db:
        query = "SELECT model, deployment, length(content) FROM usage_records ORDER BY id"
        return list(db.execute(query).fetchall())


# -- 3: timeout_s bounds the whole call ---------------------------------------------------------------


def test_a_trickling_upstream_times_out_within_timeout_s_and_the_call_fails_over(
    gateway: tuple[LiveServer, str],
) -> None:
    server, admin = gateway
    started = time.monotonic()
    response = _chat(server, admin, "slow")
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert (response.headers["x-winnow-deployment"], response.headers["x-winnow-attempts"]) == ("ok", "2")
    assert TIMEOUT_S <= elapsed < TIMEOUT_S + SLACK_S, elapsed
    described = httpx.get(f"{server.url}/api/v1/models/slow", headers=bearer(admin)).json()["model"]
    assert {d["id"]: d["failures"] for d in described["deployments"]}["trickle"] == 1  # towards its cooldown


def test_a_stream_must_bring_its_first_chunk_within_timeout_s(gateway: tuple[LiveServer, str]) -> None:
    server, admin = gateway
    started = time.monotonic()
    response = _chat(server, admin, "slow-stream", stream=True)
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert response.headers["x-winnow-deployment"] == "ok"
    events = _events(response)
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1]) == "".join(STREAM_PIECES)
    assert TIMEOUT_S <= elapsed < TIMEOUT_S + SLACK_S, elapsed


def test_a_stream_that_trickles_after_its_first_chunk_ends_with_a_timeout_event(
    gateway: tuple[LiveServer, str],
) -> None:
    server, admin = gateway
    started = time.monotonic()
    response = _chat(server, admin, "idle", stream=True)
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    first, error, done = _events(response)
    assert first["choices"][0]["delta"]["content"] == FIRST_PIECE
    assert error["error"]["code"] == "upstream_timeout" and done == "[DONE]"
    assert TIMEOUT_S <= elapsed < TIMEOUT_S + SLACK_S, elapsed


def test_generate_through_the_sdk_is_bounded_by_timeout_s_too(gateway: tuple[LiveServer, str]) -> None:
    server, admin = gateway
    started = time.monotonic()
    response = _generate(server, admin, "slow-sdk")
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert (response.json()["metadata"]["deployment"], response.json()["metadata"]["attempts"]) == ("ok", 2)
    assert TIMEOUT_S <= elapsed < TIMEOUT_S + SLACK_S, elapsed


# -- 5: credentials in a base_url ---------------------------------------------------------------------


def test_base_url_credentials_are_sent_as_basic_auth_and_shown_nowhere(
    gateway: tuple[LiveServer, str], chaos: dict[str, Doomed]
) -> None:
    server, admin = gateway
    host = chaos["basic-auth"].url.removeprefix("http://")
    answered = _chat(server, admin, "creds")
    assert answered.status_code == 200, answered.text
    assert answered.headers["x-winnow-deployment"] == host  # its id: host:port, no userinfo
    generated = _generate(server, admin, "creds")  # the SDK's way sends them too
    assert generated.status_code == 200, generated.text
    assert generated.json()["metadata"]["deployment"] == host
    # Wrong credentials: the upstream's 401 fails over like any failure of a deployment.
    wrong = _chat(server, admin, "wrong-creds")
    assert (wrong.status_code, wrong.headers["x-winnow-deployment"]) == (200, "ok"), wrong.text

    listed = httpx.get(f"{server.url}/api/v1/models", headers=bearer(admin)).text
    metrics = httpx.get(f"{server.url}/metrics").text
    shown = server.cli("config", "show").stdout
    rows = json.dumps(_usage_rows(server, admin))
    assert f"http://***@{host}/v1" in shown
    for seen in (listed, metrics, shown, rows, server.log(), answered.text, json.dumps(dict(answered.headers))):
        assert BASIC_PASSWORD not in seen and "not-the-password" not in seen
        assert f"{BASIC_USER}:" not in seen and f"{BASIC_USER}@" not in seen


def test_a_client_side_error_of_the_http_client_fails_over_instead_of_a_500(
    gateway: tuple[LiveServer, str],
) -> None:
    server, admin = gateway
    response = _chat(server, admin, "bad-key")
    assert response.status_code == 200, response.text
    assert (response.headers["x-winnow-deployment"], response.headers["x-winnow-attempts"]) == ("ok", "2")


# -- 6: secrets in an upstream's error text -----------------------------------------------------------


def test_an_upstream_echoing_its_key_is_redacted_for_the_client_and_in_the_log(
    gateway: tuple[LiveServer, str],
) -> None:
    server, admin = gateway
    failed = _chat(server, admin, "echoes")
    assert failed.status_code == 502, failed.text
    refused = _chat(server, admin, "echoes", user="400")  # passed on with the upstream's error object
    assert refused.status_code == 400, refused.text
    generated = _generate(server, admin, "echoes")
    assert generated.status_code == 502, generated.text
    for answer in (failed, refused, generated):
        assert UPSTREAM_KEY not in answer.text
        assert "Incorrect API key provided" in answer.text and "Bearer ***" in answer.text
    assert failed.json()["error"]["code"] == "upstream_error"
    log = server.log()
    assert "Incorrect API key provided" in log  # the failure is logged, the key is not
    assert UPSTREAM_KEY not in log


# -- 7: a cap on an upstream's answer -----------------------------------------------------------------


def test_an_answer_past_the_cap_fails_over_without_the_server_holding_it(gateway: tuple[LiveServer, str]) -> None:
    server, admin = gateway
    before = _peak_rss_mb(server)
    response = _chat(server, admin, "huge")
    assert response.status_code == 200, response.text
    assert (response.headers["x-winnow-deployment"], response.headers["x-winnow-attempts"]) == ("ok", "2")
    alone = _chat(server, admin, "huge-only")
    assert alone.status_code == 502, alone.text
    error = alone.json()["error"]  # OpenAI's error shape
    assert error["code"] == "upstream_error" and "max_upstream_response_bytes" in error["message"]
    generated = _generate(server, admin, "huge-sdk")
    assert generated.status_code == 200, generated.text
    assert generated.json()["metadata"]["deployment"] == "ok"
    # Each of three 50 MB answers was dropped at 2 MB: the server's peak memory barely moved.
    assert _peak_rss_mb(server) - before < 40
    # Usage rows hold the answers' text only (the healthy upstream's echo field is not kept), and
    # nothing of a dropped answer.
    rows = _usage_rows(server, admin)
    assert [(m, d) for m, d, _ in rows if m.startswith("huge")] == [("huge", "ok"), ("huge-sdk", "ok")]
    assert max(size or 0 for _, _, size in rows) < 2000


def test_a_stream_past_the_cap_ends_with_an_error_event(gateway: tuple[LiveServer, str]) -> None:
    server, admin = gateway
    before = _peak_rss_mb(server)
    response = _chat(server, admin, "huge-stream", stream=True)
    assert response.status_code == 200, response.text
    events = _events(response)
    assert events[-1] == "[DONE]" and "max_upstream_response_bytes" in events[-2]["error"]["message"]
    assert sum(len(e["choices"][0]["delta"]["content"]) for e in events[:-2]) <= CAP
    assert _peak_rss_mb(server) - before < 40

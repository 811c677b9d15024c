"""The router in a real `winnow serve`: models with two deployments each, fake upstreams on loopback
(threads, and processes the tests kill), and what a client sees: which deployment answered and in
how many attempts, failover with no client-visible error when a deployment dies under load, a 429
cooling a deployment down until it is probed back, fallback models, pinned deployments, and a
stream that fails over only before its first byte."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.chaos_upstream import FIRST_PIECE
from tests.api.test_passthrough import STREAM_PIECES, Answer, FakeUpstream
from tests.conftest import ROOT, LiveServer, bearer, closed_port, until

pytestmark = pytest.mark.slow  # a real `winnow serve`, fake upstreams in threads and processes

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
BUSY = {"error": {"message": "Rate limit reached", "type": "requests", "param": None, "code": "rate_limit_exceeded"}}
LOAD_REQUESTS = 2000


class Doomed:
    """A fake upstream in its own process (tests/api/chaos_upstream.py), to be killed."""

    def __init__(self, mode: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.api.chaos_upstream", mode], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        assert self.url.startswith("http://"), self.url

    def next_line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeUpstream]]:
    with FakeUpstream() as a, FakeUpstream() as b, FakeUpstream() as c:
        yield {"a": a, "b": b, "c": c}


@pytest.fixture(scope="module")
def doomed() -> Iterator[dict[str, Doomed]]:
    procs = {mode: Doomed(mode) for mode in ("echo", "hang", "first-chunk")}
    yield procs
    for proc in procs.values():
        proc.kill()


def _model(model_id: str, *deployments: tuple[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "id": model_id,
        "type": "commercial",
        "provider": "openai",
        "upstream_model": "up-model-1",
        "max_retries": 0,
        "input_price_per_mtok": 1.0,
        "output_price_per_mtok": 2.0,
        "deployments": [{"id": name, "base_url": f"{url}/v1"} for name, url in deployments],
        **extra,
    }


@pytest.fixture(scope="module")
def gateway(
    fakes: dict[str, FakeUpstream], doomed: dict[str, Doomed], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, str]]:
    """A real `winnow serve` whose models are deployed over the fakes: (server, admin key)."""
    data = tmp_path_factory.mktemp("router") / "data"
    a, b = ("a", fakes["a"].url), ("b", fakes["b"].url)
    dead = [("dead-1", f"http://127.0.0.1:{closed_port()}"), ("dead-2", f"http://127.0.0.1:{closed_port()}")]
    models = [
        _model("duo", a, b),
        {
            **_model("weighted", a, b),
            "deployments": [{"id": "a", "base_url": f"{a[1]}/v1", "weight": 3}, {"id": "b", "base_url": f"{b[1]}/v1"}],
        },
        _model("cooling", a, b),
        _model("comeback", a, b, cooldown={"cooldown_s": 0.2}),
        _model("recovering", a, b, cooldown={"cooldown_s": 0.2}, fallbacks=["solo"]),
        _model("busy", a, b, routing_strategy="least_busy"),
        _model("sdk-duo", a, b),
        _model("down", *dead, fallbacks=["solo"], cooldown={"cooldown_s": 60}),
        _model("solo", ("c", fakes["c"].url), input_price_per_mtok=4.0),
        _model("doomed", ("doomed", doomed["echo"].url), b),
        _model("stream-hang", ("hangs", doomed["hang"].url), b),
        _model("stream-cut", ("cuts", doomed["first-chunk"].url), b),
    ]
    config = data.parent / "router.yaml"
    config.write_text(json.dumps({"models": models, "rate_limits": {"generation": "1000000/minute"}}))
    server = LiveServer(data, env={"WINNOW_CONFIG": str(config)}).start()
    admin = server.cli("keys", "create", "admin", "--admin").stdout.split()[-1]
    yield server, admin
    server.stop()


@pytest.fixture
def server(gateway: tuple[LiveServer, str], fakes: dict[str, FakeUpstream]) -> LiveServer:
    for fake in fakes.values():
        fake.received.clear()
        fake.answers.clear()
    return gateway[0]


@pytest.fixture
def admin(gateway: tuple[LiveServer, str]) -> str:
    return gateway[1]


def _chat(server: LiveServer, key: str, model: str, **extra: Any) -> httpx.Response:
    headers = {**bearer(key), **extra.pop("headers", {})}
    return httpx.post(
        f"{server.url}/v1/chat/completions", json={"model": model, **CHAT, **extra}, headers=headers, timeout=60
    )


def _deployments(server: LiveServer, key: str, model: str) -> dict[str, dict[str, Any]]:
    described = httpx.get(f"{server.url}/api/v1/models/{model}", headers=bearer(key)).json()["model"]
    return {d["id"]: d for d in described["deployments"]}


def _usage_rows(server: LiveServer, key: str, count: int) -> list[tuple[Any, ...]]:
    """The last ``count`` usage rows: (model, deployment, attempts, cached, cost_usd)."""
    httpx.get(f"{server.url}/api/v1/usage", headers=bearer(key))  # writes the buffered rows
    with sqlite3.connect(Path(server.data_dir) / "winnow.db") as db:
        query = "SELECT model, deployment, attempts, cached, cost_usd FROM usage_records ORDER BY id DESC LIMIT ?"
        return list(reversed(db.execute(query, (count,)).fetchall()))


def test_round_robin_alternates_and_says_which_deployment_answered(
    server: LiveServer, admin: str, fakes: dict[str, FakeUpstream]
) -> None:
    served = []
    for _ in range(4):
        response = _chat(server, admin, "duo")
        assert response.status_code == 200, response.text
        assert response.headers["x-winnow-attempts"] == "1"
        served.append(response.headers["x-winnow-deployment"])
    assert served == ["a", "b", "a", "b"]
    assert len(fakes["a"].received) == len(fakes["b"].received) == 2
    assert [r["body"]["model"] for r in fakes["a"].received] == ["up-model-1"] * 2
    assert _usage_rows(server, admin, 4) == [
        ("duo", name, 1, 0, pytest.approx((11 * 1.0 + 7 * 2.0) / 1e6)) for name in served
    ]
    # Weights: 3 to 1, interleaved.
    weighted = [_chat(server, admin, "weighted").headers["x-winnow-deployment"] for _ in range(8)]
    assert Counter(weighted) == {"a": 6, "b": 2} and weighted[:4].count("b") == 1


def test_a_pinned_deployment_is_used_and_winnow_fields_never_reach_the_upstream(
    server: LiveServer, admin: str, fakes: dict[str, FakeUpstream]
) -> None:
    for _ in range(3):
        response = _chat(server, admin, "duo", headers={"x-winnow-deployment": "b"}, disable_fallbacks=True)
        assert response.status_code == 200, response.text
        assert response.headers["x-winnow-deployment"] == "b"
    assert not fakes["a"].received and len(fakes["b"].received) == 3
    assert "disable_fallbacks" not in fakes["b"].received[0]["body"]
    assert response.json()["echo"] == {"model": "up-model-1", **CHAT}
    unknown = _chat(server, admin, "duo", headers={"x-winnow-deployment": "nope"})
    assert unknown.status_code == 400 and "a, b" in unknown.text
    wrong = _chat(server, admin, "duo", disable_fallbacks="yes")
    assert wrong.status_code == 400 and "disable_fallbacks" in wrong.text
    assert not fakes["a"].received


def test_a_429_moves_traffic_to_the_other_deployment_until_its_cooldown_ends(
    server: LiveServer, admin: str, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["a"].answers.append(Answer(429, BUSY, {"Retry-After": "30"}))
    first = _chat(server, admin, "cooling")
    assert first.status_code == 200, first.text
    assert (first.headers["x-winnow-deployment"], first.headers["x-winnow-attempts"]) == ("b", "2")
    assert [_chat(server, admin, "cooling").headers["x-winnow-deployment"] for _ in range(4)] == ["b"] * 4
    assert len(fakes["a"].received) == 1 and len(fakes["b"].received) == 5
    state = _deployments(server, admin, "cooling")
    assert state["a"]["state"] == "cooldown" and state["a"]["cooldown_remaining_s"] > 0
    assert (state["a"]["failures"], state["a"]["cooldowns"], state["b"]["state"]) == (1, 1, "healthy")
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'winnow_deployment_cooling{deployment="a",model="cooling"} 1.0' in metrics
    assert 'winnow_deployment_cooldowns_total{deployment="a",model="cooling"} 1.0' in metrics
    assert _usage_rows(server, admin, 1)[0][:3] == ("cooling", "b", 1)

    # Once its cooldown (here the upstream's Retry-After: 1) is over, a call probes it and it is back.
    fakes["a"].answers.append(Answer(429, BUSY, {"Retry-After": "1"}))
    assert _chat(server, admin, "comeback").headers["x-winnow-deployment"] == "b"
    until("a to be probed again", lambda: _deployments(server, admin, "comeback")["a"]["state"] == "probing")
    served = [_chat(server, admin, "comeback").headers["x-winnow-deployment"] for _ in range(2)]
    assert "a" in served
    assert _deployments(server, admin, "comeback")["a"]["state"] == "healthy"


def test_calls_wait_for_probes_in_flight_instead_of_a_429_or_the_fallback(
    server: LiveServer, admin: str, fakes: dict[str, FakeUpstream]
) -> None:
    """Both deployments cooled down and back: the first two calls probe them, and the other six
    wait for a probe to end rather than take a 429 ("at its rpm/tpm cap": there are no caps) or go
    to the fallback model."""
    fakes["a"].answers.append(Answer(429, BUSY))
    fakes["b"].answers.append(Answer(429, BUSY))
    cooled = _chat(server, admin, "recovering")
    assert (cooled.status_code, cooled.headers["x-winnow-deployment"]) == (200, "c"), cooled.text
    until(
        "both to be probed again",
        lambda: {d["state"] for d in _deployments(server, admin, "recovering").values()} == {"probing"},
    )
    gate = threading.Event()  # holds the two probes' answers
    fakes["a"].answers.append(Answer(gate=gate))
    fakes["b"].answers.append(Answer(gate=gate))
    fallback_calls = len(fakes["c"].received)
    with ThreadPoolExecutor(8) as pool:
        # Half may fall back, half may not: before, the first got the fallback, the rest a 429.
        calls = [pool.submit(_chat, server, admin, "recovering", disable_fallbacks=i % 2 == 0) for i in range(8)]

        def six_waiting_or_one_answered() -> bool:
            waiting = sum(d.get("waiting", 0) for d in _deployments(server, admin, "recovering").values())
            return waiting == 6 or any(call.done() for call in calls)

        until("six calls to wait for the probes", six_waiting_or_one_answered)
        gate.set()
        answers = [call.result() for call in calls]
    assert [a.status_code for a in answers] == [200] * 8, [a.text for a in answers if a.status_code != 200]
    assert {a.headers["x-winnow-deployment"] for a in answers} <= {"a", "b"}
    assert len(fakes["c"].received) == fallback_calls  # nothing went to the fallback
    assert {d["state"] for d in _deployments(server, admin, "recovering").values()} == {"healthy"}


def test_least_busy_sends_calls_past_a_deployment_with_one_in_flight(
    server: LiveServer, admin: str, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["a"].answers.append(Answer(hang=True))
    fakes["a"].release.clear()
    with ThreadPoolExecutor(1) as pool:
        stuck = pool.submit(_chat, server, admin, "busy")
        until("the first call to reach a", lambda: fakes["a"].received)
        assert [_chat(server, admin, "busy").headers["x-winnow-deployment"] for _ in range(3)] == ["b"] * 3
        assert _deployments(server, admin, "busy")["a"]["in_flight"] == 1
        fakes["a"].release.set()
        stuck.result()


def test_when_every_deployment_is_down_the_fallback_model_answers(
    server: LiveServer, admin: str, fakes: dict[str, FakeUpstream]
) -> None:
    response = _chat(server, admin, "down")
    assert response.status_code == 200, response.text
    assert (response.headers["x-winnow-deployment"], response.headers["x-winnow-attempts"]) == ("c", "3")
    assert response.json()["model"] == "solo"  # who answered, billed at its prices
    assert len(fakes["c"].received) == 1
    assert _usage_rows(server, admin, 1) == [("solo", "c", 3, 0, pytest.approx((11 * 4.0 + 7 * 2.0) / 1e6))]
    # Both dead deployments are cooled down now: the next call goes to the fallback at once.
    again = _chat(server, admin, "down")
    assert (again.headers["x-winnow-deployment"], again.headers["x-winnow-attempts"]) == ("c", "1")
    # Without fallbacks the client gets the failure, and how many calls it took.
    refused = _chat(server, admin, "down", disable_fallbacks=True)
    assert refused.status_code == 503, refused.text
    assert refused.headers["x-winnow-attempts"] == "0" and int(refused.headers["Retry-After"]) >= 1
    assert len(fakes["c"].received) == 2


def test_a_deployment_killed_under_load_costs_no_client_an_error(
    server: LiveServer, admin: str, doomed: dict[str, Doomed], fakes: dict[str, FakeUpstream]
) -> None:
    done = threading.Semaphore(0)
    killed = threading.Event()

    def one(_: int) -> tuple[int, str, int]:
        response = _chat(server, admin, "doomed")
        done.release()
        return response.status_code, response.headers.get("x-winnow-deployment", ""), response.text.count("error")

    with ThreadPoolExecutor(8) as pool:
        results = pool.map(one, range(LOAD_REQUESTS))

        def kill_after_a_quarter() -> None:
            for _ in range(LOAD_REQUESTS // 4):
                done.acquire()
            doomed["echo"].kill()
            killed.set()

        killer = threading.Thread(target=kill_after_a_quarter)
        killer.start()
        outcomes = list(results)
        killer.join()
    assert killed.is_set()
    statuses = Counter(status for status, _, _ in outcomes)
    assert statuses == {200: LOAD_REQUESTS}, statuses
    served = Counter(name for _, name, _ in outcomes)
    assert served["doomed"] >= LOAD_REQUESTS // 10 and served["b"] >= LOAD_REQUESTS // 2, served
    assert _deployments(server, admin, "doomed")["doomed"]["cooldowns"] >= 1
    assert len(fakes["b"].received) == served["b"]


def _events(response: httpx.Response) -> list[Any]:
    return [
        line[6:] if line[6:] == "[DONE]" else json.loads(line[6:])
        for line in response.text.split("\n\n")
        if line.startswith("data: ")
    ]


def test_a_stream_whose_deployment_dies_before_the_first_byte_is_retried(
    server: LiveServer, admin: str, doomed: dict[str, Doomed], fakes: dict[str, FakeUpstream]
) -> None:
    with ThreadPoolExecutor(1) as pool:
        stream = pool.submit(_chat, server, admin, "stream-hang", stream=True)
        assert doomed["hang"].next_line() == "got /v1/chat/completions"
        doomed["hang"].kill()
        response = stream.result()
    assert response.status_code == 200, response.text
    assert (response.headers["x-winnow-deployment"], response.headers["x-winnow-attempts"]) == ("b", "2")
    events = _events(response)
    assert events[-1] == "[DONE]" and not any("error" in e for e in events[:-1])
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1]) == "".join(STREAM_PIECES)
    assert fakes["b"].received[0]["body"]["stream"] is True


def test_after_the_first_byte_a_dying_deployment_ends_the_stream_with_an_error_event(
    server: LiveServer, admin: str, fakes: dict[str, FakeUpstream]
) -> None:
    response = _chat(server, admin, "stream-cut", stream=True)
    assert response.status_code == 200, response.text
    assert response.headers["x-winnow-deployment"] == "cuts"
    first, error, done = _events(response)
    assert first["choices"][0]["delta"]["content"] == FIRST_PIECE and first["model"] == "stream-cut"
    assert set(error["error"]) >= {"message", "type", "code"} and "stream-cut" in error["error"]["message"]
    assert done == "[DONE]"
    assert not fakes["b"].received  # no second answer spliced into the first
    model, deployment, attempts, _, _ = _usage_rows(server, admin, 1)[0]
    assert (model, deployment, attempts) == ("stream-cut", "cuts", 1)
    assert _deployments(server, admin, "stream-cut")["cuts"]["failures"] == 1  # towards its cooldown


def test_models_list_shows_deployments_only_for_routed_models(server: LiveServer, admin: str) -> None:
    listed = httpx.get(f"{server.url}/api/v1/models", headers=bearer(admin)).json()["models"]
    by_id = {m["id"]: m for m in listed}
    assert [d["id"] for d in by_id["duo"]["deployments"]] == ["a", "b"]
    # latency_ms is left out until a call succeeded (run alone, no test has called "duo" yet)
    assert set(by_id["duo"]["deployments"][0]) | {"latency_ms"} == {
        "id",
        "state",
        "cooldown_remaining_s",
        "in_flight",
        "latency_ms",
        "requests",
        "failures",
        "cooldowns",
        "waiting",
    }
    assert re.fullmatch(r"(healthy|cooldown|probing)", by_id["duo"]["deployments"][0]["state"])
    assert [d["id"] for d in by_id["solo"]["deployments"]] == ["c"]  # a model's one deployment shows too


def test_generate_routes_through_the_sdk_the_same_way(
    server: LiveServer, admin: str, fakes: dict[str, FakeUpstream]
) -> None:
    """/api/v1/generate (and jobs) call upstreams through the openai SDK: the same router."""

    def generate(model: str) -> dict[str, Any]:
        response = httpx.post(
            f"{server.url}/api/v1/generate",
            json={"model_id": model, "prompt": "What is 2+2?", "max_tokens": 3},
            headers=bearer(admin),
            timeout=60,
        )
        assert response.status_code == 200, response.text
        metadata: dict[str, Any] = response.json()["metadata"]
        return metadata

    fakes["a"].answers.append(Answer(503, {"error": {"message": "overloaded"}}))
    failed_over = generate("sdk-duo")
    assert (failed_over["model"], failed_over["deployment"], failed_over["attempts"]) == ("sdk-duo", "b", 2)
    assert len(fakes["a"].received) == len(fakes["b"].received) == 1
    answered = generate("down")
    assert (answered["model"], answered["deployment"]) == ("solo", "c")
    assert fakes["c"].received[-1]["body"]["model"] == "up-model-1"
    assert _usage_rows(server, admin, 1)[0][:3] == ("solo", "c", answered["attempts"])

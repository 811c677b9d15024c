"""The SDK's transport, against servers that misbehave on purpose: what is retried (429 after its
Retry-After, 502/503/504, connection failures; a POST is never sent twice after it may have
arrived), what each failure raises, and where the client's defaults come from."""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import pytest
from rich.console import Console

from tests.cli.test_remote import http_server
from tests.conftest import free_port
from winnow.client import (
    APIConnectionError,
    APITimeoutError,
    AsyncWinnow,
    MissingAPIKey,
    RateLimited,
    ServerError,
    UnexpectedResponse,
    Winnow,
    WinnowAPIError,
)
from winnow.client.errors import retry_after
from winnow.client.params import (
    BudgetParams,
    EvaluationParams,
    FeedbackParams,
    KeyOptions,
    SamplingParams,
    SubmitJobParams,
)
from winnow.client.sdg import WaitProgress
from winnow.schemas.evals import EvaluationRequest
from winnow.schemas.feedback import GenerationFeedback, RowFeedback
from winnow.schemas.keys import KeyBudget, KeyCreateRequest
from winnow.schemas.platform import GenerateRequest
from winnow.schemas.sdg import JobCounts, JobDetails, SubmitJobRequest

MODELS = {"models": [], "count": 0, "timestamp": "2026-12-01T00:00:00.000Z"}
UNAVAILABLE = {"error": "service_unavailable", "message": "The database is unavailable", "details": "retry shortly"}


@pytest.fixture(autouse=True)
def _short_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("winnow.client._http.INITIAL_DELAY_S", 0.01)


Answer = tuple[int, dict[str, str], bytes]


@contextmanager
def scripted(*answers: Answer) -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server on loopback that gives ``answers`` in turn (the last one from then on);
    its URL and the request lines it received."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append(f"{self.command} {self.path}")
            status, headers, body = answers[min(len(seen), len(answers)) - 1]
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    with http_server(Handler) as url:
        yield url, seen


def ok(body: dict[str, Any] = MODELS) -> Answer:
    return 200, {"X-Request-ID": "req-ok"}, json.dumps(body).encode()


def error(status: int, body: dict[str, Any] = UNAVAILABLE, retry_after: str | None = None) -> Answer:
    headers = {"X-Request-ID": f"req-{status}"} | ({"Retry-After": retry_after} if retry_after else {})
    return status, headers, json.dumps(body).encode()


@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_errors_are_retried(status: int) -> None:
    with scripted(error(status), error(status), ok()) as (url, seen), Winnow(url, "k") as client:
        assert client.models.list().count == 0
    assert seen == ["GET /api/v1/models"] * 3


def test_a_server_error_past_the_retries_carries_the_error_response() -> None:
    answer = error(503, retry_after="0")
    with (
        scripted(answer) as (url, seen),
        Winnow(url, "k", max_retries=1) as client,
        pytest.raises(ServerError) as failed,
    ):
        client.sdg.status("job-1")
    assert len(seen) == 2
    assert failed.value.status == 503 and failed.value.code == "service_unavailable"
    assert failed.value.details == "retry shortly" and failed.value.request_id == "req-503"


def test_a_429_waits_its_retry_after_and_a_long_one_is_not_waited() -> None:
    limited = error(429, {"error": "rate_limit_exceeded", "message": "Rate limit exceeded"}, retry_after="0")
    with scripted(limited, ok()) as (url, seen), Winnow(url, "k") as client:
        assert client.models.list().count == 0
    assert len(seen) == 2
    hour = error(429, {"error": "rate_limit_exceeded", "message": "Rate limit exceeded"}, retry_after="3600")
    with scripted(hour) as (url, seen), Winnow(url, "k") as client, pytest.raises(RateLimited) as refused:
        client.models.list()
    assert len(seen) == 1 and refused.value.retry_after == 3600


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after("2") == 2.0
    assert retry_after(None) is None and retry_after("soon") is None
    later = retry_after(format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True))
    assert later is not None and 0 < later <= 30
    assert retry_after(format_datetime(datetime.now(UTC) - timedelta(seconds=30), usegmt=True)) == 0


def test_answers_that_are_not_winnows_json() -> None:
    page = (502, {"Content-Type": "text/html"}, b"<h1>502 Bad Gateway</h1>")
    with scripted(page) as (url, _), Winnow(url, "k", max_retries=0) as client, pytest.raises(ServerError) as bad:
        client.models.list()
    assert bad.value.status == 502 and bad.value.error is None
    html = (200, {"Content-Type": "text/html"}, b"<html></html>")
    with scripted(html) as (url, _), Winnow(url, "k") as client, pytest.raises(UnexpectedResponse) as other:
        client.models.list()
    assert other.value.status == 200 and "ModelsListResponse" in str(other.value)


def _flaky(failure: type[httpx.TransportError], calls: list[str]) -> Callable[[httpx.Request], httpx.Response]:
    """A transport whose first two requests fail with ``failure``."""

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        if len(calls) <= 2:
            raise failure("flaky", request=request)
        return httpx.Response(200, json=MODELS)

    return handle


def test_connection_failures_are_retried() -> None:
    calls: list[str] = []
    http = httpx.Client(transport=httpx.MockTransport(_flaky(httpx.ConnectError, calls)))
    with Winnow("http://winnow.test", "k", http_client=http) as client:
        assert client.models.list().count == 0
    assert calls == ["GET"] * 3


def test_a_post_is_not_sent_again_once_it_may_have_arrived() -> None:
    calls: list[str] = []
    http = httpx.Client(transport=httpx.MockTransport(_flaky(httpx.ReadTimeout, calls)))
    with Winnow("http://winnow.test", "k", http_client=http) as client, pytest.raises(APITimeoutError):
        client.sdg.submit(model="demo-lm", reward_model="demo-rm", prompts_path="p.jsonl")
    assert calls == ["POST"]
    calls.clear()
    with Winnow("http://winnow.test", "k", http_client=http) as client:
        assert client.models.list().count == 0  # a GET is
    assert calls == ["GET"] * 3


def test_a_refused_connection_names_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with Winnow(url, "k", max_retries=1) as client, pytest.raises(APIConnectionError) as refused:
        client.models.list()
    assert str(refused.value) == f"Cannot reach the Winnow server at {url} (connection refused)"
    assert not isinstance(refused.value, APITimeoutError) and refused.value.status is None


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A port that accepts connections (the kernel's backlog) but never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_a_timeout_names_the_url_and_the_limit(silent_url: str) -> None:
    with Winnow(silent_url, "k", timeout=0.2, max_retries=0) as client, pytest.raises(APITimeoutError) as late:
        client.sdg.list()
    assert str(late.value) == f"The Winnow server at {silent_url} did not answer within 0.2 s (read timeout)"


@pytest.mark.anyio
async def test_async_client_retries_and_raises_the_same(silent_url: str) -> None:
    with scripted(error(503), ok()) as (url, seen):
        async with AsyncWinnow(url, "k") as client:
            assert (await client.models.list()).count == 0
    assert len(seen) == 2
    async with AsyncWinnow(silent_url, "k", timeout=0.2, max_retries=0) as client:
        with pytest.raises(APITimeoutError):
            await client.models.list()
    closed = f"http://127.0.0.1:{free_port()}"
    async with AsyncWinnow(closed, "k", max_retries=0) as client:
        with pytest.raises(APIConnectionError, match="connection refused"):
            await client.models.list()


def test_defaults_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(MissingAPIKey) as missing:
        Winnow()
    assert isinstance(missing.value, WinnowAPIError) and "WINNOW_API_KEY" in str(missing.value)
    monkeypatch.setenv("WINNOW_URL", "http://winnow.test:9000/api/v1/")
    monkeypatch.setenv("WINNOW_API_KEY", "wn-env")
    with Winnow() as client:
        assert client.base_url == "http://winnow.test:9000" and client.api_key == "wn-env"
    with Winnow("http://elsewhere:1", "wn-arg") as client:
        assert client.base_url == "http://elsewhere:1" and client.api_key == "wn-arg"


def test_keyword_arguments_mirror_the_request_models() -> None:
    assert set(SubmitJobParams.__annotations__) == set(SubmitJobRequest.model_fields)
    assert set(EvaluationParams.__annotations__) == set(EvaluationRequest.model_fields)
    assert set(SamplingParams.__annotations__) | {"prompt"} == set(GenerateRequest.model_fields)
    assert set(FeedbackParams.__annotations__) == set(GenerationFeedback.model_fields) | set(RowFeedback.model_fields)
    assert set(KeyOptions.__annotations__) | {"name"} == set(KeyCreateRequest.model_fields)
    assert set(BudgetParams.__annotations__) == set(KeyBudget.model_fields)


def _job(status: str, read: int) -> JobDetails:
    return JobDetails(
        job_id="job-1",
        created=datetime.now(UTC),
        status=status,
        stage="generate",
        counts=JobCounts(prompts_total=4, prompts_read=read),
    )


def test_wait_draws_a_progress_bar_on_a_terminal_only() -> None:
    screen = io.StringIO()
    with WaitProgress("job-1", True, 0.5, Console(file=screen, force_terminal=True, width=80)) as shown:
        assert shown.update(_job("running", 1)) == 0.5
        assert shown.update(_job("running", 1)) == 0.75  # nothing changed: ask less often
        assert shown.update(_job("running", 2)) == 0.5
        assert shown.update(_job("completed", 4)) is None
    assert "job-1" in screen.getvalue() and "4/4" in screen.getvalue()
    piped = io.StringIO()
    with WaitProgress("job-1", True, 0.5, Console(file=piped)) as quiet:
        assert quiet.bar is None and quiet.update(_job("completed", 4)) is None
    assert piped.getvalue() == ""

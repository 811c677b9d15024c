"""The /v1 pass-through to an OpenAI-compatible upstream, against a fake upstream that echoes what
it received and answers with whatever status it is told: fields Winnow does not know reach the
upstream unchanged (only the model name swapped), upstream errors map to the README's statuses, a
stream passes through and is billed from the upstream's usage chunk."""

from __future__ import annotations

import base64
import json
import re
import struct
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import openai
import pytest

from tests.api.fake_responses import fake_response, fake_response_stream
from tests.conftest import LiveServer, bearer

pytestmark = pytest.mark.slow  # a real `winnow serve` in front of the fake upstream

UPSTREAM_KEY = "sk-fake-upstream-secret"
ECHO_USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
STREAM_USAGE = {"prompt_tokens": 21, "completion_tokens": 5, "total_tokens": 26}
STREAM_PIECES = ["Hel", "lo", " there"]


@dataclass
class Answer:
    """What the fake answers the next POST with, instead of an echo."""

    status: int = 200
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False
    gate: threading.Event | None = None  # answered (as told) only once it is set


class FakeUpstream:
    """An OpenAI-compatible server on loopback (a real HTTP server on a thread)."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []  # {path, headers, body} of every POST
        self.answers: deque[Answer] = deque()
        self.release = threading.Event()  # lets hanging requests go
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                pass

            def do_GET(self) -> None:  # the provider's availability probe
                self._json(200, {"object": "list", "data": [{"id": "up-model-1", "object": "model"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                headers = {name.lower(): value for name, value in self.headers.items()}
                fake.received.append({"path": self.path, "headers": headers, "body": body})
                answer = fake.answers.popleft() if fake.answers else Answer()
                if answer.hang:
                    fake.release.wait(60)
                    return
                if answer.gate is not None:
                    answer.gate.wait(60)
                if answer.status != 200:
                    self._json(answer.status, answer.body or {}, answer.headers)
                elif body.get("stream"):
                    self._stream(body)
                else:
                    self._json(200, _echo(self.path, body))

            def _json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, body: dict[str, Any]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                if self.path.endswith("/responses"):
                    self.wfile.write(fake_response_stream(body, ECHO_USAGE, STREAM_PIECES))
                    return
                head = {
                    "id": "chatcmpl-fake-stream",
                    "object": "chat.completion.chunk",
                    "created": 1,
                    "model": body["model"],
                }
                deltas = [{"role": "assistant", "content": ""}, *({"content": p} for p in STREAM_PIECES)]
                chunks = [{**head, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
                chunks.append({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                if (body.get("stream_options") or {}).get("include_usage"):
                    chunks.append({**head, "choices": [], "usage": STREAM_USAGE})
                for chunk in chunks:
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def model_fields(self) -> dict[str, Any]:
        """A model config's fields for this upstream (key in FAKE_UPSTREAM_KEY, no retries)."""
        return {
            "type": "commercial",
            "provider": "openai",
            "base_url": f"{self.url}/v1",
            "upstream_model": "up-model-1",
            "api_key_env": "FAKE_UPSTREAM_KEY",
            "max_retries": 0,
        }

    def __enter__(self) -> FakeUpstream:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


EMBED_TOKENS = 3  # per input of an embeddings request


def _embeddings(body: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's answer to /embeddings: input i gets the unit vector [0.6, 0.8] turned by i quarter turns
    (floats or base64 float32, as asked), and the request as received beside it."""
    raw = body.get("input")
    count = 1 if isinstance(raw, str) or (raw and isinstance(raw[0], int)) else len(raw or [])
    turns = [[0.6, 0.8], [-0.8, 0.6], [-0.6, -0.8], [0.8, -0.6]]
    data = []
    for i in range(count):
        vector: Any = turns[i % 4]
        if body.get("encoding_format") == "base64":
            vector = base64.b64encode(struct.pack("<2f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": vector})
    usage = {"prompt_tokens": EMBED_TOKENS * count, "total_tokens": EMBED_TOKENS * count}
    return {"object": "list", "data": data, "model": body.get("model"), "usage": usage, "echo": body}


def _echo(path: str, body: dict[str, Any]) -> dict[str, Any]:
    """A valid completion whose content (and a field of its own) is the request body as received."""
    if path.endswith("/embeddings"):
        return _embeddings(body)
    if path.endswith("/responses"):
        return fake_response(body, ECHO_USAGE)
    text = json.dumps(body, sort_keys=True)
    if path.endswith("/chat/completions"):
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": None},
            "logprobs": {
                "content": [{"token": "x", "logprob": -0.5, "bytes": [120], "top_logprobs": []}],
                "refusal": None,
            },
            "finish_reason": "stop",
        }
        kind = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}
        kind = "text_completion"
    return {
        "id": "cmpl-fake-1",
        "object": kind,
        "created": 1,
        "model": body.get("model"),
        "system_fingerprint": "fp_fake",
        "choices": [choice],
        "usage": ECHO_USAGE,
        "echo": body,
    }


def _error(status: int, message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def gateway(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    """A real `winnow serve` whose models are the fake upstream: (server, admin key)."""
    data = tmp_path_factory.mktemp("gateway") / "data"
    upstream = {**fake.model_fields(), "input_price_per_mtok": 1.0, "output_price_per_mtok": 2.0}
    models = [
        {"id": "fake", **upstream},
        {"id": "fake-slow", **upstream, "timeout_s": 0.5},
        {"id": "fake-retry", **upstream, "max_retries": 1},
    ]
    config = data.parent / "gateway.yaml"
    config.write_text(json.dumps({"models": models}))
    server = LiveServer(data, env={"WINNOW_CONFIG": str(config), "FAKE_UPSTREAM_KEY": UPSTREAM_KEY}).start()
    admin = server.cli("keys", "create", "admin", "--admin").stdout.split()[-1]
    yield server, admin
    server.stop()


@pytest.fixture
def key(gateway: tuple[LiveServer, str], fake: FakeUpstream, request: pytest.FixtureRequest) -> str:
    """A fresh key per test (its usage is the test's own), and a fake with no requests or answers queued."""
    server, admin = gateway
    fake.received.clear()
    fake.answers.clear()
    created = httpx.post(
        f"{server.url}/api/v1/keys",
        json={"name": re.sub(r"[^A-Za-z0-9_.@-]", "-", request.node.name)[:60]},
        headers=bearer(admin),
    )
    assert created.status_code == 201, created.text
    secret: str = created.json()["key"]
    return secret


def _post(server: LiveServer, key: str, body: dict[str, Any], path: str = "/v1/chat/completions") -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, headers=bearer(key), timeout=30)


def _usage(server: LiveServer, key: str) -> dict[str, Any]:
    usage = httpx.get(f"{server.url}/api/v1/usage", params={"group_by": "model"}, headers=bearer(key))
    assert usage.status_code == 200, usage.text
    total: dict[str, Any] = usage.json()["total"]
    return total


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Adds two numbers",
            "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}},
            "strict": True,
        },
    }
]
# What Winnow does not interpret: tools and a tool-call conversation, logprobs, a JSON schema
# response format, and fields no OpenAI version has.
RICH_BODY: dict[str, Any] = {
    "model": "fake",
    "messages": [
        {"role": "system", "content": "Use the tool."},
        {"role": "user", "content": [{"type": "text", "text": "What is 2+3?"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "5"},
    ],
    "tools": TOOLS,
    "tool_choice": {"type": "function", "function": {"name": "add"}},
    "parallel_tool_calls": False,
    "logprobs": True,
    "top_logprobs": 3,
    "response_format": {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": {"type": "object", "properties": {"n": {"type": "integer"}}}},
    },
    "temperature": 0.25,
    "max_completion_tokens": 9,
    "seed": 123,
    "logit_bias": {"50256": -100},
    "metadata": {"trace": "abc"},
    "x_vendor_option": {"nested": [1, 2.5, None, "s"], "flag": True},
}


def test_unknown_fields_reach_the_upstream_unchanged(
    gateway: tuple[LiveServer, str], fake: FakeUpstream, key: str
) -> None:
    server, _ = gateway
    response = _post(server, key, RICH_BODY)
    assert response.status_code == 200, response.text
    (received,) = fake.received
    assert received["path"] == "/v1/chat/completions"
    assert received["body"] == {**RICH_BODY, "model": "up-model-1"}  # only the model swapped
    # The upstream sees the configured upstream key, never the client's Winnow key.
    assert received["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert key not in json.dumps(received["headers"])
    # The upstream's answer comes back whole (its own fields too), under the model id the client asked for.
    answer = response.json()
    assert answer == {**_echo("/v1/chat/completions", received["body"]), "model": "fake"}
    # Billed from the upstream's usage block, at the model's prices.
    assert _usage(server, key) == {
        "requests": 1,
        "input_tokens": 11,
        "output_tokens": 7,
        "total_tokens": 18,
        "cost_usd": (11 * 1.0 + 7 * 2.0) / 1e6,
    }


def test_the_openai_client_passes_tools_logprobs_and_extra_body(
    gateway: tuple[LiveServer, str], fake: FakeUpstream, key: str
) -> None:
    server, _ = gateway
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)
    completion = client.chat.completions.create(
        model="fake",
        messages=[{"role": "user", "content": "What is 2+3?"}],
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice="required",
        logprobs=True,
        top_logprobs=2,
        response_format={"type": "json_object"},
        max_tokens=5,
        extra_body={"guided_choice": ["4", "5"], "repetition_penalty": 1.1},
    )
    sent = fake.received[0]["body"]
    assert sent == {
        "model": "up-model-1",
        "messages": [{"role": "user", "content": "What is 2+3?"}],
        "tools": TOOLS,
        "tool_choice": "required",
        "logprobs": True,
        "top_logprobs": 2,
        "response_format": {"type": "json_object"},
        "max_tokens": 5,
        "guided_choice": ["4", "5"],
        "repetition_penalty": 1.1,
    }
    assert completion.model == "fake" and completion.system_fingerprint == "fp_fake"
    assert json.loads(completion.choices[0].message.content or "") == sent
    assert completion.choices[0].logprobs is not None and completion.choices[0].logprobs.content[0].logprob == -0.5
    # /v1/completions is forwarded the same way.
    legacy = client.completions.create(model="fake", prompt="2+3=", max_tokens=3, logprobs=2, echo=True)
    assert fake.received[1]["path"] == "/v1/completions"
    assert fake.received[1]["body"] == {
        "model": "up-model-1",
        "prompt": "2+3=",
        "max_tokens": 3,
        "logprobs": 2,
        "echo": True,
    }
    assert json.loads(legacy.choices[0].text) == fake.received[1]["body"]


def test_upstream_400_is_a_400_with_the_upstream_message(
    gateway: tuple[LiveServer, str], fake: FakeUpstream, key: str
) -> None:
    server, _ = gateway
    message = "Invalid value for 'tool_choice': no function named 'nope' was specified in 'tools'."
    fake.answers.append(Answer(400, _error(400, message, "invalid_request_error", "invalid_value")))
    response = _post(server, key, {**RICH_BODY, "tool_choice": {"type": "function", "function": {"name": "nope"}}})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert message in error["message"]
    assert error["type"] == "invalid_request_error"
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)
    fake.answers.append(Answer(400, _error(400, message, "invalid_request_error", "invalid_value")))
    with pytest.raises(openai.BadRequestError, match="no function named 'nope'"):
        client.chat.completions.create(model="fake", messages=[{"role": "user", "content": "hi"}])
    assert _usage(server, key)["requests"] == 0  # a refused request costs nothing


def test_upstream_429_is_a_429_with_its_retry_after(
    gateway: tuple[LiveServer, str], fake: FakeUpstream, key: str
) -> None:
    server, _ = gateway
    busy = _error(
        429, "Rate limit reached for up-model-1 on tokens per min.", "rate_limit_error", "rate_limit_exceeded"
    )
    fake.answers.append(Answer(429, busy, {"Retry-After": "7"}))
    response = _post(server, key, {"model": "fake", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 429, response.text
    assert response.headers["Retry-After"] == "7"  # the upstream's own wait
    assert response.json()["error"]["type"] == "rate_limit_error"  # the upstream's own type, passed on
    assert "Rate limit reached for up-model-1" in response.json()["error"]["message"]
    # Without a Retry-After from the upstream, a sensible one.
    fake.answers.append(Answer(429, busy))
    response = _post(server, key, {"model": "fake", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 429 and int(response.headers["Retry-After"]) >= 1
    assert _usage(server, key)["requests"] == 0


@pytest.mark.parametrize("status", [500, 503])
def test_upstream_5xx_is_a_502_upstream_error(
    gateway: tuple[LiveServer, str], fake: FakeUpstream, key: str, status: int
) -> None:
    server, _ = gateway
    fake.answers.append(Answer(status, _error(status, "The server had an error while processing", "server_error")))
    response = _post(server, key, {"model": "fake", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 502, response.text
    assert response.json()["error"]["code"] == "upstream_error"
    assert len(fake.received) == 1  # max_retries: 0
    # The same on a stream: the failure is the HTTP status, not a 200 carrying an error event.
    fake.answers.append(Answer(status, _error(status, "The server had an error while processing", "server_error")))
    streamed = _post(server, key, {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "stream": True})
    assert streamed.status_code == 502, streamed.text
    assert streamed.json()["error"]["code"] == "upstream_error"
    assert _usage(server, key)["requests"] == 0


def test_max_retries_retries_a_5xx_upstream(gateway: tuple[LiveServer, str], fake: FakeUpstream, key: str) -> None:
    server, _ = gateway
    fake.answers.append(Answer(503, _error(503, "overloaded", "server_error"), {"retry-after-ms": "10"}))
    response = _post(server, key, {"model": "fake-retry", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 200, response.text
    assert len(fake.received) == 2 and fake.received[0]["body"] == fake.received[1]["body"]
    assert _usage(server, key)["requests"] == 1


def test_a_hanging_upstream_is_a_504_upstream_timeout(
    gateway: tuple[LiveServer, str], fake: FakeUpstream, key: str
) -> None:
    server, _ = gateway
    fake.answers.append(Answer(hang=True))
    response = _post(server, key, {"model": "fake-slow", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 504, response.text
    assert response.json()["error"]["code"] == "upstream_timeout"
    fake.answers.append(Answer(hang=True))
    streamed = _post(
        server, key, {"model": "fake-slow", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    )
    assert streamed.status_code == 504, streamed.text
    assert _usage(server, key)["requests"] == 0


def test_a_stream_passes_through_and_is_billed_from_the_usage_chunk(
    gateway: tuple[LiveServer, str], fake: FakeUpstream, key: str
) -> None:
    server, _ = gateway
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)
    messages = [{"role": "user", "content": "Say hello"}]
    chunks = list(
        client.chat.completions.create(
            model="fake",
            messages=messages,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
            logprobs=True,
        )
    )
    sent = fake.received[0]["body"]
    assert sent == {
        "model": "up-model-1",
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        "logprobs": True,
    }
    assert [c.id for c in chunks] == ["chatcmpl-fake-stream"] * 6 and all(c.model == "fake" for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(STREAM_PIECES)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.model_dump() | STREAM_USAGE == chunks[-1].usage.model_dump()
    # A stream whose client did not ask for usage: the upstream is asked (to bill it), the client gets none.
    quiet = list(client.chat.completions.create(model="fake", messages=messages, stream=True))  # type: ignore[arg-type]
    assert fake.received[1]["body"]["stream_options"] == {"include_usage": True}
    assert all(c.usage is None for c in quiet) and len(quiet) == 5
    assert "".join(c.choices[0].delta.content or "" for c in quiet) == "".join(STREAM_PIECES)
    # Billed before [DONE] is sent: from the upstream's usage chunk, not an estimate.
    assert _usage(server, key) == {
        "requests": 2,
        "input_tokens": 2 * 21,
        "output_tokens": 2 * 5,
        "total_tokens": 2 * 26,
        "cost_usd": 2 * (21 * 1.0 + 5 * 2.0) / 1e6,
    }

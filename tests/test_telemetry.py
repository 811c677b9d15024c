"""OpenTelemetry traces against a real OTLP/HTTP receiver on loopback (decoded with
opentelemetry-proto): a routed call with one failed attempt is a server span continuing the
client's traceparent, with both attempts as children (the failed one an error) and the upstream
request under the one that answered, which carries traceparent on; GenAI attributes; a local
model's queue wait, batch and generate; and nothing at all without an endpoint."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.api.test_passthrough import FakeUpstream
from tests.conftest import bearer
from tests.requests.test_request_log import CHAT, _settings
from winnow import telemetry
from winnow.api.app import create_app

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


class Receiver:
    """An OTLP/HTTP trace receiver: every exported span, decoded, as a dict."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                pass

            def do_POST(self) -> None:
                request = ExportTraceServiceRequest.FromString(self.rfile.read(int(self.headers["Content-Length"])))
                for resource in request.resource_spans:
                    service = {a.key: a.value.string_value for a in resource.resource.attributes}["service.name"]
                    for scoped in resource.scope_spans:
                        receiver.spans += [_span(s, service) for s in scoped.spans]
                body = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def named(self, name: str) -> list[dict[str, Any]]:
        return [s for s in self.spans if s["name"] == name]


def _span(span: Any, service: str) -> dict[str, Any]:
    def value(v: Any) -> Any:
        return getattr(v, v.WhichOneof("value"))

    return {
        "name": span.name,
        "service": service,
        "trace_id": span.trace_id.hex(),
        "span_id": span.span_id.hex(),
        "parent_id": span.parent_span_id.hex(),
        "error": span.status.code == 2,
        "start": span.start_time_unix_nano,
        "end": span.end_time_unix_nano,
        "attributes": {a.key: value(a.value) for a in span.attributes},
    }


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    found = Receiver()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", found.url)
    yield found
    telemetry.shutdown()
    found.server.shutdown()


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


def test_a_routed_call_is_a_trace_with_both_attempts(
    tmp_path: Path, upstream: FakeUpstream, receiver: Receiver
) -> None:
    traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01"
    with TestClient(create_app(_settings(tmp_path, upstream.url)), raise_server_exceptions=False) as client:
        key = client.app.state.runtime.keys.create("alice").key  # type: ignore[attr-defined]
        headers = {**bearer(key), "traceparent": traceparent}
        answer = client.post("/v1/chat/completions", json={**CHAT, "model": "routed"}, headers=headers)
        assert answer.status_code == 200 and answer.headers["x-winnow-attempts"] == "2"
        local = client.post("/v1/chat/completions", json=CHAT, headers=bearer(key))
        assert local.status_code == 200
    # The app's shutdown sent what the batch processor held.
    (server, local_server) = receiver.named("POST /v1/chat/completions")
    assert server["service"] == "winnow" and (server["trace_id"], server["parent_id"]) == (TRACE_ID, PARENT_ID)
    attributes = server["attributes"]
    assert attributes["gen_ai.request.model"] == "routed" and attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.usage.input_tokens"] == answer.json()["usage"]["prompt_tokens"]
    assert attributes["http.response.status_code"] == 200 and attributes["winnow.attempts"] == 2

    dead, live = sorted(receiver.named("router.attempt"), key=lambda s: s["start"])
    assert {dead["parent_id"], live["parent_id"]} == {server["span_id"]}
    assert (dead["attributes"]["winnow.deployment"], dead["error"]) == ("dead", True)
    assert (live["attributes"]["winnow.deployment"], live["error"]) == ("live", False)
    calls = receiver.named("upstream.request")
    sent = next(c for c in calls if c["parent_id"] == live["span_id"])
    assert any(c["parent_id"] == dead["span_id"] and c["error"] for c in calls)
    forwarded = upstream.received[-1]["headers"]["traceparent"]
    assert forwarded == f"00-{TRACE_ID}-{sent['span_id']}-01"  # the upstream continues the trace

    assert local_server["trace_id"] != TRACE_ID and local_server["parent_id"] == ""
    engine = {s["name"]: s for s in receiver.spans if s["trace_id"] == local_server["trace_id"]}
    assert {"engine.queue_wait", "engine.batch", "engine.generate"} <= set(engine)
    assert engine["engine.queue_wait"]["parent_id"] == local_server["span_id"]
    assert engine["engine.generate"]["parent_id"] == engine["engine.batch"]["span_id"]
    assert engine["engine.batch"]["attributes"]["winnow.batch.rows"] >= 1
    assert local_server["start"] <= engine["engine.queue_wait"]["start"] <= engine["engine.generate"]["end"]


def test_no_endpoint_no_tracing(tmp_path: Path, upstream: FakeUpstream) -> None:
    with TestClient(create_app(_settings(tmp_path, upstream.url)), raise_server_exceptions=False) as client:
        key = client.app.state.runtime.keys.create("alice").key  # type: ignore[attr-defined]
        assert not telemetry.enabled()
        assert client.post("/v1/chat/completions", json={**CHAT, "model": "routed"}, headers=bearer(key)).is_success
    assert "traceparent" not in upstream.received[-1]["headers"]

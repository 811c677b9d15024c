"""OpenTelemetry traces, off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set (the SDK's other ``OTEL_*`` variables apply too).

A logged API call is a server span (its parent the client's W3C ``traceparent``, when sent) with
children for the cache lookup, each router attempt and, inside it, the upstream HTTP request (which
carries ``traceparent`` on), or, for a local model, the engine's queue wait and the batch with its
generate call. A job a worker runs (``winnow worker``, a process of its own that configures tracing
too) is a ``job.run`` span with a span per chunk and, for SDG, its generate / score / write stages.
Attributes follow OpenTelemetry's GenAI semantic conventions (``gen_ai.*``). Spans go out in batches
over OTLP/HTTP from the SDK's own thread.

Off, every hook is one test of a module global: ``span`` yields None, ``inject`` returns None.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

    from winnow.requests.context import Entry

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_tracer: Tracer | None = None
_provider: TracerProvider | None = None


def enabled() -> bool:
    return _tracer is not None


def configure(service_name: str = "winnow") -> bool:
    """Start exporting spans if an OTLP endpoint is configured; whether tracing is on."""
    global _tracer, _provider
    if _tracer is not None or not any(os.environ.get(name) for name in ENDPOINT_VARIABLES):
        return _tracer is not None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from winnow import __version__

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or service_name})
    _provider = TracerProvider(resource=resource)
    _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _tracer = _provider.get_tracer("winnow", __version__)
    return True


def shutdown() -> None:
    """Send what is buffered and stop (the app's shutdown)."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    _tracer, _provider = None, None


_OFF = nullcontext()  # what ``span`` gives while tracing is off: no generator, nothing allocated


def span(
    name: str, attributes: Mapping[str, Any] | None = None, client: bool = False
) -> AbstractContextManager[Span | None]:
    """A child span of the current one for the block (None when tracing is off)."""
    if _tracer is None:
        return _OFF
    return _span(_tracer, name, attributes, client)


@contextmanager
def _span(tracer: Tracer, name: str, attributes: Mapping[str, Any] | None, client: bool) -> Iterator[Span]:
    from opentelemetry.trace import SpanKind

    kind = SpanKind.CLIENT if client else SpanKind.INTERNAL
    with tracer.start_as_current_span(name, kind=kind, attributes=attributes) as current:
        yield current


def start(name: str, attributes: Mapping[str, Any] | None = None) -> Span | None:
    """A child span of the current one, not made current, for work that outlives a block (made
    current with ``within``, ended by the caller); None when off."""
    if _tracer is None:
        return None
    return _tracer.start_span(name, attributes=attributes)


def within(handle: Span | None, end: bool = False) -> AbstractContextManager[Any]:
    """``handle`` as the current span for the block (ended after it if ``end``); nothing when None."""
    if handle is None:
        return _OFF
    from opentelemetry.trace import use_span

    return use_span(handle, end_on_exit=end)


def chunk_usage(handle: Span, input_tokens: int, output_tokens: int, errors: int) -> None:
    """A job chunk's tokens (GenAI's usage attributes) and failed rows on its span."""
    handle.set_attributes(
        {
            "gen_ai.usage.input_tokens": input_tokens,
            "gen_ai.usage.output_tokens": output_tokens,
            "winnow.chunk.errors": errors,
        }
    )


def inject() -> dict[str, str] | None:
    """The headers that carry the current span to an upstream (``traceparent``), or None when off."""
    if _tracer is None:
        return None
    from opentelemetry.propagate import inject as propagate

    headers: dict[str, str] = {}
    propagate(headers)
    return headers


def start_request(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> Any:
    """A logged API call's server span, made current, continuing the client's ``traceparent``; a
    handle for ``end_request`` (None when off)."""
    if _tracer is None:
        return None
    from opentelemetry import context, trace
    from opentelemetry.propagate import extract
    from opentelemetry.trace import SpanKind

    carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers if k in (b"traceparent", b"tracestate")}
    parent = extract(carrier)
    attributes = {"http.request.method": method, "url.path": path}
    server = _tracer.start_span(f"{method} {path}", context=parent, kind=SpanKind.SERVER, attributes=attributes)
    return server, context.attach(trace.set_span_in_context(server, parent))


def end_request(handle: Any, entry: Entry) -> None:
    """The call is answered: its status, model, tokens and cost on the span, which ends."""
    from opentelemetry import context
    from opentelemetry.trace import StatusCode

    server, token = handle
    operation = "chat" if entry.path.endswith("chat/completions") else "text_completion"
    attributes: dict[str, Any] = {
        "http.response.status_code": entry.status,
        "gen_ai.operation.name": operation,
        "gen_ai.usage.input_tokens": entry.input_tokens,
        "gen_ai.usage.output_tokens": entry.output_tokens,
        "winnow.cost_usd": entry.cost_usd,
        "winnow.cached": entry.cached,
        "winnow.request_id": entry.request_id,
    }
    optional = {
        "gen_ai.request.model": entry.requested_model or entry.model,
        "gen_ai.response.model": entry.model,
        "gen_ai.response.id": entry.generation_id,
        "winnow.deployment": entry.deployment,
        "winnow.attempts": entry.attempts,
    }
    attributes.update({k: v for k, v in optional.items() if v is not None})
    server.set_attributes(attributes)
    if entry.status >= 500:
        server.set_status(StatusCode.ERROR, str(entry.status))
    server.end()
    context.detach(token)


def engine_spans(enqueued: float, taken: float, started: float, ended: float, rows: int) -> None:
    """A local model's queue wait, batch and generate call for one request, after the fact (the
    batch ran in the batcher's task): children of the current span. Times are perf_counter's."""
    if _tracer is None:
        return
    from opentelemetry import trace

    offset = time.time_ns() - time.perf_counter_ns()

    def ns(t: float) -> int:
        return offset + int(t * 1e9)

    _tracer.start_span("engine.queue_wait", start_time=ns(enqueued)).end(ns(taken))
    batch = _tracer.start_span("engine.batch", attributes={"winnow.batch.rows": rows}, start_time=ns(taken))
    _tracer.start_span("engine.generate", context=trace.set_span_in_context(batch), start_time=ns(started)).end(
        ns(ended)
    )
    batch.end(ns(ended))

"""What one logged request gathers while it runs: the key, the model, the router's attempts, usage.

The request middleware opens an ``Entry`` for every call it logs (``/v1``, ``/api/v1/generate``
and ``/generate/batch``) and keeps it in a context variable; the code that learns something on the
way notes it here with one call (``key``, ``usage``, ``attempt``), a no-op outside a logged
request (jobs, the CLI). The entry is a plain mutable object, so tasks and threads started in the
request (a streamed body, the thread pool) see and add to the same one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from winnow import telemetry


@dataclass(slots=True)
class Entry:
    """One request's log row while it is being made (``RequestLog`` writes it)."""

    request_id: str
    method: str
    path: str
    started: float  # perf_counter at arrival
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    key_id: int | None = None
    model: str | None = None  # the one that answered (a fallback's), else the one asked for
    requested_model: str | None = None
    deployment: str | None = None
    attempts: int | None = None
    attempt_log: list[dict[str, Any]] = field(default_factory=list)
    cached: bool = False
    status: int = 0
    error_code: str | None = None
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    generations: int = 0  # usage rows (one per prompt of a batch)
    generation_id: str | None = None
    request_body: bytes | None = None  # raw, only while bodies are captured
    response_body: bytes | None = None
    closed: bool = False
    trace: Any = None  # the request's span while tracing is on (winnow.telemetry)


CURRENT: ContextVar[Entry | None] = ContextVar("winnow_request_entry", default=None)


def key(key_id: int) -> None:
    """The request's caller is known."""
    entry = CURRENT.get()
    if entry is not None:
        entry.key_id = key_id


def usage(
    model: str,
    input_tokens: int,
    output_tokens: int,
    cost_usd: float,
    generation_id: str | None,
    deployment: str | None,
    attempts: int | None,
    cached: bool,
) -> None:
    """A generation of this request was billed (a batch bills one per prompt: they add up)."""
    entry = CURRENT.get()
    if entry is None or entry.closed:
        return
    entry.model = model
    entry.input_tokens += input_tokens
    entry.output_tokens += output_tokens
    entry.cost_usd += cost_usd
    entry.generations += 1
    entry.generation_id = entry.generation_id or generation_id
    entry.deployment = deployment or entry.deployment
    if attempts is not None:
        entry.attempts = max(attempts, entry.attempts or 0)
    entry.cached = entry.cached or cached


def model(model_id: str) -> None:
    """The model asked for (set before anything is billed, so failed calls name it too)."""
    entry = CURRENT.get()
    if entry is not None and entry.requested_model is None:
        entry.requested_model = model_id
        entry.model = entry.model or model_id


@contextmanager
def attempt(model_id: str, deployment: str) -> Iterator[None]:
    """One call to an upstream deployment by the router: timed into the log, and a span."""
    entry = CURRENT.get()
    if entry is None and not telemetry.enabled():
        yield
        return
    started = time.perf_counter()
    error: str | None = None
    try:
        with telemetry.span("router.attempt", {"gen_ai.request.model": model_id, "winnow.deployment": deployment}):
            yield
    except BaseException as exc:
        error = _code(exc)
        raise
    finally:
        if entry is not None:
            entry.attempt_log.append(
                {
                    "model": model_id,
                    "deployment": deployment,
                    "start_ms": round((started - entry.started) * 1000, 3),
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                    "error": error,
                }
            )


def _code(exc: BaseException) -> str:
    """An attempt's failure as a short code: the upstream error's own, else the exception's class."""
    error = getattr(exc, "error", exc)  # an UpstreamFailure carries the client's WinnowError
    return str(getattr(error, "code", None) or type(exc).__name__)

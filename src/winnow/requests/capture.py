"""The request middleware's side of the log: open an entry, watch the messages, hand it over.

``begin`` decides whether a request is logged (``/v1/...``, ``/api/v1/generate``,
``/api/v1/generate/batch``) and makes its entry current; ``watch`` wraps receive and send to note
the time to the first byte of the body and, only when bodies may be kept (or for an error's
code), the bodies themselves; ``finish`` fills in status and latency and queues the row.
"""

from __future__ import annotations

import time
from contextvars import Token
from typing import TYPE_CHECKING, Any

from starlette.types import Message, Receive, Scope, Send

from winnow import telemetry
from winnow.requests.context import CURRENT, Entry
from winnow.requests.log import ERROR_BODY_BYTES

if TYPE_CHECKING:
    from winnow.requests.log import RequestLog

LOGGED_PATHS = frozenset({"/api/v1/generate", "/api/v1/generate/batch"})


def _log_of(scope: Scope) -> RequestLog | None:
    app = scope.get("app")
    runtime = getattr(getattr(app, "state", None), "runtime", None)
    requests: RequestLog | None = getattr(runtime, "requests", None)
    return requests if requests is not None and requests.enabled else None


def begin(scope: Scope, request_id: str, started: float) -> tuple[Entry, Token[Entry | None]] | None:
    """The entry of a request the log keeps, made current; None for any other request."""
    path: str = scope.get("path", "")
    if not (path.startswith("/v1/") or path in LOGGED_PATHS) or _log_of(scope) is None:
        return None
    entry = Entry(request_id, str(scope.get("method")), path, started)
    if telemetry.enabled():
        entry.trace = telemetry.start_request(entry.method, path, scope.get("headers", []))
    return entry, CURRENT.set(entry)


def watch(entry: Entry, scope: Scope, receive: Receive, send: Send) -> tuple[Receive, Send]:
    """``receive`` and ``send`` that note the first body byte's time and, where wanted, the bodies."""
    requests = _log_of(scope)
    cap = requests.config.body_max_bytes + 1 if requests is not None and requests.capture_bodies else 0
    status = 0

    async def sending(message: Message) -> None:
        nonlocal status
        kind = message["type"]
        if kind == "http.response.start":
            status = message["status"]
        elif kind == "http.response.body":
            if entry.ttft_ms is None and message.get("body"):
                entry.ttft_ms = (time.perf_counter() - entry.started) * 1000
            limit = max(cap, ERROR_BODY_BYTES if status >= 400 else 0)
            if limit:
                _append_response(entry, message.get("body", b""), limit)
        await send(message)

    if not cap:
        return receive, sending

    async def receiving() -> Message:
        message = await receive()
        if message["type"] == "http.request":
            kept = entry.request_body or b""
            if len(kept) < cap:
                entry.request_body = kept + message.get("body", b"")[: cap - len(kept)]
        return message

    return receiving, sending


def _append_response(entry: Entry, body: bytes, limit: int) -> None:
    kept = entry.response_body or b""
    if len(kept) < limit:
        entry.response_body = kept + body[: limit - len(kept)]


def finish(scope: Scope, opened: tuple[Entry, Token[Entry | None]], status: int, elapsed_s: float) -> None:
    """The request is answered: its row goes to the log's buffer."""
    entry, token = opened
    CURRENT.reset(token)
    entry.closed = True
    entry.status = status
    entry.latency_ms = elapsed_s * 1000
    if entry.trace is not None:
        telemetry.end_request(entry.trace, entry)
    requests = _log_of(scope)
    if requests is not None:
        state: dict[str, Any] = scope.get("state", {})
        requests.add(entry, state.get("key_name"))

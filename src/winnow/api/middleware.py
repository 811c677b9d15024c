"""One pure-ASGI middleware for every request: request id, body-size cap, access log, request log,
last-resort 500.

Pure ASGI (not BaseHTTPMiddleware) so that streaming responses pass through untouched and the
per-request cost stays in microseconds.
"""

from __future__ import annotations

import gc
import logging
import re
import time
from typing import Any

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from winnow.api.errors import error_body
from winnow.api.passthrough import LeanRoutes
from winnow.errors import PayloadTooLarge
from winnow.ids import hex_id
from winnow.metrics import Metrics
from winnow.requests import capture

log = logging.getLogger("winnow.access")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _route_template(scope: Scope) -> str:
    """The matched route as a template ('/api/v1/models/{model_id}'), so metric labels stay few;
    'unmatched' for paths no route serves."""
    template = getattr(scope.get("route"), "path", None)
    if not template:
        return "unmatched"
    path: str = scope.get("path", "")
    try:
        rendered = template.format(**scope.get("path_params", {}))
    except (KeyError, IndexError, ValueError):
        return str(template)
    # An included router's route knows only its own part of the path; put the prefix back.
    return path[: len(path) - len(rendered)] + template if path.endswith(rendered) else str(template)


def _freeze_after_startup(send: Send) -> Send:
    """Once the app has started, its objects (~200,000: modules, the runtime, pools) move to the
    collector's permanent generation, so a full collection walks only what requests made since;
    unfrozen, one took hundreds of milliseconds on a loaded 2-core box, a request's worth of p99."""

    async def send_frozen(message: Message) -> None:
        if message["type"] == "lifespan.startup.complete":
            gc.collect()
            gc.freeze()
        await send(message)

    return send_frozen


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        max_upload_bytes: int,
        upload_prefix: str | tuple[str, ...],
        metrics: Metrics,
    ) -> None:
        # The hot routes are answered before FastAPI's routing (api/passthrough.py).
        self.app = LeanRoutes(app)
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes
        self.upload_prefix = upload_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: C901 (one ASGI pass: access log, request log, metrics)
        if scope["type"] == "lifespan":
            await self.app(scope, receive, _freeze_after_startup(send))
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _SAFE_ID.match(incoming) else hex_id()
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        logged = capture.begin(scope, request_id, started)  # the request log's entry, if it keeps one
        if logged is not None:
            receive, send = capture.watch(logged[0], scope, receive, send)
        status = 500
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                extra = [(b"x-request-id", request_id.encode())]
                extra += [(k.lower().encode(), v.encode()) for k, v in state.get("rate_limit_headers", {}).items()]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        async def send_error(code: int, err: str, msg: str, details: str | None = None) -> None:
            body = error_body(err, msg, details, path=scope.get("path", ""), status=code)
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send_wrapper({"type": "http.response.start", "status": code, "headers": headers})
            await send_wrapper({"type": "http.response.body", "body": body})

        declared = _header(scope, b"content-length")
        path: str = scope.get("path", "")
        limit = self.max_upload_bytes if path.startswith(self.upload_prefix) else self.max_body_bytes
        try:
            if declared is not None and declared.isdigit() and int(declared) > limit:
                await send_error(413, PayloadTooLarge.code, "Request body too large", f"limit is {limit} bytes")
                return
            received = 0

            async def receive_capped() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        # FastAPI turns other exceptions raised while reading a body into a 400.
                        raise HTTPException(413, f"limit is {limit} bytes")
                return message

            await self.app(scope, receive_capped, send_wrapper)
        except Exception:
            log.exception("unhandled error", extra={"request_id": request_id})
            if not response_started:
                await send_error(500, "internal_error", "Internal server error", f"request id {request_id}")
            else:
                raise
        finally:
            elapsed = time.perf_counter() - started
            if logged is not None:
                capture.finish(scope, logged, status, elapsed)
            template = _route_template(scope)
            method = str(scope.get("method"))
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(elapsed)
            log.info(
                "%s %s",
                scope.get("method"),
                scope.get("path"),
                extra={
                    "status": status,
                    "latency_ms": round(elapsed * 1000, 2),
                    "key": state.get("key_name", "-"),
                    "request_id": request_id,
                },
            )

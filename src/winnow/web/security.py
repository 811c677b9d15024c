"""Security headers: no framing anywhere; a strict Content-Security-Policy on the console and docs.

Pure ASGI, like the request middleware, so streamed responses pass through untouched."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONSOLE_PREFIX = "/ui"

_BASE = "default-src 'self'; script-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'"
# The console sets styles only through stylesheets and the CSSOM (element.style), never inline.
CONSOLE_CSP = f"{_BASE}; style-src 'self'; img-src 'self' blob:; connect-src 'self'; form-action 'self'"
# Swagger UI styles through its stylesheet and the CSSOM too; its icons are data: URIs.
DOCS_CSP = f"{_BASE}; style-src 'self'; img-src 'self' data:; connect-src 'self'"

_EVERYWHERE = [(b"x-frame-options", b"DENY"), (b"x-content-type-options", b"nosniff")]


class SecurityHeaders:
    def __init__(self, app: ASGIApp, docs_path: str) -> None:
        self.app = app
        self.docs_path = docs_path

    def _policy(self, path: str) -> str | None:
        if path == "/" or path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/"):
            return CONSOLE_CSP
        if path == self.docs_path:
            return DOCS_CSP
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = self._policy(scope.get("path", ""))
        extra = list(_EVERYWHERE)
        if policy is not None:
            extra += [(b"content-security-policy", policy.encode()), (b"referrer-policy", b"no-referrer")]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)

"""A fake OpenAI-compatible upstream in a process of its own, which a router test can kill (SIGKILL)
whenever it likes: ``python -m tests.api.chaos_upstream MODE`` prints its base URL, then serves.

- ``echo``: ``FakeUpstream`` of tests/api/test_passthrough.py (an echo of each request).
- ``hang``: each POST is answered 200 with a stream's headers, prints ``got <path>`` and then waits
  for ever, before the stream's first byte (for the test to kill it).
- ``first-chunk``: a stream's headers and first chunk (chunked, HTTP/1.1), then the process exits.
- ``trickle``: a 200 and its headers, then one byte a second of an answer that never ends (a JSON
  body's leading spaces, or a stream's first event), until the client hangs up.
- ``trickle-after-first``: a stream's first chunk at once, then one byte a second.
- ``echo-auth``: every POST is a 500 whose error message quotes the Authorization header it got
  (a 400, with an OpenAI error object, when the body's ``user`` is ``"400"``).
- ``huge``: a 200 of ``HUGE_BYTES`` (a chat completion whose content is that long, chunked, no
  Content-Length; a stream: events of 64 KiB each), written in pieces until the client hangs up.
- ``basic-auth``: answers as ``echo`` does only with ``Authorization: Basic`` of ``BASIC_USER`` and
  ``BASIC_PASSWORD``; else a 401.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.api.test_passthrough import FakeUpstream, _echo

FIRST_PIECE = "Hel"
HUGE_BYTES = 50 * 1024 * 1024
BASIC_USER, BASIC_PASSWORD = "gw-user", "s3cret-pass-4711"
_GONE = (BrokenPipeError, ConnectionResetError)


class _Doomed(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    mode = "hang"

    def log_message(self, *_args: Any) -> None:
        pass

    def do_GET(self) -> None:
        data = json.dumps({"object": "list", "data": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _trickle(self, data: bytes, chunked: bool) -> None:
        """``data`` one byte a second, then spaces for ever; ends when the client hangs up."""
        try:
            for i in range(10**9):
                byte = data[i : i + 1] or b" "
                if chunked:
                    self._chunk(byte)
                else:
                    self.wfile.write(byte)
                    self.wfile.flush()
                time.sleep(1)
        except _GONE:
            return

    def _other(self, body: dict[str, Any]) -> None:
        auth = self.headers.get("Authorization", "")
        if self.mode == "echo-auth":
            token = auth.partition(" ")[2]
            message = f"Incorrect API key provided. You sent 'Authorization: {auth}' (key {token})"
            status = 400 if body.get("user") == "400" else 500
            self._json(status, {"error": {"message": message, "type": "invalid_request_error", "code": None}})
        elif self.mode == "basic-auth":
            expected = base64.b64encode(f"{BASIC_USER}:{BASIC_PASSWORD}".encode()).decode()
            if auth != f"Basic {expected}":
                self._json(401, {"error": {"message": f"basic auth required, got {auth!r}"}})
            else:
                self._json(200, _echo(self.path, body))
        elif self.mode == "trickle" and not body.get("stream"):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(1_000_000))  # under any cap: it is the time that fails
            self.end_headers()
            self._trickle(b"", chunked=False)
        elif self.mode == "huge":
            self._huge(body)

    def _huge(self, body: dict[str, Any]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream" if body.get("stream") else "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        piece = b"x" * (64 * 1024)
        try:
            if body.get("stream"):
                for _ in range(HUGE_BYTES // len(piece)):
                    delta = {"choices": [{"index": 0, "delta": {"content": piece.decode()}, "finish_reason": None}]}
                    self._chunk(b"data: " + json.dumps(delta).encode() + b"\n\n")
                return
            self._chunk(b'{"id": "huge", "object": "chat.completion", "choices": [{"index": 0, "message": ')
            self._chunk(b'{"role": "assistant", "content": "')
            for _ in range(HUGE_BYTES // len(piece)):
                self._chunk(piece)
            self._chunk(b'"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}')
            self.wfile.write(b"0\r\n\r\n")
        except _GONE:
            return

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.mode in ("echo-auth", "basic-auth", "huge") or (self.mode == "trickle" and not body.get("stream")):
            self._other(body)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        print(f"got {self.path}", flush=True)
        if self.mode == "hang":  # a 200 and its headers, but never a byte of the stream
            threading.Event().wait()
        if self.mode == "trickle":  # an event a byte at a time: no chunk ever whole
            self._trickle(b'data: {"id": "chatcmpl-trickle", "choices": [', chunked=True)
            return
        chunk = {
            "id": "chatcmpl-doomed",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": body["model"],
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": FIRST_PIECE}, "finish_reason": None}],
        }
        event = f"data: {json.dumps(chunk)}\n\n".encode()
        self._chunk(event)
        if self.mode == "trickle-after-first":
            self._trickle(b"data: {", chunked=True)
            return
        os._exit(0)  # mid-stream: no last chunk, no [DONE]


def main() -> None:
    mode = sys.argv[1]
    if mode == "echo":
        with FakeUpstream() as fake:
            print(fake.url, flush=True)
            threading.Event().wait()
    _Doomed.mode = mode
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Doomed)
    server.daemon_threads = True
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

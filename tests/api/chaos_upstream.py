"""A fake OpenAI-compatible upstream in a process of its own, which a router test can kill (SIGKILL)
whenever it likes: ``python -m tests.api.chaos_upstream MODE`` prints its base URL, then serves.

- ``echo``: ``FakeUpstream`` of tests/api/test_passthrough.py (an echo of each request).
- ``hang``: each POST is answered 200 with a stream's headers, prints ``got <path>`` and then waits
  for ever, before the stream's first byte (for the test to kill it).
- ``first-chunk``: a stream's headers and first chunk (chunked, HTTP/1.1), then the process exits.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.api.test_passthrough import FakeUpstream

FIRST_PIECE = "Hel"


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

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        print(f"got {self.path}", flush=True)
        if self.mode == "hang":  # a 200 and its headers, but never a byte of the stream
            threading.Event().wait()
        chunk = {
            "id": "chatcmpl-doomed",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": body["model"],
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": FIRST_PIECE}, "finish_reason": None}],
        }
        event = f"data: {json.dumps(chunk)}\n\n".encode()
        self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
        self.wfile.flush()
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

"""The remote commands (``winnow sdg submit/status/list/cancel/download``) fail in one line, naming
the URL and what to do, when the server is down, silent or not a Winnow server: no traceback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import free_port
from winnow.cli import app


def _python_path() -> dict[str, str]:
    """The interpreter's module path for a child process (only what is needed of this one's environment)."""
    return {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}


COMMANDS = {
    "submit": ["sdg", "submit", '{"model": "demo-lm"}'],
    "status": ["sdg", "status", "job-1"],
    "list": ["sdg", "list"],
    "cancel": ["sdg", "cancel", "job-1"],
    "download": ["sdg", "download", "job-1", "-o", "out.jsonl"],
}


def _run(args: list[str], url: str) -> tuple[int, list[str]]:
    result = CliRunner().invoke(app, [*args, "--url", url, "--key", "wn-test"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    return result.exit_code, lines


@pytest.fixture
def closed_url() -> str:
    """The URL of a loopback port nothing listens on (it was bound, then closed)."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.mark.parametrize("command", COMMANDS)
def test_a_refused_connection_is_one_line_naming_the_url(command: str, closed_url: str, tmp_path: Path) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        code, lines = _run(COMMANDS[command], closed_url)
    assert code == 1
    assert len(lines) == 1, lines
    assert f"Cannot reach the Winnow server at {closed_url} (connection refused)" in lines[0]
    assert "winnow serve" in lines[0] and "WINNOW_URL" in lines[0]
    assert not (tmp_path / "out.jsonl").exists()


def test_the_real_cli_prints_no_traceback(closed_url: str, tmp_path: Path) -> None:
    env = {
        **_python_path(),
        "PATH": "/usr/bin:/bin",
        "WINNOW_URL": closed_url,
        "WINNOW_API_KEY": "wn-test",
        "COLUMNS": "80",
    }
    done = subprocess.run(
        [sys.executable, "-m", "winnow", "sdg", "list"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"error: Cannot reach the Winnow server at {closed_url} (connection refused). "
        "Start it with `winnow serve` or set WINNOW_URL (or --url)."
    ]


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A port that accepts connections (the kernel's backlog) but never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize("command", ["status", "download"])
def test_a_timeout_is_one_line_naming_the_url(command: str, silent_url: str, tmp_path: Path) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        patch.setattr("winnow.cli.remote.TIMEOUT_S", 0.5)
        code, lines = _run(COMMANDS[command], silent_url)
    assert code == 1
    assert len(lines) == 1, lines
    assert f"The Winnow server at {silent_url} did not answer within 0.5 s" in lines[0]
    assert "winnow serve" in lines[0] or "WINNOW_URL" in lines[0]


class _Proxy(BaseHTTPRequestHandler):
    """What a broken proxy or some other server answers: HTML, with this status."""

    status = 502

    def _answer(self) -> None:
        body = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
        self.send_response(self.status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A real HTTP server on a free loopback port, on a thread; its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _proxy(status: int) -> type[BaseHTTPRequestHandler]:
    return type("Handler", (_Proxy,), {"status": status})


@pytest.fixture(params=[502, 200])
def html_url(request: pytest.FixtureRequest) -> Iterator[tuple[str, int]]:
    with http_server(_proxy(request.param)) as url:
        yield url, request.param


@pytest.mark.parametrize("command", ["submit", "status", "list", "cancel"])
def test_a_non_json_answer_is_one_line_naming_the_url(command: str, html_url: tuple[str, int]) -> None:
    url, status = html_url
    code, lines = _run(COMMANDS[command], url)
    assert code == 1
    assert len(lines) == 1, lines
    assert f"The server at {url} answered HTTP {status}" in lines[0]
    assert "not JSON" in lines[0] and "WINNOW_URL" in lines[0]


def test_a_download_error_page_is_one_line(tmp_path: Path) -> None:
    with http_server(_proxy(503)) as url, pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        code, lines = _run(COMMANDS["download"], url)
    assert code == 1
    assert len(lines) == 1 and f"The server at {url} answered HTTP 503" in lines[0], lines
    assert not (tmp_path / "out.jsonl").exists()


class _Winnow(BaseHTTPRequestHandler):
    """Enough of Winnow's API: a job list, a missing job's error, a download."""

    def do_GET(self) -> None:
        if self.path.endswith("/jobs"):
            self._send(200, json.dumps({"jobs": [], "count": 0}).encode(), "application/json")
        elif self.path.endswith("/output"):
            self._send(200, b'{"id": "a"}\n{"id": "b"}\n', "application/jsonl")
        else:
            error = {"error": "not_found", "message": "no job job-1", "details": None}
            self._send(404, json.dumps(error).encode(), "application/json")

    def _send(self, status: int, body: bytes, media_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", media_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_answers_of_a_winnow_server_are_printed(tmp_path: Path) -> None:
    with http_server(_Winnow) as url:
        listed = CliRunner().invoke(app, ["sdg", "list", "--url", url, "--key", "k"])
        missing = CliRunner().invoke(app, ["sdg", "status", "job-1", "--url", url, "--key", "k"])
        target = tmp_path / "out.jsonl"
        fetched = CliRunner().invoke(app, ["sdg", "download", "job-1", "-o", str(target), "--url", url, "--key", "k"])
    assert listed.exit_code == 0 and json.loads(listed.stdout) == {"jobs": [], "count": 0, "has_more": False}
    assert missing.exit_code == 1 and missing.output.strip() == "error: no job job-1"
    assert fetched.exit_code == 0 and target.read_text() == '{"id": "a"}\n{"id": "b"}\n'
    assert list(tmp_path.iterdir()) == [target]

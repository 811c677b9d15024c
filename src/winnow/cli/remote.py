"""The HTTP client of the commands that drive a server (``winnow sdg submit/status/list/...``).

Every way a request can fail before Winnow itself answers (nothing listening, no answer in time,
an answer that is not Winnow's JSON: a proxy's error page, another server) ends here, in one
line that names the URL and what to do, and exit status 1: never a traceback."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import httpx
import typer

from winnow.cli.common import fail

DEFAULT_URL = "http://127.0.0.1:8000"
TIMEOUT_S = 60.0

UrlOption = Annotated[
    str | None, typer.Option("--url", help=f"Server URL (also WINNOW_URL; default {DEFAULT_URL})", metavar="URL")
]
KeyOption = Annotated[str | None, typer.Option("--key", help="API key (also WINNOW_API_KEY)", metavar="KEY")]


class NotWinnowAnswer(Exception):
    """An answer whose body is not a JSON object: not from Winnow's API (or from a crashed one)."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def _reason(exc: httpx.TransportError) -> str:
    """Why a connection failed, in a few words: the OS error's text (``connection refused``)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno is not None:
            if cause.errno == errno.ECONNREFUSED:
                return "connection refused"
            return (cause.strerror or str(cause)).lower()
        cause = cause.__cause__ or cause.__context__
    text = str(exc).rstrip(".") or type(exc).__name__
    return text[0].lower() + text[1:]


@contextmanager
def server(url: str | None, key: str | None) -> Iterator[httpx.Client]:
    """A client of the server's ``/api/v1`` (``url``, else WINNOW_URL, else the default) with the
    API key (``key``, else WINNOW_API_KEY). Failures inside the block become one-line errors."""
    base = (url or os.environ.get("WINNOW_URL") or DEFAULT_URL).rstrip("/")
    secret = key or os.environ.get("WINNOW_API_KEY")
    if not secret:
        raise fail("no API key", "pass --key or set WINNOW_API_KEY")
    where = "set WINNOW_URL (or --url)"
    try:
        with httpx.Client(
            base_url=base + "/api/v1", headers={"Authorization": f"Bearer {secret}"}, timeout=TIMEOUT_S
        ) as client:
            yield client
    except httpx.TimeoutException as exc:
        kind = "connect" if isinstance(exc, httpx.ConnectTimeout) else "read"
        raise fail(
            f"The Winnow server at {base} did not answer within {TIMEOUT_S:g} s ({kind} timeout). "
            f"Check that `winnow serve` is running there and healthy, or {where}."
        ) from exc
    except httpx.TransportError as exc:  # refused, unknown host, dropped connection, bad URL
        raise fail(
            f"Cannot reach the Winnow server at {base} ({_reason(exc)}). Start it with `winnow serve` or {where}."
        ) from exc
    except NotWinnowAnswer as exc:
        response = exc.response
        raise fail(
            f"The server at {base} answered HTTP {response.status_code} {response.reason_phrase}, not JSON: "
            f"check the server's log, or {where} to a Winnow server."
        ) from exc


def answer(response: httpx.Response) -> dict[str, Any]:
    """The JSON object Winnow answered; its error answers (4xx/5xx) fail with their message."""
    try:
        data = response.json()
    except ValueError as exc:  # not JSON, or not text at all
        raise NotWinnowAnswer(response) from exc
    if not isinstance(data, dict):
        raise NotWinnowAnswer(response)
    if response.status_code >= 400:
        raise fail(data.get("message") or f"HTTP {response.status_code}", data.get("details"))
    return data


def show(response: httpx.Response) -> dict[str, Any]:
    """Print the answer's JSON body (see ``answer``)."""
    data = answer(response)
    typer.echo(json.dumps(data, indent=2))
    return data

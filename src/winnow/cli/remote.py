"""What the commands that drive a server (``winnow sdg submit/status/list/cancel/download/wait``,
``winnow files upload``) share: the SDK client (``winnow.client``) they all go through, and one
line for each way a request can fail.

A refused connection, no answer in time, or an answer that is not Winnow's JSON (a proxy's error
page, another server) is one line naming the URL and what to do, with exit status 1: never a
traceback. Winnow's own error answers print their message and details."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, cast

import typer
from pydantic import BaseModel

from winnow.cli.common import fail
from winnow.client import APIConnectionError, APITimeoutError, Winnow, WinnowAPIError
from winnow.client._http import DEFAULT_URL
from winnow.client.params import JobListFilters

TIMEOUT_S = 60.0

UrlOption = Annotated[
    str | None, typer.Option("--url", help=f"Server URL (also WINNOW_URL; default {DEFAULT_URL})", metavar="URL")
]
KeyOption = Annotated[str | None, typer.Option("--key", help="API key (also WINNOW_API_KEY)", metavar="KEY")]

LimitOption = Annotated[
    int | None, typer.Option("--limit", min=1, max=1000, help="Jobs per page, newest first (default 100)")
]
AfterOption = Annotated[
    str | None,
    typer.Option("--after", help="The last_id of the previous page: list the jobs older than it", metavar="ID"),
]
StatusOption = Annotated[str | None, typer.Option("--status", help="Only jobs with this status", metavar="STATUS")]
ModelOption = Annotated[str | None, typer.Option("--model", help="Only jobs that use this model", metavar="MODEL")]


def list_filters(limit: int | None, after: str | None, status: str | None, model: str | None) -> JobListFilters:
    """The job lists' query from the options above (unset ones left out)."""
    filters: dict[str, Any] = {"limit": limit, "after": after, "status": status, "model": model}
    return cast(JobListFilters, {name: value for name, value in filters.items() if value is not None})


_WHERE = "set WINNOW_URL (or --url)"


@contextmanager
def server(url: str | None, key: str | None) -> Iterator[Winnow]:
    """An SDK client of the server (``url``, else WINNOW_URL, else the default) with the API key
    (``key``, else WINNOW_API_KEY). Its errors inside the block become one-line errors."""
    secret = key or os.environ.get("WINNOW_API_KEY")
    if not secret:
        raise fail("no API key", "pass --key or set WINNOW_API_KEY")
    client = Winnow(url, secret, timeout=TIMEOUT_S)
    try:
        with client:
            yield client
    except APITimeoutError as exc:
        raise fail(f"{exc}. Check that `winnow serve` is running there and healthy, or {_WHERE}.") from exc
    except APIConnectionError as exc:  # refused, unknown host, dropped connection, bad URL
        raise fail(f"{exc}. Start it with `winnow serve` or {_WHERE}.") from exc
    except WinnowAPIError as exc:
        if exc.error is not None:
            raise fail(exc.error.message, exc.error.details) from exc
        raise fail(_not_winnow(client.base_url, exc)) from exc


def _not_winnow(base: str, exc: WinnowAPIError) -> str:
    """The line for an answer that is not what Winnow answers."""
    response = exc.response
    if response is None:
        return str(exc)
    try:
        json.loads(response.content)
    except ValueError:  # not JSON, or not text at all
        return (
            f"The server at {base} answered HTTP {response.status_code} {response.reason_phrase}, not JSON: "
            f"check the server's log, or {_WHERE} to a Winnow server."
        )
    return (
        f"The server at {base} answered JSON this client does not read ({exc}): is it a Winnow server of this version?"
    )


def show(answer: BaseModel) -> None:
    """Print an answer as the server's JSON."""
    typer.echo(answer.model_dump_json(indent=2, exclude_none=True, by_alias=True))

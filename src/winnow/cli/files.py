"""``winnow files``: upload a prompts file to a server (for a job's ``prompts_path``), list and delete
your files there."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from winnow.cli.remote import KeyOption, UrlOption, server, show
from winnow.cli.styling import typer_app

files_app = typer_app("Files on a server: prompts for jobs and datasets for evaluations.")


@files_app.command("upload")
def upload(
    path: Annotated[Path, typer.Argument(help="A JSONL prompts file", exists=True, dir_okay=False, show_default=False)],
    url: UrlOption = None,
    key: KeyOption = None,
) -> None:
    """Upload a JSONL prompts file (the server validates it); its path is what a job's prompts_path names."""
    with server(url, key) as client:
        show(client.files.upload(path))


@files_app.command("list")
def list_files(
    limit: Annotated[int | None, typer.Option("--limit", help="Files a page (the server's default: 100)")] = None,
    after: Annotated[str | None, typer.Option("--after", help="The last id of the page before")] = None,
    url: UrlOption = None,
    key: KeyOption = None,
) -> None:
    """Your files, newest first, with the bytes they take of your quota (has_more: pass --after last_id)."""
    with server(url, key) as client:
        show(client.files.list(limit=limit, after=after))


@files_app.command("delete")
def delete(
    file_id: Annotated[str, typer.Argument(help="The file's id (file-…)", show_default=False)],
    url: UrlOption = None,
    key: KeyOption = None,
) -> None:
    """Delete one of your files, on the server's disk too; a job that has yet to read it fails."""
    with server(url, key) as client:
        show(client.files.delete(file_id))

"""``winnow files``: upload a prompts file to a server, for a job's ``prompts_path``."""

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

"""Options and helpers every command shares."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from winnow.config import CONFIG_ENV_VAR, Settings
from winnow.runtime import Runtime

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML config file (also WINNOW_CONFIG)", exists=True, dir_okay=False),
]


err = Console(stderr=True)


def fail(message: str, details: str | None = None) -> typer.Exit:
    """Print an error (its text escaped: ``[vllm]`` is not Rich markup) and the exit to raise."""
    err.print("[red]error:[/red] " + escape(message + (f" ({details})" if details else "")), soft_wrap=True)
    return typer.Exit(1)


def progress_bar(*extra: ProgressColumn) -> Progress:
    """The progress bar of the in-process runs, on stderr: stage, bar, done/total, ``extra``, times."""
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), *extra)
    return Progress(*columns, TimeElapsedColumn(), TimeRemainingColumn(), console=err)


def load_settings(config: Path | None) -> Settings:
    """Settings with ``config`` as the YAML layer, for this process and the processes it starts."""
    if config is not None:
        os.environ[CONFIG_ENV_VAR] = str(config.resolve())
    return Settings()


def open_runtime(config: Path | None) -> Runtime:
    return Runtime.open(load_settings(config))


def resume_dir(output: Path, fingerprint_source: str, restart: bool) -> Path:
    """The work directory beside ``output`` where an in-process run keeps its checkpoint, so that
    running the same command again resumes it. A leftover of a run with other parameters is refused
    (``--restart`` discards it)."""
    work = output.with_name(output.name + ".winnow-work")
    fingerprint = hashlib.sha256(fingerprint_source.encode()).hexdigest()
    if restart and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    marker = work / "spec.sha256"
    if marker.exists() and marker.read_text() != fingerprint:
        typer.echo(
            f"error: {work} holds an interrupted run with other parameters (use --restart to discard it)", err=True
        )
        raise typer.Exit(1)
    marker.write_text(fingerprint)
    return work

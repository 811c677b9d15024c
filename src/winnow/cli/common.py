"""Options and helpers every command shares."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
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


def quiet_model_loading() -> None:
    """No progress bars or info logs from transformers and huggingface_hub while models load (the
    CLI draws its own progress): set before they are imported, applied to them if they already are.
    A variable the user set wins."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    if "huggingface_hub" in sys.modules and os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1":
        from huggingface_hub.utils.tqdm import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        if os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1":
            transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        if os.environ["TRANSFORMERS_VERBOSITY"] == "error":
            transformers_logging.set_verbosity_error()  # type: ignore[no-untyped-call]


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


def work_dir(output: Path) -> Path:
    """Where an in-process run of ``output`` keeps its checkpoint and work files."""
    return output.with_name(output.name + ".winnow-work")


def resume_dir(output: Path, fingerprint_source: str, restart: bool) -> Path:
    """The work directory beside ``output`` where an in-process run keeps its checkpoint, so that
    running the same command again resumes it. A leftover of a run with other parameters is refused
    (``--restart`` discards it)."""
    work = work_dir(output)
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

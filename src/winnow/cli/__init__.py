"""The ``winnow`` command line: thin Typer commands over the same services as the API."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Annotated

import typer

from winnow import __version__
from winnow.cli.common import ConfigOption, load_settings, quiet_model_loading
from winnow.cli.evals import eval_app
from winnow.cli.files import files_app
from winnow.cli.finetune import ft_app
from winnow.cli.keys import keys_app
from winnow.cli.models import generate, models_app
from winnow.cli.prompts import prompts_app
from winnow.cli.sdg import sdg_app, worker
from winnow.cli.styling import typer_app
from winnow.cli.usage import usage
from winnow.config import Settings
from winnow.db import Database
from winnow.jobs.processes import WorkerProcesses

app = typer_app(
    "Winnow: one API over local and commercial LLMs, and synthetic training data.", name="winnow", add_completion=False
)
config_app = typer_app("Inspect the effective configuration.")
app.add_typer(keys_app, name="keys")
app.add_typer(config_app, name="config")
app.add_typer(models_app, name="models")
app.command("generate")(generate)
app.add_typer(sdg_app, name="sdg")
app.add_typer(files_app, name="files")
app.add_typer(prompts_app, name="prompts")
app.command("worker")(worker)
app.command("usage")(usage)
app.add_typer(eval_app, name="eval")
app.add_typer(ft_app, name="ft")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"winnow {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version")
    ] = False,
) -> None:
    """Winnow: one API over local and commercial LLMs, and synthetic training data."""
    quiet_model_loading()


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default from config: 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from config: 8000)")] = None,
    http_workers: Annotated[
        int,
        typer.Option(
            "--http-workers",
            min=1,
            help="API server processes sharing the port (more than 1 needs redis_url; each loads its own local models)",
        ),
    ] = 1,
    config: ConfigOption = None,
) -> None:
    """Start the API server (uvicorn)."""
    import uvicorn

    settings = load_settings(config)
    if http_workers > 1 and not settings.redis_url:
        typer.echo(
            "error: --http-workers > 1 needs shared rate limits: set redis_url (WINNOW_REDIS_URL); "
            "in-memory limits would count each process apart",
            err=True,
        )
        raise typer.Exit(2)
    stopping = threading.Event()
    jobs = _shared_job_workers(settings, stopping) if http_workers > 1 else None
    _convert_in_background(settings)
    try:
        uvicorn.run(
            "winnow.api.app:create_app",
            factory=True,
            host=host or settings.host,
            port=port or settings.port,
            workers=http_workers,
            log_level=settings.log_level.lower(),
            access_log=False,
            timeout_graceful_shutdown=10,
        )
    finally:
        stopping.set()
        if jobs is not None:
            jobs.stop()


def _convert_in_background(settings: Settings) -> None:
    """GGUF models not yet converted into the data dir are converted while the server starts (once:
    a first request for one waits for it, later starts find the folder)."""
    from winnow.models.gguf import converted, ensure_converted

    pending = [m for m in settings.models if m.gguf and m.path and not converted(Path(m.path))]

    def convert() -> None:
        for model in pending:
            typer.echo(f"converting {model.id} from its GGUF into {model.path} (once; its first request waits)")
            started = time.monotonic()
            try:
                ensure_converted(model)
            except Exception as exc:  # the model is reported unavailable when used; the server runs on
                typer.echo(f"warning: could not convert {model.id}: {exc}", err=True)
            else:
                typer.echo(f"converted {model.id} in {time.monotonic() - started:.0f} s")

    if pending:
        threading.Thread(target=convert, daemon=True, name="gguf-convert").start()


def _shared_job_workers(settings: Settings, stopping: threading.Event) -> WorkerProcesses:
    """With several API processes, the job workers are started once, here (each API process would
    otherwise start ``workers`` of its own), after migrating the database once, before any starts."""
    Database(settings.effective_database_url).migrate()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    jobs = WorkerProcesses(settings)
    jobs.start()
    os.environ["WINNOW_WORKERS"] = "0"  # read by the API processes uvicorn spawns
    threading.Thread(target=_supervise, args=(jobs, stopping), daemon=True, name="job-workers").start()
    return jobs


def _supervise(jobs: WorkerProcesses, stopping: threading.Event, every_s: float = 1.0) -> None:
    """Replace job workers that died, until the server stops."""
    while not stopping.wait(every_s):
        jobs.supervise()


@config_app.command("show")
def config_show(config: ConfigOption = None) -> None:
    """Print the effective configuration (secrets masked) as JSON."""
    typer.echo(json.dumps(load_settings(config).masked(), indent=2))


def main() -> None:
    app()

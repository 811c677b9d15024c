"""The ``winnow`` command line: thin Typer commands over the same services as the API."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from winnow import __version__
from winnow.cli.common import ConfigOption, load_settings, quiet_model_loading
from winnow.cli.evals import eval_app
from winnow.cli.files import files_app
from winnow.cli.keys import keys_app
from winnow.cli.models import generate, models_app
from winnow.cli.sdg import sdg_app, worker
from winnow.cli.styling import typer_app
from winnow.cli.usage import usage

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
app.command("worker")(worker)
app.command("usage")(usage)
app.add_typer(eval_app, name="eval")


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
    config: ConfigOption = None,
) -> None:
    """Start the API server (uvicorn)."""
    import uvicorn

    settings = load_settings(config)
    uvicorn.run(
        "winnow.api.app:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=10,
    )


@config_app.command("show")
def config_show(config: ConfigOption = None) -> None:
    """Print the effective configuration (secrets masked) as JSON."""
    typer.echo(json.dumps(load_settings(config).masked(), indent=2))


def main() -> None:
    app()

"""``winnow models`` and ``winnow generate``: the registry and generation service, without a server."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from winnow.cli.common import ConfigOption, fail, load_settings
from winnow.cli.styling import typer_app
from winnow.config import Settings
from winnow.db import Database
from winnow.errors import WinnowError
from winnow.models.registry import ModelRegistry
from winnow.models.service import GenerationService
from winnow.schemas.platform import GenerateRequest

models_app = typer_app("Inspect the configured models.")


def local_registry(settings: Settings) -> ModelRegistry:
    """The registry with the database's fine-tuned models, when the database exists already."""
    db = None
    if not settings.effective_database_url.startswith("sqlite") or (settings.data_dir / "winnow.db").exists():
        db = Database(settings.effective_database_url)
        db.migrate()
    return ModelRegistry(settings, db)


@models_app.command("list")
def list_models(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    config: ConfigOption = None,
) -> None:
    """List configured and fine-tuned models with their measured status."""

    async def run() -> list[dict[str, object]]:
        registry = local_registry(load_settings(config))
        try:
            return [m.model_dump(mode="json", exclude_none=True) for m in await registry.describe_all()]
        finally:
            await registry.close()

    models = asyncio.run(run())
    if as_json:
        typer.echo(json.dumps(models, indent=2))
        return
    table = Table("id", "type", "provider", "status", "context")
    for m in models:
        table.add_row(
            str(m["id"]), str(m["type"]), str(m["provider"]), str(m["status"]), str(m.get("context_length", ""))
        )
    Console().print(table)


def generate(
    prompt: Annotated[str, typer.Argument(help="The prompt (a chat message if the model has a template)")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model id", metavar="MODEL")] = "demo-lm",
    max_tokens: Annotated[int, typer.Option(help="Most tokens to generate")] = 100,
    temperature: Annotated[float, typer.Option(help="0 = greedy")] = 0.7,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling: the smallest set of tokens with this mass")] = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole GenerateResponse")] = False,
    config: ConfigOption = None,
) -> None:
    """Generate text for PROMPT with a configured model, in-process."""

    async def run() -> str:
        registry = local_registry(load_settings(config))
        try:
            request = GenerateRequest(
                prompt=prompt, model_id=model, max_tokens=max_tokens, temperature=temperature, top_p=top_p
            )
            response = await GenerationService(registry).generate(request)
            return response.model_dump_json(indent=2) if as_json else response.text
        finally:
            await registry.close()

    try:
        typer.echo(asyncio.run(run()))
    except WinnowError as exc:
        raise fail(exc.message, exc.details) from exc

"""``winnow prompts``: the prompt registry, in the configured database (as the key ``--key`` names)
or, with ``--remote``, on a server through the SDK. Both ways go through the same calls."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Protocol, Unpack

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from winnow.cli.common import ConfigOption, fail, open_runtime
from winnow.cli.remote import KeyOption, UrlOption, server, show
from winnow.cli.styling import typer_app
from winnow.client.prompts import VersionParams
from winnow.db.paging import Cursor
from winnow.errors import WinnowError
from winnow.prompts import PromptRegistry
from winnow.schemas.prompts import (
    PromptCreate,
    PromptDeleted,
    PromptInfo,
    PromptList,
    PromptVersionCreate,
    PromptVersionInfo,
    PromptVersionList,
)

prompts_app = typer_app("Named prompts with immutable versions and labels (local database, or --remote).")

RemoteOption = Annotated[bool, typer.Option("--remote", help="Use the server at --url instead of the local database")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the answer as JSON")]
Name = Annotated[str, typer.Argument(help="The prompt's name", show_default=False)]


class Backend(Protocol):
    """What the commands call: ``client.prompts`` (remote) or ``LocalPrompts`` (the database)."""

    def create(
        self, name: str, template: str, *, description: str | None = None, **options: Unpack[VersionParams]
    ) -> PromptInfo: ...
    def list(self, *, limit: int | None = None, after: str | None = None) -> PromptList: ...
    def retrieve(self, name: str) -> PromptInfo: ...
    def add_version(self, name: str, template: str, **options: Unpack[VersionParams]) -> PromptVersionInfo: ...
    def versions(self, name: str, *, limit: int | None = None, after: str | None = None) -> PromptVersionList: ...
    def version(self, name: str, version: int) -> PromptVersionInfo: ...
    def set_label(self, name: str, label: str, version: int) -> PromptInfo: ...
    def remove_label(self, name: str, label: str) -> PromptInfo: ...
    def delete(self, name: str) -> PromptDeleted: ...


class LocalPrompts:
    """The registry in this process, acting as one key: the SDK's calls, on the service."""

    def __init__(self, registry: PromptRegistry, key_id: int) -> None:
        self.registry, self.key_id = registry, key_id

    def create(
        self, name: str, template: str, *, description: str | None = None, **options: Unpack[VersionParams]
    ) -> PromptInfo:
        spec = PromptCreate.model_validate({"name": name, "template": template, "description": description, **options})
        return self.registry.create(self.key_id, spec)

    def list(self, *, limit: int | None = None, after: str | None = None) -> PromptList:
        return self.registry.list(self.key_id, Cursor(limit=limit or 100, after=after))

    def retrieve(self, name: str) -> PromptInfo:
        return self.registry.get(self.key_id, name)

    def add_version(self, name: str, template: str, **options: Unpack[VersionParams]) -> PromptVersionInfo:
        spec = PromptVersionCreate.model_validate({"template": template, **options})
        return self.registry.add_version(self.key_id, name, spec)

    def versions(self, name: str, *, limit: int | None = None, after: str | None = None) -> PromptVersionList:
        return self.registry.versions(self.key_id, name, Cursor(limit=limit or 100, after=after))

    def version(self, name: str, version: int) -> PromptVersionInfo:
        return self.registry.version(self.key_id, name, version)

    def set_label(self, name: str, label: str, version: int) -> PromptInfo:
        return self.registry.move_label(self.key_id, name, label, version)

    def remove_label(self, name: str, label: str) -> PromptInfo:
        return self.registry.remove_label(self.key_id, name, label)

    def delete(self, name: str) -> PromptDeleted:
        return self.registry.delete(self.key_id, name)


@contextmanager
def backend(remote: bool, url: str | None, key: str | None, config: Path | None) -> Iterator[Backend]:
    """The registry the command works on; its errors become one-line errors (exit status 1)."""
    if remote:
        with server(url, key) as client:
            yield client.prompts
        return
    secret = key or os.environ.get("WINNOW_API_KEY")
    if not secret:
        raise fail("no API key", "pass --key or set WINNOW_API_KEY: prompts belong to the key that made them")
    runtime = open_runtime(config)
    try:
        yield LocalPrompts(runtime.prompts, runtime.keys.authenticate(secret).id)
    except WinnowError as exc:
        raise fail(exc.message, exc.details) from exc
    except ValueError as exc:  # a request model refused the options
        raise fail(f"invalid prompt: {exc}") from exc
    finally:
        runtime.close()


def _version_options(
    system: str | None,
    model: str | None,
    message: str | None,
    labels: list[str] | None,
    max_tokens: int | None,
    temperature: float | None,
    top_p: float | None,
) -> dict[str, Any]:
    params = {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p}
    options: dict[str, Any] = {"system": system, "model": model, "message": message, "labels": labels or []}
    options["params"] = {k: v for k, v in params.items() if v is not None}
    return {k: v for k, v in options.items() if v is not None}


def _template(text: str | None, path: Path | None) -> str:
    if (text is None) == (path is None):
        raise fail("give the template: --template TEXT or --template-file PATH (one of them)")
    return text if text is not None else Path(str(path)).read_text(encoding="utf-8")


def _print(answer: BaseModel, as_json: bool, table: Table | None = None) -> None:
    if as_json or table is None:
        show(answer)
    else:
        Console().print(table)


def _version_table(versions: list[PromptVersionInfo]) -> Table:
    table = Table("version", "labels", "source", "model", "message", "template")
    for v in versions:
        first = v.template.splitlines()[0] if v.template else ""
        row = [str(v.version), ", ".join(v.labels), v.source, v.model or "", v.message or "", first[:60]]
        table.add_row(*(escape(cell) for cell in row))
    return table


TemplateOption = Annotated[str | None, typer.Option("--template", "-t", help="The template, {field} placeholders")]
TemplateFile = Annotated[
    Path | None, typer.Option("--template-file", help="Read the template from a file", exists=True, dir_okay=False)
]
SystemOption = Annotated[str | None, typer.Option("--system", help="A system message")]
ModelOption = Annotated[str | None, typer.Option("--model", "-m", help="The model this version is made for")]
MessageOption = Annotated[str | None, typer.Option("--message", help="What changed, in a line")]
LabelOption = Annotated[list[str] | None, typer.Option("--label", "-l", help="A label to move to it (repeat)")]
MaxTokens = Annotated[int | None, typer.Option("--max-tokens", min=1, help="Its max_tokens")]
Temperature = Annotated[float | None, typer.Option("--temperature", min=0.0, max=2.0, help="Its temperature")]
TopP = Annotated[float | None, typer.Option("--top-p", min=0.0, max=1.0, help="Its top_p")]


@prompts_app.command("create")
def create(  # noqa: PLR0913 (a Typer command: each parameter is one of its options)
    name: Name,
    template: TemplateOption = None,
    template_file: TemplateFile = None,
    system: SystemOption = None,
    model: ModelOption = None,
    message: MessageOption = None,
    label: LabelOption = None,
    max_tokens: MaxTokens = None,
    temperature: Temperature = None,
    top_p: TopP = None,
    description: Annotated[str | None, typer.Option("--description", help="What the prompt is for")] = None,
    remote: RemoteOption = False,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Create a prompt with its version 1."""
    text = _template(template, template_file)
    options = _version_options(system, model, message, label, max_tokens, temperature, top_p)
    with backend(remote, url, key, config) as prompts:
        show(prompts.create(name, text, description=description, **options))


@prompts_app.command("add-version")
def add_version(  # noqa: PLR0913 (a Typer command: each parameter is one of its options)
    name: Name,
    template: TemplateOption = None,
    template_file: TemplateFile = None,
    system: SystemOption = None,
    model: ModelOption = None,
    message: MessageOption = None,
    label: LabelOption = None,
    max_tokens: MaxTokens = None,
    temperature: Temperature = None,
    top_p: TopP = None,
    remote: RemoteOption = False,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Add the prompt's next version (a version never changes once written)."""
    text = _template(template, template_file)
    options = _version_options(system, model, message, label, max_tokens, temperature, top_p)
    with backend(remote, url, key, config) as prompts:
        show(prompts.add_version(name, text, **options))


@prompts_app.command("list")
def list_prompts(
    limit: Annotated[int | None, typer.Option("--limit", min=1, max=1000, help="Prompts a page")] = None,
    after: Annotated[str | None, typer.Option("--after", help="The last id of the page before")] = None,
    as_json: JsonOption = False,
    remote: RemoteOption = False,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Your prompts, newest first, with their labels."""
    with backend(remote, url, key, config) as prompts:
        page = prompts.list(limit=limit, after=after)
    table = Table("name", "latest", "labels", "template")
    for p in page.data:
        labels = ", ".join(f"{label}→{version}" for label, version in p.labels.items())
        first = p.latest.template.splitlines()[0] if p.latest.template else ""
        table.add_row(escape(p.name), str(p.latest_version), escape(labels), escape(first[:60]))
    _print(page, as_json, table)


@prompts_app.command("show")
def show_prompt(
    name: Name,
    version: Annotated[
        int | None, typer.Option("--version", "-v", min=1, help="This version (default: latest)")
    ] = None,
    remote: RemoteOption = False,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """A prompt (its labels and latest version), or one version of it, as JSON."""
    with backend(remote, url, key, config) as prompts:
        show(prompts.retrieve(name) if version is None else prompts.version(name, version))


@prompts_app.command("versions")
def versions(
    name: Name,
    limit: Annotated[int | None, typer.Option("--limit", min=1, max=1000, help="Versions a page")] = None,
    after: Annotated[str | None, typer.Option("--after", help="The last id of the page before")] = None,
    as_json: JsonOption = False,
    remote: RemoteOption = False,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """The prompt's versions, newest first."""
    with backend(remote, url, key, config) as prompts:
        page = prompts.versions(name, limit=limit, after=after)
    _print(page, as_json, _version_table(page.data))


LabelName = Annotated[str, typer.Argument(help="The label, e.g. production", show_default=False)]


@prompts_app.command("label")
def label(
    name: Name,
    label: LabelName,
    version: Annotated[int, typer.Argument(help="The version it points at from now on", min=1, show_default=False)],
    remote: RemoteOption = False,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Point a label at a version (made if new; it leaves the version it was on)."""
    with backend(remote, url, key, config) as prompts:
        show(prompts.set_label(name, label, version))


@prompts_app.command("unlabel")
def unlabel(
    name: Name,
    label: LabelName,
    remote: RemoteOption = False,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Remove a label from a prompt."""
    with backend(remote, url, key, config) as prompts:
        show(prompts.remove_label(name, label))


@prompts_app.command("delete")
def delete(
    name: Name,
    remote: RemoteOption = False,
    url: UrlOption = None,
    key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Delete a prompt with every version and label of it."""
    with backend(remote, url, key, config) as prompts:
        show(prompts.delete(name))

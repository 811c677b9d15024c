"""``winnow keys``: create, list and revoke API keys in the configured database."""

from __future__ import annotations

import json
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table

from winnow.cli.common import ConfigOption, err, fail, open_runtime
from winnow.cli.styling import typer_app
from winnow.errors import WinnowError
from winnow.schemas.keys import KeyBudget, KeyInfo

Period = Annotated[
    Literal["day", "month", "total"], typer.Option("--budget-period", help="The period the caps apply to")
]
KeyName = Annotated[str, typer.Argument(help="The key's name", show_default=False)]

keys_app = typer_app("Manage API keys.")


def _fail(exc: WinnowError) -> typer.Exit:
    return fail(exc.message, exc.details)


@keys_app.command("create")
def create(
    name: KeyName,
    admin: Annotated[bool, typer.Option("--admin", help="May manage other keys")] = False,
    rate_limits: Annotated[
        str | None,
        typer.Option("--rate-limits", help='JSON overrides, e.g. {"generation": "200/minute"}', metavar="JSON"),
    ] = None,
    budget_usd: Annotated[float | None, typer.Option("--budget-usd", help="Spend cap in USD per period")] = None,
    budget_tokens: Annotated[int | None, typer.Option("--budget-tokens", help="Token cap per period")] = None,
    budget_period: Period = "month",
    storage_quota: Annotated[
        int | None,
        typer.Option("--storage-quota", help="Bytes of uploads it may keep (default: the server's)", min=0, max=10**15),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Create a key. The secret is printed once, as the last line of stdout."""
    runtime = open_runtime(config)
    try:
        overrides = json.loads(rate_limits) if rate_limits else None
        budget = _budget(budget_usd, budget_tokens, budget_period)
        created = runtime.keys.create(
            name, admin=admin, rate_limits=overrides, budget=budget, storage_quota_bytes=storage_quota
        )
    except json.JSONDecodeError as exc:
        raise fail(f"--rate-limits is not JSON: {exc}") from exc
    except WinnowError as exc:
        raise _fail(exc) from exc
    finally:
        runtime.close()
    err.print(f"created key [bold]{created.name}[/bold] (admin={created.admin}); store it now, it is not shown again")
    typer.echo(created.key)


def _budget(usd: float | None, tokens: int | None, period: str) -> KeyBudget | None:
    if usd is None and tokens is None:
        return None
    try:
        return KeyBudget.model_validate({"usd": usd, "tokens": tokens, "period": period})
    except ValueError as exc:
        raise fail(f"bad budget: {exc}") from exc


@keys_app.command("budget")
def budget(
    name: KeyName,
    usd: Annotated[float | None, typer.Option("--usd", help="Spend cap in USD per period")] = None,
    tokens: Annotated[int | None, typer.Option("--tokens", help="Token cap per period")] = None,
    period: Annotated[
        Literal["day", "month", "total"], typer.Option("--period", help="The period the caps apply to")
    ] = "month",
    clear: Annotated[bool, typer.Option("--clear", help="Remove the key's budget")] = False,
    config: ConfigOption = None,
) -> None:
    """Show, set or clear the budget of the key called NAME (paused jobs of the key wake up)."""
    runtime = open_runtime(config)
    try:
        if clear or usd is not None or tokens is not None:
            info = runtime.keys.set_budget(name, None if clear else _budget(usd, tokens, period))
            runtime.apply_budget(info)
            key_id = info.id
        else:
            found = next((k for k in runtime.keys.list() if k.name == name), None)
            if found is None:
                raise fail(f"no live key called {name!r}")
            runtime.usage.recorder.flush()
            key_id = found.id
        standing = runtime.usage.budget_status(key_id)
    except WinnowError as exc:
        raise _fail(exc) from exc
    finally:
        runtime.close()
    typer.echo(json.dumps({"key": name, **standing}, indent=2, default=str))


@keys_app.command("quota")
def quota(
    name: KeyName,
    bytes_: Annotated[
        int | None, typer.Option("--bytes", help="Bytes of uploads the key may keep", min=0, max=10**15)
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Back to the server's storage_quota_bytes")] = False,
    config: ConfigOption = None,
) -> None:
    """Show, set or clear the storage quota of the key called NAME (its uploads past it get 413)."""
    runtime = open_runtime(config)
    try:
        if clear or bytes_ is not None:
            found: KeyInfo | None = runtime.keys.set_storage_quota(name, None if clear else bytes_)
        else:
            found = next((k for k in runtime.keys.list() if k.name == name), None)
        if found is None:
            raise fail(f"no live key called {name!r}")
        used, limit = runtime.files.usage(found.id)
    except WinnowError as exc:
        raise _fail(exc) from exc
    finally:
        runtime.close()
    own = found.storage_quota_bytes is not None
    typer.echo(json.dumps({"key": name, "used_bytes": used, "quota_bytes": limit, "own_quota": own}, indent=2))


@keys_app.command("list")
def list_keys(
    all_: Annotated[bool, typer.Option("--all", help="Include revoked keys")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    config: ConfigOption = None,
) -> None:
    """List keys (never their secrets)."""
    runtime = open_runtime(config)
    try:
        keys = runtime.keys.list(include_revoked=all_)
    finally:
        runtime.close()
    if as_json:
        typer.echo(json.dumps([k.model_dump(mode="json") for k in keys], indent=2))
        return
    table = Table("name", "prefix", "admin", "rate limits", "budget", "created", "revoked")
    for k in keys:
        table.add_row(
            k.name,
            k.prefix + "…",
            "yes" if k.admin else "",
            json.dumps(k.rate_limits) if k.rate_limits else "",
            json.dumps(k.budget.model_dump(exclude_none=True)) if k.budget else "",
            k.created_at.isoformat(timespec="seconds"),
            k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else "",
        )
    Console().print(table)


@keys_app.command("revoke")
def revoke(name: KeyName, config: ConfigOption = None) -> None:
    """Revoke the live key called NAME."""
    runtime = open_runtime(config)
    try:
        info = runtime.keys.revoke(name)
    except WinnowError as exc:
        raise _fail(exc) from exc
    finally:
        runtime.close()
    typer.echo(f"revoked {info.name}")

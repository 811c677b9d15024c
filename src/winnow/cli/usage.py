"""``winnow usage``: usage and cost from the configured database, grouped by key, model or day."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from winnow.auth import Principal
from winnow.cli.common import ConfigOption, open_runtime
from winnow.usage.service import GroupBy


def _when(value: str | None) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def usage(
    group_by: Annotated[GroupBy, typer.Option("--group-by", "-g", help="What each row totals")] = "model",
    start: Annotated[
        str | None, typer.Option("--from", help="Inclusive start, ISO 8601 (UTC if no offset)", metavar="TIME")
    ] = None,
    end: Annotated[str | None, typer.Option("--to", help="Exclusive end, ISO 8601", metavar="TIME")] = None,
    key: Annotated[str | None, typer.Option("--key", help="Only this key's usage")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    config: ConfigOption = None,
) -> None:
    """Print tokens and cost (as an admin sees them: every key's)."""
    runtime = open_runtime(config)
    try:
        operator = Principal(id=0, name="cli", is_admin=True)
        report = runtime.usage.summary(operator, group_by, _when(start), _when(end), key)
    finally:
        runtime.close()
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
        return
    table = Table(group_by, "requests", "input tokens", "output tokens", "cost (USD)", "avg latency (ms)")
    for row in [*report["rows"], {"group": "total", **report["total"], "avg_latency_ms": None}]:
        table.add_row(
            row["group"],
            str(row["requests"]),
            str(row["input_tokens"]),
            str(row["output_tokens"]),
            f"{row['cost_usd']:.6f}",
            "" if row["avg_latency_ms"] is None else f"{row['avg_latency_ms']:.1f}",
        )
    Console().print(table)

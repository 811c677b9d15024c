"""GET /usage (usage and cost by key, model or day) and GET /usage/budget (a key's budget standing)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from fastapi import Query
from starlette.concurrency import run_in_threadpool

from winnow.api.deps import OtherKey, RuntimeDep
from winnow.api.routing import Router
from winnow.errors import NotFound, PermissionDenied
from winnow.schemas.common import ErrorResponse
from winnow.schemas.usage import BudgetStatus, UsageDaily, UsageReport


def utc(value: datetime | None) -> datetime | None:
    """A time without an offset is UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


router = Router(prefix="/usage", tags=["Usage and budgets"])
_OTHERS_USAGE: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "A key other than an admin asked for another key's usage"}
}
_ONE_KEY = Query(None, description="Admin only: one key's usage")


@router.get(
    "",
    summary="Usage and cost, grouped by key, model or day",
    response_model=UsageReport,
    response_model_by_alias=True,
    responses=_OTHERS_USAGE,
)
async def usage(
    runtime: RuntimeDep,
    principal: OtherKey,
    group_by: Literal["key", "model", "day"] = Query("model"),
    from_: datetime | None = Query(None, alias="from", description="Inclusive start (ISO 8601)"),
    to: datetime | None = Query(None, description="Exclusive end (ISO 8601)"),
    key: str | None = _ONE_KEY,
) -> UsageReport:
    report = await run_in_threadpool(runtime.usage.summary, principal, group_by, utc(from_), utc(to), key)
    return UsageReport.model_validate({**report, "prices_as_of": runtime.usage.prices.as_of})


@router.get(
    "/daily",
    summary="Usage per UTC day and model over the last days (a time series for charts)",
    response_model=UsageDaily,
    response_model_by_alias=True,
    responses=_OTHERS_USAGE,
)
async def usage_daily(
    runtime: RuntimeDep,
    principal: OtherKey,
    days: int = Query(14, ge=1, le=366, description="How many UTC days, ending today"),
    key: str | None = _ONE_KEY,
) -> UsageDaily:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=days - 1)
    rows = await run_in_threadpool(runtime.usage.daily_by_model, principal, start, None, key)
    return UsageDaily.model_validate(
        {
            "from": start,
            "days": [(start + timedelta(days=i)).date().isoformat() for i in range(days)],
            "models": sorted({row["model"] for row in rows}),
            "rows": rows,
        }
    )


@router.get(
    "/budget",
    summary="A key's budget, spend this period and what remains",
    response_model=BudgetStatus,
    responses={
        403: {"model": ErrorResponse, "description": "Only an admin may read another key's budget"},
        404: {"model": ErrorResponse, "description": "No live key with this name"},
    },
)
async def budget(runtime: RuntimeDep, principal: OtherKey, key: str | None = Query(None)) -> BudgetStatus:
    if key is None or key == principal.name:
        return BudgetStatus(key=principal.name, **runtime.usage.budget_status(principal.id))
    if not principal.is_admin:
        raise PermissionDenied("Only an admin may read another key's budget", f"key={key!r}")
    keys = {info.name: info for info in await run_in_threadpool(runtime.keys.list)}
    if key not in keys:
        raise NotFound("No live key with this name", f"name={key!r}")
    return BudgetStatus(key=key, **runtime.usage.budget_status(keys[key].id))

"""Wire models of ``/api/v1/usage``: usage and cost grouped by key, model or day; budget standing."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from winnow.schemas.common import Timestamp, WireModel
from winnow.schemas.keys import KeyBudget


class UsageTotals(WireModel):
    requests: int = Field(description="Generations (one per prompt)")
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cost_usd: float


class UsageGroup(UsageTotals):
    group: str = Field(description="The key name, model id or UTC day (YYYY-MM-DD)")
    avg_latency_ms: float


class UsageReport(WireModel):
    group_by: Literal["key", "model", "day"]
    from_: Timestamp | None = Field(None, alias="from")
    to: Timestamp | None = None
    rows: list[UsageGroup]
    total: UsageTotals
    prices_as_of: str = Field(description="Date of Winnow's default price table (config overrides it)")


class UsageDay(UsageTotals):
    day: str = Field(description="UTC day (YYYY-MM-DD)")
    model: str
    avg_latency_ms: float


class UsageDaily(WireModel):
    """Usage per UTC day and model: a time series for charts (its sums are ``/usage``'s per day or model)."""

    from_: Timestamp = Field(alias="from")
    to: Timestamp | None = None
    days: list[str] = Field(description="Every UTC day in the range, oldest first, including days without usage")
    models: list[str] = Field(description="Models with usage in the range")
    rows: list[UsageDay] = Field(description="Only (day, model) pairs with usage")


class BudgetStatus(WireModel):
    key: str
    budget: KeyBudget | None = None
    period_start: Timestamp | None = None
    resets_at: Timestamp | None = None
    spent_usd: float
    spent_tokens: int
    remaining_usd: float | None = None
    remaining_tokens: int | None = None

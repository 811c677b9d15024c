"""Usage, cost and budgets: price tables, a buffered usage recorder, per-key spend caps."""

from winnow.usage.budgets import Budget, BudgetLedger
from winnow.usage.prices import Price, PriceBook
from winnow.usage.recorder import UsageEvent, UsageRecorder
from winnow.usage.service import UsageService

__all__ = ["Budget", "BudgetLedger", "Price", "PriceBook", "UsageEvent", "UsageRecorder", "UsageService"]

"""Per-key spend caps, enforced before any model call without a database round trip.

Each process keeps, per key with a budget, what the database says the key has spent this period
(re-read every ``usage_flush_s`` by the usage flusher, so every process sharing the database sees
every other's spend within about that interval) plus what it has recorded itself and not yet
written. Budgets themselves are re-read on the same beat, so a change made anywhere applies
everywhere within a second or so.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy import func, select

from winnow.db import ApiKey, Database, UsageRecord
from winnow.errors import BudgetExceeded

Period = Literal["day", "month", "total"]
PERIODS: tuple[str, ...] = ("day", "month", "total")


@dataclass(frozen=True)
class Budget:
    usd: float | None = None
    tokens: int | None = None
    period: Period = "month"


@dataclass(frozen=True)
class Spend:
    usd: float = 0.0
    tokens: int = 0


def period_bounds(period: str, now: datetime | None = None) -> tuple[datetime | None, datetime | None]:
    """(start, next reset) of the period containing ``now``, UTC calendar; (None, None) for total."""
    now = now or datetime.now(UTC)
    if period == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    if period == "month":
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        nxt = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
        return start, nxt
    return None, None


class BudgetLedger:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._budgets: dict[int, Budget] = {}
        self._stored: dict[int, Spend] = {}  # from the database at the last sync
        self._pending: dict[int, list[float]] = {}  # recorded here, not yet written: [usd, tokens]
        self._period_start: dict[int, datetime | None] = {}

    # -- the request path (memory only) -------------------------------------------------------
    def budget(self, key_id: int) -> Budget | None:
        return self._budgets.get(key_id)

    def spent(self, key_id: int) -> Spend:
        stored = self._stored.get(key_id, Spend())
        pending = self._pending.get(key_id, [0.0, 0])
        return Spend(stored.usd + pending[0], stored.tokens + int(pending[1]))

    def check(self, key_id: int, usd: float = 0.0, tokens: int = 0) -> None:
        """Raise BudgetExceeded if the key's budget is spent, or would be by ``usd``/``tokens`` more."""
        budget = self._budgets.get(key_id)
        if budget is None:
            return
        spent = self.spent(key_id)
        _, reset = period_bounds(budget.period)
        when = f"; it resets at {reset.isoformat()}" if reset else ""
        if budget.usd is not None and spent.usd + usd > budget.usd:
            raise BudgetExceeded(
                "Budget exceeded",
                f"spent ${spent.usd:.6f} of ${budget.usd:.6f} this {budget.period}"
                + (f" (this request needs about ${usd:.6f})" if usd else "")
                + when,
            )
        if budget.tokens is not None and spent.tokens + tokens > budget.tokens:
            raise BudgetExceeded(
                "Token budget exceeded", f"used {spent.tokens} of {budget.tokens} tokens this {budget.period}{when}"
            )

    def add(self, key_id: int, usd: float, tokens: int) -> bool:
        """Count spend recorded here and not yet written; False (not counted) for keys with no budget."""
        if key_id not in self._budgets:
            return False
        with self._lock:
            pending = self._pending.setdefault(key_id, [0.0, 0])
            pending[0] += usd
            pending[1] += tokens
        return True

    # -- the flusher's beat ---------------------------------------------------------------------
    def set_budget(self, key_id: int, budget: Budget | None) -> None:
        with self._lock:
            if budget is None:
                self._budgets.pop(key_id, None)
            else:
                self._budgets[key_id] = budget

    def settle(self, written: Iterable[tuple[int, float, int]]) -> None:
        """``written`` (key, usd, tokens) reached the database: it is no longer pending."""
        with self._lock:
            self._settle(written)

    def _settle(self, written: Iterable[tuple[int, float, int]]) -> None:
        for key_id, usd, tokens in written:
            pending = self._pending.get(key_id)
            if pending is not None:
                pending[0] -= usd
                pending[1] -= tokens

    def sync(self, db: Database, written: Iterable[tuple[int, float, int]] = ()) -> None:
        """Re-read budgets and this period's spend; ``written`` (key, usd, tokens) just reached the
        database, so it leaves the pending counts at the same moment the new totals arrive."""
        now = datetime.now(UTC)
        with db.session() as session:
            rows = session.execute(
                select(ApiKey.id, ApiKey.budget_usd, ApiKey.budget_tokens, ApiKey.budget_period).where(
                    ApiKey.revoked_at.is_(None),
                    (ApiKey.budget_usd.is_not(None)) | (ApiKey.budget_tokens.is_not(None)),
                )
            ).all()
            budgets = {r.id: Budget(r.budget_usd, r.budget_tokens, r.budget_period or "month") for r in rows}
            stored: dict[int, Spend] = {}
            starts: dict[int, datetime | None] = {}
            for period in PERIODS:
                keys = [k for k, b in budgets.items() if b.period == period]
                if not keys:
                    continue
                start, _ = period_bounds(period, now)
                query = select(
                    UsageRecord.key_id,
                    func.coalesce(func.sum(UsageRecord.cost_usd), 0.0),
                    func.coalesce(func.sum(UsageRecord.input_tokens + UsageRecord.output_tokens), 0),
                ).where(UsageRecord.key_id.in_(keys))
                if start is not None:
                    query = query.where(UsageRecord.created_at >= start)
                for key_id, usd, tokens in session.execute(query.group_by(UsageRecord.key_id)):
                    stored[key_id] = Spend(float(usd), int(tokens))
                starts.update(dict.fromkeys(keys, start))
        with self._lock:
            self._settle(written)
            for key_id, start in starts.items():
                if self._period_start.get(key_id, start) != start:  # a new day or month began
                    self._pending.pop(key_id, None)
            self._budgets, self._stored, self._period_start = budgets, stored, starts
            self._pending = {k: v for k, v in self._pending.items() if k in budgets}

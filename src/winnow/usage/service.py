"""Usage and cost as a service: price, check the budget, record, and report.

Every generation path (``/generate``, ``/generate/batch``, ``/v1``, SDG and evaluation jobs) goes
through ``check`` before calling a model and ``record`` after, so usage, cost, budgets and the
spend metrics agree wherever the tokens were spent.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import func, select

from winnow.auth import Principal
from winnow.config import Settings
from winnow.db import ApiKey, Database, UsageRecord
from winnow.errors import BudgetExceeded, InvalidRequest
from winnow.metrics import Metrics
from winnow.models.base import GenerationResult
from winnow.requests import context as request_context
from winnow.usage.budgets import BudgetLedger, period_bounds
from winnow.usage.prices import PriceBook
from winnow.usage.recorder import UsageEvent, UsageRecorder

log = logging.getLogger("winnow.usage")
GroupBy = Literal["key", "model", "day"]
# In-process runs (``winnow sdg run``, ``winnow eval run``) bill no API key: their rows (source
# ``cli``) carry key 0, listed under this name (no key can be named so), and no budget applies.
CLI_KEY_ID = 0
CLI_KEY_NAME = "(cli)"
_key_column = func.coalesce(ApiKey.name, CLI_KEY_NAME)  # in-process runs have no key


def estimate_tokens(prompt: Any) -> int:
    """A quick upper-ish estimate of a prompt's tokens (4 characters a token, 4 per chat message),
    for budget checks made before the model has tokenized anything."""
    if isinstance(prompt, str):
        return len(prompt) // 4 + 1
    total = 0
    for message in prompt:
        content = message.get("content", "") if isinstance(message, dict) else getattr(message, "content", "")
        total += len(str(content)) // 4 + 4
    return total


@asynccontextmanager
async def cli_usage(settings: Settings) -> AsyncIterator[UsageService | None]:
    """The usage service of an in-process run (``winnow sdg run``, ``winnow eval run``): its rows
    (source ``cli``) go to the configured database, by default the SQLite file in the data dir, with
    each checkpoint. None, after a warning, when that database cannot be opened: the run goes on."""
    usage = None
    try:
        db = Database(settings.effective_database_url)
        db.migrate()
        usage = UsageService(db, settings)
    except Exception as exc:
        log.warning("usage of this run is not recorded: the database cannot be opened (%s)", exc)
    try:
        yield usage
    finally:
        if usage is not None:
            usage.close()
            usage.db.dispose()


class UsageService:
    def __init__(self, db: Database, settings: Settings, metrics: Metrics | None = None) -> None:
        self.db = db
        self.settings = settings
        self.metrics = metrics
        self.prices = PriceBook(settings)
        self.ledger = BudgetLedger()
        self.recorder = UsageRecorder(db, self.ledger, settings.usage_flush_s)
        self.keep_content = settings.store_generations
        self._totals: dict[tuple[str, str], list[float]] = {}
        self._totals_seen = 0
        self._totals_lock = threading.Lock()

    def start(self) -> None:
        self.recorder.start()

    def close(self) -> None:
        self.recorder.close()

    # -- before and after a model call ----------------------------------------------------------
    def check(self, key_id: int | None, model_id: str, prompts: Sequence[Any] = ()) -> None:
        """BudgetExceeded if the key's budget is spent, or would be by these prompts' input alone."""
        if key_id is None or self.ledger.budget(key_id) is None:
            return
        tokens = sum(estimate_tokens(p) for p in prompts)
        try:
            self.ledger.check(key_id, self.prices.for_model(model_id).cost(tokens, 0), tokens)
        except BudgetExceeded:
            if self.metrics is not None:
                self.metrics.budget_rejections.labels(model_id).inc()
            raise

    def record(
        self,
        key_id: int | None,
        model_id: str,
        source: str,
        input_tokens: int,
        output_tokens: int,
        latency_ms: float,
        *,
        generation_id: str | None = None,
        job_id: str | None = None,
        prompt: Any = None,
        responses: list[str] | None = None,
        deployment: str | None = None,
        attempts: int | None = None,
        cached: bool = False,
    ) -> float:
        """Record one generation's usage; returns its cost in USD (0 for an answer from the cache)."""
        if key_id is None:
            return 0.0 if cached else self.prices.for_model(model_id).cost(input_tokens, output_tokens)
        content = None
        if self.keep_content and responses is not None:
            content = {"prompt": _plain(prompt), "responses": responses}
        event = self.event(key_id, model_id, source, input_tokens, output_tokens, latency_ms, job_id)
        event.generation_id, event.content = generation_id, content
        event.deployment, event.attempts, event.cached = deployment, attempts, cached
        if cached:
            event.cost_usd = 0.0
        self.recorder.record(event)
        request_context.usage(
            model_id, input_tokens, output_tokens, event.cost_usd, generation_id, deployment, attempts, cached
        )
        return event.cost_usd

    def event(
        self,
        key_id: int,
        model_id: str,
        source: str,
        input_tokens: int,
        output_tokens: int,
        latency_ms: float,
        job_id: str | None = None,
    ) -> UsageEvent:
        """One generation's usage row, priced (not recorded)."""
        return UsageEvent(
            key_id=key_id,
            model=model_id,
            source=source,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            latency_ms=round(latency_ms, 3),
            cost_usd=self.prices.for_model(model_id).cost(input_tokens, output_tokens),
            job_id=job_id,
        )

    # -- metrics ---------------------------------------------------------------------------------
    def totals(self) -> dict[tuple[str, str], list[float]]:
        """(model, source) -> [requests, input tokens, output tokens, cost] over every usage row any
        process wrote. Incremental: each call reads only the rows added since the last one."""
        self.recorder.flush()  # this process's buffered rows count at once
        with self._totals_lock:
            with self.db.session() as session:
                query = (
                    select(
                        UsageRecord.model,
                        UsageRecord.source,
                        func.count(),
                        func.sum(UsageRecord.input_tokens),
                        func.sum(UsageRecord.output_tokens),
                        func.sum(UsageRecord.cost_usd),
                        func.max(UsageRecord.id),
                    )
                    .where(UsageRecord.id > self._totals_seen)
                    .group_by(UsageRecord.model, UsageRecord.source)
                )
                for model, source, count, tokens_in, tokens_out, cost, last in session.execute(query):
                    entry = self._totals.setdefault((model, source), [0.0, 0.0, 0.0, 0.0])
                    for i, value in enumerate((count, tokens_in, tokens_out, cost)):
                        entry[i] += float(value or 0)
                    self._totals_seen = max(self._totals_seen, int(last))
            return {k: list(v) for k, v in self._totals.items()}

    # -- reports ---------------------------------------------------------------------------------
    def _grouped(
        self,
        principal: Principal,
        columns: Sequence[Any],
        start: datetime | None,
        end: datetime | None,
        key_name: str | None,
    ) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
        """Usage rows summed per value of ``columns`` over [start, end): a key sees its own, an admin all."""
        self.recorder.flush()  # this process's buffered rows count too
        query = (
            select(
                *columns,
                func.count(),
                func.coalesce(func.sum(UsageRecord.input_tokens), 0),
                func.coalesce(func.sum(UsageRecord.output_tokens), 0),
                func.coalesce(func.sum(UsageRecord.cost_usd), 0.0),
                func.coalesce(func.avg(UsageRecord.latency_ms), 0.0),
            )
            .select_from(UsageRecord)
            .outerjoin(ApiKey, ApiKey.id == UsageRecord.key_id)
            .group_by(*columns)
            .order_by(*columns)
        )
        if not principal.is_admin:
            if key_name is not None and key_name != principal.name:
                raise InvalidRequest("A key sees only its own usage", "drop key= or use an admin key")
            query = query.where(UsageRecord.key_id == principal.id)
        elif key_name is not None:
            query = query.where(_key_column == key_name)
        if start is not None:
            query = query.where(UsageRecord.created_at >= start)
        if end is not None:
            query = query.where(UsageRecord.created_at < end)
        rows = []
        n = len(columns)
        with self.db.session() as session:
            for row in session.execute(query):
                tokens_in, tokens_out = int(row[n + 1]), int(row[n + 2])
                totals = {
                    "requests": int(row[n]),
                    "input_tokens": tokens_in,
                    "output_tokens": tokens_out,
                    "total_tokens": tokens_in + tokens_out,
                    "cost_usd": round(float(row[n + 3]), 10),
                    "avg_latency_ms": round(float(row[n + 4]), 3),
                }
                rows.append((tuple(str(value) for value in row[:n]), totals))
        return rows

    def summary(
        self,
        principal: Principal,
        group_by: GroupBy,
        start: datetime | None,
        end: datetime | None,
        key_name: str | None = None,
    ) -> dict[str, Any]:
        """Usage grouped by key, model or day over [start, end): a key sees its own, an admin all."""
        column: Any = {"key": _key_column, "model": UsageRecord.model, "day": UsageRecord.day}[group_by]
        rows = [
            {"group": group, **totals} for (group,), totals in self._grouped(principal, [column], start, end, key_name)
        ]
        total: dict[str, Any] = {
            name: sum(r[name] for r in rows)
            for name in ("requests", "input_tokens", "output_tokens", "total_tokens", "cost_usd")
        }
        total["cost_usd"] = round(total["cost_usd"], 10)
        return {"group_by": group_by, "from": start, "to": end, "rows": rows, "total": total}

    def daily_by_model(
        self, principal: Principal, start: datetime | None, end: datetime | None, key_name: str | None = None
    ) -> list[dict[str, Any]]:
        """One row per (UTC day, model) with usage, the same sums ``summary`` reports per day or model."""
        columns = [UsageRecord.day, UsageRecord.model]
        return [
            {"day": day, "model": model, **totals}
            for (day, model), totals in self._grouped(principal, columns, start, end, key_name)
        ]

    def job_cost(self, job_id: str) -> float:
        """USD billed to a job (an SDG job or an evaluation) so far: the sum of its usage rows."""
        with self.db.session() as session:
            total = session.scalar(
                select(func.coalesce(func.sum(UsageRecord.cost_usd), 0.0)).where(UsageRecord.job_id == job_id)
            )
        return round(float(total or 0.0), 10)

    def budget_status(self, key_id: int) -> dict[str, Any]:
        budget = self.ledger.budget(key_id)
        spent = self.ledger.spent(key_id)
        if budget is None:
            return {"budget": None, "spent_usd": spent.usd, "spent_tokens": spent.tokens}
        start, reset = period_bounds(budget.period)
        return {
            "budget": {"usd": budget.usd, "tokens": budget.tokens, "period": budget.period},
            "period_start": start,
            "resets_at": reset,
            "spent_usd": round(spent.usd, 10),
            "spent_tokens": spent.tokens,
            "remaining_usd": None if budget.usd is None else round(max(budget.usd - spent.usd, 0.0), 10),
            "remaining_tokens": None if budget.tokens is None else max(budget.tokens - spent.tokens, 0),
        }


class UsageMeter:
    """Usage accounting for a job's generate calls (``winnow.sdg.stages.Meter``): the owner's budget
    is checked before each chunk; after it, one usage row per prompt is held against the budget and
    handed back, to be written with the chunk's checkpoint (``UsageRecorder.write_with``)."""

    def __init__(self, usage: UsageService, key_id: int, model_id: str, source: str, job_id: str) -> None:
        self.usage, self.key_id, self.model_id, self.source, self.job_id = usage, key_id, model_id, source, job_id
        self._held: list[UsageEvent] = []  # counted against the budget, maybe not written yet

    def check(self, prompts: Sequence[Any]) -> None:
        self.usage.check(self.key_id, self.model_id, prompts)

    def record(
        self, prompts: Sequence[Any], results: Sequence[GenerationResult], elapsed_ms: float
    ) -> list[UsageEvent]:
        events = [
            self.usage.event(
                self.key_id,
                self.model_id,
                self.source,
                result.input_tokens,
                result.output_tokens,
                result.latency_ms if result.latency_ms is not None else elapsed_ms,
                self.job_id,
            )
            for result in results
            if result.error is None
        ]
        for event in events:
            self.usage.recorder.hold(event)
        self._held = [e for e in (*self._held, *events) if e.budgeted]
        return events

    def close(self) -> None:
        """The run ended: what it held and never wrote (a chunk generated but not checkpointed, which
        whoever redoes it bills) stops counting against the owner's budget."""
        self.usage.recorder.release(self._held)
        self._held = []


def _plain(prompt: Any) -> Any:
    """A prompt as JSON: a string, or a list of {role, content}."""
    if prompt is None or isinstance(prompt, str):
        return prompt
    return [
        m if isinstance(m, dict) else {"role": getattr(m, "role", "user"), "content": getattr(m, "content", "")}
        for m in prompt
    ]

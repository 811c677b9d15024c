"""What the console's overview and keys page read: API calls apart from job traffic, the API's
latency percentiles (logged calls only, never job batches), spend by day, key and model, and each
key's spend and last call."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from winnow.auth import Principal
from winnow.db import ApiKey, Database, UsageRecord
from winnow.requests.log import RequestLog
from winnow.requests.table import RequestRecord
from winnow.usage.service import CLI_KEY_NAME

API_SOURCES = ("api", "v1")  # usage rows of API calls; every other source is a job's (job, eval, cli)
MAX_SAMPLES = 200_000  # the newest calls the percentiles are taken over


def percentile(ordered: list[float], q: float) -> float | None:
    """The nearest-rank ``q`` percentile (0..100) of sorted values."""
    if not ordered:
        return None
    rank = max(1, -(-len(ordered) * q // 100))  # ceil
    return round(ordered[int(rank) - 1], 3)


class RequestStats:
    def __init__(self, db: Database, log: RequestLog, flush_usage: Any) -> None:
        self.db, self.log, self.flush_usage = db, log, flush_usage

    def summary(self, principal: Principal, since: datetime) -> dict[str, Any]:
        self.log.flush()
        self.flush_usage()
        with self.db.session() as session:
            return {
                "since": since,
                "api": self._latency(session, principal, since),
                "traffic": self._traffic(session, principal, since),
                "spend": self._spend(session, principal, since),
                "keys": self._keys(session, principal, since),
            }

    def _latency(self, session: Any, principal: Principal, since: datetime) -> dict[str, Any]:
        query = select(RequestRecord.latency_ms, RequestRecord.ttft_ms, RequestRecord.status).where(
            RequestRecord.created_at >= since
        )
        if not principal.is_admin:
            query = query.where(RequestRecord.key_id == principal.id)
        rows = session.execute(query.order_by(RequestRecord.created_at.desc()).limit(MAX_SAMPLES)).all()
        latency = sorted(r[0] for r in rows)
        ttft = sorted(r[1] for r in rows if r[1] is not None)
        return {
            "requests": len(rows),
            "errors": sum(1 for r in rows if r[2] >= 400),
            **{f"p{q}_ms": percentile(latency, q) for q in (50, 95, 99)},
            "ttft_p50_ms": percentile(ttft, 50),
        }

    def _usage(self, principal: Principal, since: datetime, *columns: Any) -> Any:
        query = (
            select(*columns, func.count(), func.coalesce(func.sum(UsageRecord.cost_usd), 0.0))
            .select_from(UsageRecord)
            .outerjoin(ApiKey, ApiKey.id == UsageRecord.key_id)
            .where(UsageRecord.created_at >= since)
            .group_by(*columns)
            .order_by(*columns)
        )
        return query if principal.is_admin else query.where(UsageRecord.key_id == principal.id)

    def _traffic(self, session: Any, principal: Principal, since: datetime) -> list[dict[str, Any]]:
        requests = {"api": 0, "jobs": 0}
        cost_usd = {"api": 0.0, "jobs": 0.0}
        for source, count, cost in session.execute(self._usage(principal, since, UsageRecord.source)):
            kind = "api" if source in API_SOURCES else "jobs"
            requests[kind] += int(count)
            cost_usd[kind] += float(cost)
        return [{"kind": k, "requests": requests[k], "cost_usd": round(cost_usd[k], 10)} for k in requests]

    def _spend(self, session: Any, principal: Principal, since: datetime) -> list[dict[str, Any]]:
        key = func.coalesce(ApiKey.name, CLI_KEY_NAME)
        query = self._usage(principal, since, UsageRecord.day, key, UsageRecord.model)
        return [
            {"day": day, "key": name, "model": model, "requests": int(n), "cost_usd": round(float(cost), 10)}
            for day, name, model, n, cost in session.execute(query)
        ]

    def _keys(self, session: Any, principal: Principal, since: datetime) -> list[dict[str, Any]]:
        spent = {
            name: round(float(cost), 10)
            for name, _n, cost in session.execute(self._usage(principal, since, func.coalesce(ApiKey.name, "")))
        }
        last = select(ApiKey.name, func.max(RequestRecord.created_at)).join(ApiKey, ApiKey.id == RequestRecord.key_id)
        if not principal.is_admin:
            last = last.where(RequestRecord.key_id == principal.id)
        used = dict(session.execute(last.group_by(ApiKey.name)).tuples().all())
        names = sorted((set(spent) | set(used)) - {""})
        return [{"key": n, "cost_usd": spent.get(n, 0.0), "last_used": used.get(n)} for n in names]

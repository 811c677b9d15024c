"""The request log's table: one row per logged API call (``winnow.requests.log`` writes it)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from winnow.db.tables import Base, utcnow


class RequestRecord(Base):
    """One API call: who, which model and deployment, the router's attempts, status, timings,
    tokens and cost, and, where enabled, its bodies (redacted, capped)."""

    __tablename__ = "request_log"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    request_id: Mapped[str] = mapped_column(String(128))
    key_id: Mapped[int | None] = mapped_column(Integer, default=None)  # None: no valid key (a 401)
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(200))
    model: Mapped[str | None] = mapped_column(String(200), default=None)
    deployment: Mapped[str | None] = mapped_column(String(128), default=None)
    attempts: Mapped[int | None] = mapped_column(Integer, default=None)
    attempt_log: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, default=None)
    cached: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[int] = mapped_column(Integer)
    error_code: Mapped[str | None] = mapped_column(String(64), default=None)
    latency_ms: Mapped[float] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float, default=None)
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    generation_id: Mapped[str | None] = mapped_column(String(64), default=None)
    request_body: Mapped[str | None] = mapped_column(Text, default=None)
    response_body: Mapped[str | None] = mapped_column(Text, default=None)

    __table_args__ = (
        Index("ix_request_log_key_created", "key_id", "created_at"),
        Index("ix_request_log_created_at", "created_at"),
    )

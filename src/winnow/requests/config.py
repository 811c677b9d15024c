"""The request log's settings (``request_log`` in Winnow's configuration)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class RequestLogConfig(BaseModel):
    enabled: bool = Field(True, description="Log every /v1 and /api/v1/generate(/batch) call")
    flush_s: float = Field(1.0, gt=0, description="How often buffered log rows are written")
    retention_days: float = Field(30.0, gt=0, description="Rows older than this are deleted")
    sweep_s: float = Field(3600.0, gt=0, description="How often retention is applied")
    bodies: bool = Field(False, description="Store every call's request and response bodies")
    body_keys: list[str] = Field(
        default_factory=list, description="Names of keys whose calls' bodies are stored (models: log_bodies)"
    )
    body_max_bytes: int = Field(16384, ge=0, description="Each stored body is cut to this many bytes")
    body_retention_days: float = Field(7.0, gt=0, description="Stored bodies are cleared after this")

"""Types shared by every wire schema."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer


def now_utc() -> datetime:
    return datetime.now(UTC)


def _iso_z(value: datetime) -> str:
    value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ISO 8601 in UTC with a trailing Z, as the spec's examples write it.
Timestamp = Annotated[datetime, PlainSerializer(_iso_z, return_type=str, when_used="json")]


class WireModel(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


class RequestModel(WireModel):
    """A request body. Numbers follow JSON Schema (5.0 is an integer); booleans are strict (see
    ``StrictBool`` fields) and strings are never made from numbers."""


class ErrorResponse(WireModel):
    """The spec's standard error body, returned by every error path."""

    error: str = Field(description="Error code", examples=["validation_error"])
    message: str = Field(description="Human readable error message")
    details: str | None = Field(default=None, description="Additional error details")
    timestamp: Timestamp = Field(default_factory=now_utc)


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIErrorResponse(BaseModel):
    """The error body on the OpenAI-compatible ``/v1`` surface, as OpenAI clients expect it."""

    error: OpenAIErrorDetail

"""Types shared by every wire schema."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer


def now_utc() -> datetime:
    return datetime.now(UTC)


def _iso_z(value: datetime) -> str:
    value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ISO 8601 in UTC with a trailing Z, as the spec's examples write it.
Timestamp = Annotated[datetime, PlainSerializer(_iso_z, return_type=str, when_used="json")]


class WireModel(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


def _integral(value: object) -> object:
    """JSON Schema's integers: 5.0 is one (JSON has one number type); 5.5, "5" and true are not."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


integral = BeforeValidator(_integral)

# An integer field of a request body (use it for every ``int`` of a RequestModel: strict mode alone
# would refuse 5.0). Constraints of an optional integer go inside, before ``integral``, so that the
# JSON Schema states them (``Annotated[int, Field(ge=0), integral] | None``).
Int = Annotated[int, integral]

# Seeds: any non-negative integer (a microsecond timestamp, 2**64, ...). Engines use a seed, and the
# seeds derived from it, modulo 2**63 (``winnow.models.base.engine_seed``), so none overflows.
Seed = Annotated[int, Field(ge=0), integral]


class CursorPage(WireModel):
    """What every list adds to its items, as OpenAI's lists do: whether older items follow, and the
    ids of the first and last item (pass ``last_id`` as ``after`` for the next page)."""

    has_more: bool = Field(default=False, description="More items follow this page: ask again with after=last_id")
    first_id: str | None = Field(default=None, description="The id of the page's first (newest) item")
    last_id: str | None = Field(default=None, description="The id of the page's last (oldest) item")


class RequestModel(WireModel):
    """A request body, typed strictly: unknown fields are refused (a typo is an error, not a default),
    numbers are never made from strings nor booleans from anything but ``true``/``false``, and an
    integer may be written ``5`` or ``5.0`` (see ``Int``)."""

    model_config = ConfigDict(extra="forbid", strict=True)


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

"""Wire models of Winnow's key-management routes (``/api/v1/keys``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictBool

from winnow.schemas.common import RequestModel, Timestamp, WireModel, integral

RATE_CLASSES = ("generation", "batch", "other")


# One limit in the `limits` library's notation: "100/minute", "5 per second", "1000/2 hours".
LIMIT_PATTERN = r"^[1-9][0-9]{0,8} *(/|per) *([1-9][0-9]{0,5} *)?(second|minute|hour|day|month|year)s?$"


class KeyRateLimits(RequestModel):
    """Per-class overrides of the server's default limits; unset classes keep the default."""

    generation: str | None = Field(default=None, pattern=LIMIT_PATTERN, examples=["200/minute"])
    batch: str | None = Field(default=None, pattern=LIMIT_PATTERN)
    other: str | None = Field(default=None, pattern=LIMIT_PATTERN)


class KeyBudget(RequestModel):
    """A spend cap: USD and/or tokens per UTC calendar day, month, or in total. Requests that would
    go over it get 402 ``budget_exceeded`` before any model is called; jobs pause until it allows.
    With neither usd nor tokens set there is no cap."""

    usd: float | None = Field(default=None, ge=0, le=1e12, examples=[10.0])
    tokens: Annotated[int, Field(ge=0, le=10**15), integral] | None = Field(default=None, examples=[1_000_000])
    period: Literal["day", "month", "total"] = "month"


# At most 10**15 (a petabyte): below 2**53, so a JSON Schema checker reading it as a float agrees.
QuotaBytes = Annotated[int, Field(ge=0, le=10**15), integral]


class KeyStorageQuota(RequestModel):
    """Bytes of uploads (``/api/v1/files``) a key may keep, instead of the server's storage_quota_bytes."""

    bytes: QuotaBytes = Field(examples=[10 * 1024**3])


class KeyCreateRequest(RequestModel):
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")
    admin: StrictBool = False
    rate_limits: KeyRateLimits | None = None
    budget: KeyBudget | None = None
    storage_quota_bytes: QuotaBytes | None = Field(default=None, description="Unset: the server's default")


class KeyInfo(WireModel):
    id: int
    name: str
    prefix: str = Field(description="First characters of the key, to tell keys apart")
    admin: bool
    rate_limits: dict[str, str] | None = None
    budget: KeyBudget | None = None
    storage_quota_bytes: int | None = Field(
        default=None, description="The key's own upload quota; null: the server's storage_quota_bytes"
    )
    created_at: Timestamp
    revoked_at: Timestamp | None = None


class KeyCreated(KeyInfo):
    key: str = Field(description="The secret. Shown once; only its hash is stored.")


class KeyList(WireModel):
    keys: list[KeyInfo]
    count: int
    timestamp: Timestamp

"""Wire schemas of the request log (``GET /api/v1/requests``, ``GET /api/v1/requests/{id}``)."""

from __future__ import annotations

from pydantic import Field

from winnow.schemas.common import CursorPage, Timestamp, WireModel


class Attempt(WireModel):
    """One call the router made to an upstream deployment for this request."""

    model: str = Field(description="The model whose deployment was called (a fallback's own)")
    deployment: str
    start_ms: float = Field(description="When the call began, from the request's arrival")
    duration_ms: float
    error: str | None = Field(default=None, description="Why it failed (an error code); null: it answered")


class RequestSummary(WireModel):
    """One logged call, as lists show it (no bodies)."""

    id: str = Field(description="The log row's id (req_...)")
    object: str = "request"
    created_at: Timestamp
    request_id: str = Field(description="The call's X-Request-Id")
    key: str | None = Field(default=None, description="The calling key's name; null: no valid key (a 401)")
    method: str
    path: str
    model: str | None = None
    deployment: str | None = Field(default=None, description="The upstream deployment that answered")
    attempts: int | None = Field(default=None, description="Upstream calls it took (retries and fallbacks)")
    cached: bool = Field(default=False, description="Answered from the response cache")
    status: int = Field(description="The HTTP status answered")
    error_code: str | None = Field(default=None, description="The error body's code, for a status >= 400")
    latency_ms: float
    ttft_ms: float | None = Field(default=None, description="Time to the response body's first byte")
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    generation_id: str | None = Field(default=None, description="The generation id that feedback refers to")
    bodies_stored: bool = Field(default=False, description="The request and response bodies are kept")


class RequestDetail(RequestSummary):
    """One logged call with the router's attempts and, when stored, its bodies (redacted, capped)."""

    attempt_log: list[Attempt] = Field(default_factory=list)
    request_body: str | None = None
    response_body: str | None = None


class RequestList(CursorPage):
    object: str = "list"
    data: list[RequestSummary]


class ApiLatency(WireModel):
    """Logged API calls in the window (never job traffic): how many, how many failed, how fast."""

    requests: int
    errors: int
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    ttft_p50_ms: float | None = None


class Traffic(WireModel):
    kind: str = Field(description="api (/v1 and /generate calls) or jobs (SDG jobs, evaluations, CLI runs)")
    requests: int = Field(description="Generations billed")
    cost_usd: float


class Spend(WireModel):
    day: str
    key: str
    model: str
    requests: int
    cost_usd: float


class KeySpend(WireModel):
    key: str
    cost_usd: float = Field(description="Spend in the window")
    last_used: Timestamp | None = Field(default=None, description="The key's newest logged call")


class RequestStats(WireModel):
    """The overview's figures over the window since ``since``; a key sees its own, an admin all."""

    since: Timestamp
    api: ApiLatency
    traffic: list[Traffic]
    spend: list[Spend]
    keys: list[KeySpend]

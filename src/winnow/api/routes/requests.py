"""``/requests``: the request log, every /v1 and /generate call of the key (an admin's: all keys')."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import Query
from starlette.concurrency import run_in_threadpool

from winnow.api.deps import OtherKey, PageDep, RuntimeDep
from winnow.api.routes.usage import utc
from winnow.api.routing import Router
from winnow.requests.query import RequestFilter, RequestQuery
from winnow.requests.stats import RequestStats as Stats
from winnow.schemas.common import ErrorResponse
from winnow.schemas.requests import RequestDetail, RequestList, RequestStats

router = Router(prefix="/requests", tags=["Request log"])


@router.get(
    "",
    summary="Logged API calls, newest first, a page at a time (Winnow's extension)",
    description=(
        "Every `/v1` and `/api/v1/generate(/batch)` call, failed ones too: key, model, deployment, the router's "
        "attempts, cache hit, status and error code, latency, time to first byte, tokens, cost, the generation id "
        "feedback refers to. A key sees its own calls; an admin sees all and may name one key."
    ),
    response_model=RequestList,
    responses={
        400: {"model": ErrorResponse, "description": "A bad filter or cursor, or another key's calls asked by a key"},
        404: {"model": ErrorResponse, "description": "No key has the name given as key"},
    },
)
async def list_requests(  # noqa: PLR0913 (a route: each parameter is one query filter)
    runtime: RuntimeDep,
    principal: OtherKey,
    cursor: PageDep,
    key: str | None = Query(None, max_length=200, description="Admin only: one key's calls (its name)"),
    model: str | None = Query(None, max_length=200, description="Calls to this model"),
    status: str | None = Query(
        None, pattern="^(ok|error|[1-5][0-9][0-9])$", description="ok (< 400), error (>= 400), or a status code"
    ),
    since: datetime | None = Query(None, description="Calls at or after this time (ISO 8601)"),
    until: datetime | None = Query(None, description="Calls before this time (ISO 8601)"),
    q: str | None = Query(
        None, max_length=200, description="Text in the stored bodies (only calls whose bodies are kept)"
    ),
) -> RequestList:
    where = RequestFilter(key, model, status, utc(since), utc(until), q or None)
    return await run_in_threadpool(RequestQuery(runtime.db, runtime.requests).list, principal, where, cursor)


@router.get(
    "/stats",
    summary="API calls apart from job traffic, API latency percentiles, spend by day, key and model",
    response_model=RequestStats,
)
async def request_stats(
    runtime: RuntimeDep,
    principal: OtherKey,
    days: int = Query(14, ge=1, le=366, description="The window: this many days back from now"),
) -> RequestStats:
    since = datetime.now(UTC) - timedelta(days=days)
    stats = Stats(runtime.db, runtime.requests, runtime.usage.recorder.flush)
    return RequestStats.model_validate(await run_in_threadpool(stats.summary, principal, since))


_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No call of this key has this id"}
}


@router.get(
    "/{request_id}",
    summary="One logged call with the router's attempts and, where stored, its bodies (Winnow's extension)",
    response_model=RequestDetail,
    responses=_NOT_FOUND,
)
async def get_request(request_id: str, runtime: RuntimeDep, principal: OtherKey) -> RequestDetail:
    return await run_in_threadpool(RequestQuery(runtime.db, runtime.requests).get, principal, request_id)

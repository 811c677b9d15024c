"""Annotated dependencies: the runtime, the caller's key, per-class rate limits, admin-only.

All are ``async def``: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop
per dependency per request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from winnow.auth import Principal
from winnow.config import Settings
from winnow.db.paging import Cursor
from winnow.errors import AuthenticationFailed, PermissionDenied
from winnow.jobs.store import JobFilter
from winnow.models.registry import acting_for
from winnow.requests import context as request_context
from winnow.runtime import Runtime


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_settings(runtime: RuntimeDep) -> Settings:
    return runtime.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def authenticate(runtime: Runtime, header: str | None) -> Principal:
    """The Principal behind an ``Authorization: Bearer <key>`` header; 401 when missing, malformed or unknown."""
    if not header:
        raise AuthenticationFailed("Missing API key", "send 'Authorization: Bearer <key>'")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise AuthenticationFailed("Malformed Authorization header", "expected 'Bearer <key>'")
    secret = secret.strip()
    principal = runtime.keys.from_cache(secret)
    if principal is None:
        principal = await run_in_threadpool(runtime.keys.authenticate, secret)
    acting_for(principal.id, principal.is_admin)  # model lookups from here on see what this key may
    request_context.key(principal.id)  # the request log's caller
    return principal


async def current_key(request: Request, runtime: RuntimeDep) -> Principal:
    """The caller's key (see ``authenticate``), named in the access log."""
    principal = await authenticate(runtime, request.headers.get("authorization"))
    request.state.key_name = principal.name
    return principal


CurrentKey = Annotated[Principal, Depends(current_key)]


def rate_limited(klass: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency that authenticates, then counts the request against ``klass``'s limit."""

    async def dependency(request: Request, principal: CurrentKey, runtime: RuntimeDep) -> Principal:
        state = await runtime.limiter.hit(principal, klass)
        # The request middleware adds these to whatever response goes out (streams included).
        request.state.rate_limit_headers = state.headers()
        return principal

    dependency.__name__ = f"rate_limited_{klass}"
    return dependency


GenerationKey = Annotated[Principal, Depends(rate_limited("generation"))]
BatchKey = Annotated[Principal, Depends(rate_limited("batch"))]
OtherKey = Annotated[Principal, Depends(rate_limited("other"))]


async def admin_key(principal: OtherKey) -> Principal:
    if not principal.is_admin:
        raise PermissionDenied("This route needs an admin key", f"key {principal.name!r} is not an admin")
    return principal


AdminKey = Annotated[Principal, Depends(admin_key)]

# The ``status`` filter of job and evaluation listings: a stored job's statuses.
JobStatusQuery = Annotated[str | None, Query(pattern="^(queued|running|paused|completed|failed|cancelled)$")]


async def page_cursor(
    limit: int = Query(100, ge=1, le=1000, description="Items per page"),
    after: str | None = Query(
        None, min_length=1, max_length=64, description="The last_id of the previous page: the items older than it"
    ),
) -> Cursor:
    return Cursor(limit=limit, after=after)


# ``limit`` and ``after`` of every list (newest first; ``has_more``, ``first_id``, ``last_id`` answer).
PageDep = Annotated[Cursor, Depends(page_cursor)]


async def job_filter(
    status: JobStatusQuery = None,
    model: str | None = Query(None, min_length=1, max_length=200, description="Jobs that use this model"),
    created_after: datetime | None = Query(None, description="Jobs created at or after this time (ISO 8601)"),
    created_before: datetime | None = Query(None, description="Jobs created before this time (ISO 8601)"),
) -> JobFilter:
    return JobFilter(status=status, model=model, created_after=created_after, created_before=created_before)


# The filters of the job lists (SDG jobs, evaluations, fine-tuning jobs).
JobFilterDep = Annotated[JobFilter, Depends(job_filter)]

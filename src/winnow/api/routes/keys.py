"""Admin-only key management over HTTP (the CLI's ``winnow keys`` does the same locally)."""

from __future__ import annotations

from typing import Any

from fastapi import Query

from winnow.api.deps import AdminKey, RuntimeDep
from winnow.api.routing import Router
from winnow.schemas.common import ErrorResponse, now_utc
from winnow.schemas.keys import KeyBudget, KeyCreated, KeyCreateRequest, KeyInfo, KeyList, KeyStorageQuota

router = Router(
    prefix="/keys",
    tags=["Keys"],
    responses={403: {"model": ErrorResponse, "description": "The key is not an admin key"}},
)


@router.post(
    "",
    summary="Create an API key",
    response_model=KeyCreated,
    status_code=201,
    responses={409: {"model": ErrorResponse, "description": "A live key has this name"}},
)
def create_key(body: KeyCreateRequest, runtime: RuntimeDep, _admin: AdminKey) -> KeyCreated:
    limits = body.rate_limits.model_dump(exclude_none=True) if body.rate_limits else None
    created = runtime.keys.create(
        body.name,
        admin=body.admin,
        rate_limits=limits,
        budget=body.budget,
        storage_quota_bytes=body.storage_quota_bytes,
    )
    runtime.apply_budget(created)
    return created


_NO_KEY: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse, "description": "No live key with this name"}}


@router.put("/{name}/budget", summary="Set a key's budget", response_model=KeyInfo, responses=_NO_KEY)
def set_budget(name: str, body: KeyBudget, runtime: RuntimeDep, _admin: AdminKey) -> KeyInfo:
    info = runtime.keys.set_budget(name, body)
    runtime.apply_budget(info)
    return info


@router.delete("/{name}/budget", summary="Remove a key's budget", response_model=KeyInfo, responses=_NO_KEY)
def clear_budget(name: str, runtime: RuntimeDep, _admin: AdminKey) -> KeyInfo:
    info = runtime.keys.set_budget(name, None)
    runtime.apply_budget(info)
    return info


@router.put(
    "/{name}/storage_quota",
    summary="Set a key's upload quota (bytes of /files it may keep)",
    response_model=KeyInfo,
    responses=_NO_KEY,
)
def set_storage_quota(name: str, body: KeyStorageQuota, runtime: RuntimeDep, _admin: AdminKey) -> KeyInfo:
    return runtime.keys.set_storage_quota(name, body.bytes)


@router.delete(
    "/{name}/storage_quota",
    summary="Give a key the server's default upload quota again",
    response_model=KeyInfo,
    responses=_NO_KEY,
)
def clear_storage_quota(name: str, runtime: RuntimeDep, _admin: AdminKey) -> KeyInfo:
    return runtime.keys.set_storage_quota(name, None)


@router.get("", summary="List API keys", response_model=KeyList)
def list_keys(runtime: RuntimeDep, _admin: AdminKey, include_revoked: bool = Query(False)) -> KeyList:
    keys = runtime.keys.list(include_revoked=include_revoked)
    return KeyList(keys=keys, count=len(keys), timestamp=now_utc())


@router.delete(
    "/{name}",
    summary="Revoke an API key",
    response_model=KeyInfo,
    responses={
        404: {"model": ErrorResponse, "description": "No live key has this name"},
        409: {"model": ErrorResponse, "description": "It is the last live admin key"},
    },
)
def revoke_key(name: str, runtime: RuntimeDep, _admin: AdminKey) -> KeyInfo:
    return runtime.keys.revoke(name)

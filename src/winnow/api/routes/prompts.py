"""``/prompts`` (a Winnow extension): a key's named prompts, their immutable versions and labels.
No route changes a version: a new one is added instead."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Query
from starlette.concurrency import run_in_threadpool

from winnow.api.deps import OtherKey, PageDep, RuntimeDep
from winnow.api.routing import Router
from winnow.schemas.common import ErrorResponse
from winnow.schemas.prompts import (
    EXTENSION,
    LABEL_PATTERN,
    MAX_VERSION,
    NAME_PATTERN,
    LabelMove,
    PromptCreate,
    PromptDeleted,
    PromptDiff,
    PromptInfo,
    PromptList,
    PromptVersionCreate,
    PromptVersionInfo,
    PromptVersionList,
)

router = Router(
    prefix="/prompts",
    tags=["Prompts"],
    responses={404: {"model": ErrorResponse, "description": "The key has no prompt (or version, label) of this name"}},
)

NamePath = Annotated[str, Path(pattern=NAME_PATTERN, description="The prompt's name")]
LabelPath = Annotated[str, Path(pattern=LABEL_PATTERN, description="The label")]
VersionPath = Annotated[int, Path(ge=1, le=MAX_VERSION, description="The version's number")]
_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorResponse, "description": "The key has a prompt of this name"}
}


@router.post(
    "",
    summary="Create a prompt with its first version (Winnow extension)",
    response_model=PromptInfo,
    status_code=201,
    responses=_CONFLICT,
    openapi_extra=EXTENSION,
)
async def create_prompt(body: PromptCreate, runtime: RuntimeDep, key: OtherKey) -> PromptInfo:
    return await run_in_threadpool(runtime.prompts.create, key.id, body)


@router.get(
    "", summary="The key's prompts, newest first (Winnow extension)", response_model=PromptList, openapi_extra=EXTENSION
)
async def list_prompts(runtime: RuntimeDep, key: OtherKey, page: PageDep) -> PromptList:
    return await run_in_threadpool(runtime.prompts.list, key.id, page)


@router.get(
    "/{name}",
    summary="A prompt: its labels and latest version (Winnow extension)",
    response_model=PromptInfo,
    openapi_extra=EXTENSION,
)
async def get_prompt(name: NamePath, runtime: RuntimeDep, key: OtherKey) -> PromptInfo:
    return await run_in_threadpool(runtime.prompts.get, key.id, name)


@router.delete(
    "/{name}",
    summary="Delete a prompt with every version and label (Winnow extension)",
    response_model=PromptDeleted,
    openapi_extra=EXTENSION,
)
async def delete_prompt(name: NamePath, runtime: RuntimeDep, key: OtherKey) -> PromptDeleted:
    return await run_in_threadpool(runtime.prompts.delete, key.id, name)


@router.post(
    "/{name}/versions",
    summary="Add a version (versions are immutable: this is how a prompt changes) (Winnow extension)",
    response_model=PromptVersionInfo,
    status_code=201,
    openapi_extra=EXTENSION,
)
async def add_version(
    name: NamePath, body: PromptVersionCreate, runtime: RuntimeDep, key: OtherKey
) -> PromptVersionInfo:
    return await run_in_threadpool(runtime.prompts.add_version, key.id, name, body)


@router.get(
    "/{name}/versions",
    summary="A prompt's versions, newest first (Winnow extension)",
    response_model=PromptVersionList,
    openapi_extra=EXTENSION,
)
async def list_versions(name: NamePath, runtime: RuntimeDep, key: OtherKey, page: PageDep) -> PromptVersionList:
    return await run_in_threadpool(runtime.prompts.versions, key.id, name, page)


@router.get(
    "/{name}/versions/{version}",
    summary="One version of a prompt (Winnow extension)",
    response_model=PromptVersionInfo,
    openapi_extra=EXTENSION,
)
async def get_version(name: NamePath, version: VersionPath, runtime: RuntimeDep, key: OtherKey) -> PromptVersionInfo:
    return await run_in_threadpool(runtime.prompts.version, key.id, name, version)


@router.get(
    "/{name}/diff",
    summary="Two versions compared line by line, field by field (Winnow extension)",
    response_model=PromptDiff,
    openapi_extra=EXTENSION,
)
async def diff_versions(
    name: NamePath,
    runtime: RuntimeDep,
    key: OtherKey,
    before: Annotated[int, Query(alias="from", ge=1, le=MAX_VERSION, description="The older version")],
    after: Annotated[int, Query(alias="to", ge=1, le=MAX_VERSION, description="The newer version")],
) -> PromptDiff:
    return await run_in_threadpool(runtime.prompts.diff, key.id, name, before, after)


@router.put(
    "/{name}/labels/{label}",
    summary="Point a label at a version (made if new; it leaves the version it was on) (Winnow extension)",
    response_model=PromptInfo,
    openapi_extra=EXTENSION,
)
async def move_label(
    name: NamePath, label: LabelPath, body: LabelMove, runtime: RuntimeDep, key: OtherKey
) -> PromptInfo:
    return await run_in_threadpool(runtime.prompts.move_label, key.id, name, label, body.version)


@router.delete(
    "/{name}/labels/{label}",
    summary="Remove a label from a prompt (Winnow extension)",
    response_model=PromptInfo,
    openapi_extra=EXTENSION,
)
async def remove_label(name: NamePath, label: LabelPath, runtime: RuntimeDep, key: OtherKey) -> PromptInfo:
    return await run_in_threadpool(runtime.prompts.remove_label, key.id, name, label)

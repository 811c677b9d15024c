"""``client.prompts``: the prompt registry (named prompts, immutable versions, labels), sync and async."""

from __future__ import annotations

from typing import Any, TypedDict, Unpack
from urllib.parse import quote

from winnow.client._http import AsyncAPIClient, Call, SyncAPIClient
from winnow.schemas.prompts import (
    PromptDeleted,
    PromptDiff,
    PromptInfo,
    PromptList,
    PromptParams,
    PromptVersionInfo,
    PromptVersionList,
)


class VersionParams(TypedDict, total=False):
    """``PromptVersionCreate`` besides the template: what a version may carry."""

    system: str | None
    params: PromptParams | dict[str, Any]
    model: str | None
    message: str | None
    labels: list[str]
    metadata: dict[str, Any]


def _path(name: str, *rest: str | int) -> str:
    return "/".join(["/prompts", quote(name, safe=""), *(quote(str(part), safe="") for part in rest)])


def _body(template: str, options: VersionParams) -> dict[str, Any]:
    body: dict[str, Any] = {"template": template, **options}
    if isinstance(body.get("params"), PromptParams):
        body["params"] = body["params"].model_dump(exclude_none=True)
    return body


def _create(name: str, template: str, description: str | None, options: VersionParams) -> Call[PromptInfo]:
    body = {"name": name, **_body(template, options)}
    if description is not None:
        body["description"] = description
    return Call("POST", "/prompts", PromptInfo, body=body)


def _list(limit: int | None, after: str | None) -> Call[PromptList]:
    return Call("GET", "/prompts", PromptList, params={"limit": limit, "after": after})


def _versions(name: str, limit: int | None, after: str | None) -> Call[PromptVersionList]:
    return Call("GET", _path(name, "versions"), PromptVersionList, params={"limit": limit, "after": after})


def _label(name: str, label: str, version: int | None) -> Call[PromptInfo]:
    if version is None:
        return Call("DELETE", _path(name, "labels", label), PromptInfo)
    return Call("PUT", _path(name, "labels", label), PromptInfo, body={"version": version})


def _diff(name: str, before: int, after: int) -> Call[PromptDiff]:
    return Call("GET", _path(name, "diff"), PromptDiff, params={"from": before, "to": after})


class Prompts:
    def __init__(self, client: SyncAPIClient) -> None:
        self._client = client

    def create(
        self, name: str, template: str, *, description: str | None = None, **options: Unpack[VersionParams]
    ) -> PromptInfo:
        """A new prompt with ``template`` (``{field}`` placeholders) as its version 1."""
        return self._client.fetch(_create(name, template, description, options))

    def list(self, *, limit: int | None = None, after: str | None = None) -> PromptList:
        """The key's prompts, newest first, a page at a time (``after``: the last id of the page before)."""
        return self._client.fetch(_list(limit, after))

    def retrieve(self, name: str) -> PromptInfo:
        return self._client.fetch(Call("GET", _path(name), PromptInfo))

    def add_version(self, name: str, template: str, **options: Unpack[VersionParams]) -> PromptVersionInfo:
        """The prompt's next version (versions are immutable: this is how a prompt changes)."""
        return self._client.fetch(
            Call("POST", _path(name, "versions"), PromptVersionInfo, body=_body(template, options))
        )

    def versions(self, name: str, *, limit: int | None = None, after: str | None = None) -> PromptVersionList:
        return self._client.fetch(_versions(name, limit, after))

    def version(self, name: str, version: int) -> PromptVersionInfo:
        return self._client.fetch(Call("GET", _path(name, "versions", version), PromptVersionInfo))

    def set_label(self, name: str, label: str, version: int) -> PromptInfo:
        """Point ``label`` at ``version`` (it leaves the version it was on)."""
        return self._client.fetch(_label(name, label, version))

    def remove_label(self, name: str, label: str) -> PromptInfo:
        return self._client.fetch(_label(name, label, None))

    def diff(self, name: str, before: int, after: int) -> PromptDiff:
        return self._client.fetch(_diff(name, before, after))

    def delete(self, name: str) -> PromptDeleted:
        return self._client.fetch(Call("DELETE", _path(name), PromptDeleted))


class AsyncPrompts:
    def __init__(self, client: AsyncAPIClient) -> None:
        self._client = client

    async def create(
        self, name: str, template: str, *, description: str | None = None, **options: Unpack[VersionParams]
    ) -> PromptInfo:
        """A new prompt with ``template`` (``{field}`` placeholders) as its version 1."""
        return await self._client.fetch(_create(name, template, description, options))

    async def list(self, *, limit: int | None = None, after: str | None = None) -> PromptList:
        return await self._client.fetch(_list(limit, after))

    async def retrieve(self, name: str) -> PromptInfo:
        return await self._client.fetch(Call("GET", _path(name), PromptInfo))

    async def add_version(self, name: str, template: str, **options: Unpack[VersionParams]) -> PromptVersionInfo:
        call = Call("POST", _path(name, "versions"), PromptVersionInfo, body=_body(template, options))
        return await self._client.fetch(call)

    async def versions(self, name: str, *, limit: int | None = None, after: str | None = None) -> PromptVersionList:
        return await self._client.fetch(_versions(name, limit, after))

    async def version(self, name: str, version: int) -> PromptVersionInfo:
        return await self._client.fetch(Call("GET", _path(name, "versions", version), PromptVersionInfo))

    async def set_label(self, name: str, label: str, version: int) -> PromptInfo:
        return await self._client.fetch(_label(name, label, version))

    async def remove_label(self, name: str, label: str) -> PromptInfo:
        return await self._client.fetch(_label(name, label, None))

    async def diff(self, name: str, before: int, after: int) -> PromptDiff:
        return await self._client.fetch(_diff(name, before, after))

    async def delete(self, name: str) -> PromptDeleted:
        return await self._client.fetch(Call("DELETE", _path(name), PromptDeleted))

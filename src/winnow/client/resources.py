"""``client.files``, ``client.models``, ``client.evals``, ``client.feedback`` and ``client.keys``:
small resources over the API's areas, each a sync class and its async twin."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Literal, Unpack

from pydantic import BaseModel

from winnow.client._http import AsyncAPIClient, Call, SyncAPIClient
from winnow.client.params import (
    BudgetParams,
    EvaluationParams,
    FeedbackFilters,
    FeedbackParams,
    JobListFilters,
    KeyOptions,
)
from winnow.schemas.evals import EvaluationDetails, EvaluationList
from winnow.schemas.feedback import FeedbackItem, FeedbackList
from winnow.schemas.files import FileDeleted, FileInfo, FileList, FilePurpose
from winnow.schemas.keys import KeyCreated, KeyInfo, KeyList
from winnow.schemas.platform import ModelInfoResponse, ModelsListResponse

ExportFormat = Literal["preference", "sft"]


class FeedbackExport(BaseModel):
    """``GET /feedback/export``: its JSONL rows, and why it is empty when it is."""

    format: ExportFormat
    rows: list[dict[str, Any]]
    empty_reason: str | None = None


def _upload(path: str | Path, purpose: FilePurpose) -> Call[FileInfo]:
    return Call("POST", "/files", FileInfo, upload=Path(path), form={"purpose": purpose})


def _file_list(limit: int | None, after: str | None) -> Call[FileList]:
    return Call("GET", "/files", FileList, params={"limit": limit, "after": after})


def _key_quota(name: str, quota_bytes: int | None) -> Call[KeyInfo]:
    if quota_bytes is None:
        return Call("DELETE", f"/keys/{name}/storage_quota", KeyInfo)
    return Call("PUT", f"/keys/{name}/storage_quota", KeyInfo, body={"bytes": quota_bytes})


def _model(model_id: str) -> Call[ModelInfoResponse]:
    return Call("GET", f"/models/{model_id}", ModelInfoResponse)


def _eval(evaluation_id: str, action: str = "", method: str = "GET") -> Call[EvaluationDetails]:
    return Call(method, f"/evaluations/{evaluation_id}{action}", EvaluationDetails)


def _eval_list(filters: JobListFilters) -> Call[EvaluationList]:
    return Call("GET", "/evaluations", EvaluationList, params=dict(filters))


def _export(format: ExportFormat) -> Call[FeedbackExport]:
    return Call("GET", "/feedback/export", FeedbackExport, params={"format": format})


def _key_budget(name: str, budget: BudgetParams | None) -> Call[KeyInfo]:
    if budget is None:
        return Call("DELETE", f"/keys/{name}/budget", KeyInfo)
    return Call("PUT", f"/keys/{name}/budget", KeyInfo, body=budget)


class SyncResource:
    def __init__(self, client: SyncAPIClient) -> None:
        self._client = client


class AsyncResource:
    def __init__(self, client: AsyncAPIClient) -> None:
        self._client = client


class Files(SyncResource):
    def upload(self, path: str | Path, purpose: FilePurpose = "prompts") -> FileInfo:
        """Upload a JSONL prompts file (validated by the server); use its ``path`` as a job's prompts_path
        (``purpose="fine-tune"``: a training file, for a fine-tuning job's training_file)."""
        return self._client.fetch(_upload(path, purpose))

    def list(self, *, limit: int | None = None, after: str | None = None) -> FileList:
        """The key's files, newest first, a page at a time (``after``: the last id of the page before)."""
        return self._client.fetch(_file_list(limit, after))

    def retrieve(self, file_id: str) -> FileInfo:
        return self._client.fetch(Call("GET", f"/files/{file_id}", FileInfo))

    def delete(self, file_id: str) -> FileDeleted:
        """Delete one of the key's files, on the server's disk too (its bytes leave the key's quota)."""
        return self._client.fetch(Call("DELETE", f"/files/{file_id}", FileDeleted))


class AsyncFiles(AsyncResource):
    async def upload(self, path: str | Path, purpose: FilePurpose = "prompts") -> FileInfo:
        """Upload a JSONL prompts file (validated by the server); use its ``path`` as a job's prompts_path
        (``purpose="fine-tune"``: a training file, for a fine-tuning job's training_file)."""
        return await self._client.fetch(_upload(path, purpose))

    async def list(self, *, limit: int | None = None, after: str | None = None) -> FileList:
        """The key's files, newest first, a page at a time (``after``: the last id of the page before)."""
        return await self._client.fetch(_file_list(limit, after))

    async def retrieve(self, file_id: str) -> FileInfo:
        return await self._client.fetch(Call("GET", f"/files/{file_id}", FileInfo))

    async def delete(self, file_id: str) -> FileDeleted:
        """Delete one of the key's files, on the server's disk too (its bytes leave the key's quota)."""
        return await self._client.fetch(Call("DELETE", f"/files/{file_id}", FileDeleted))


class Models(SyncResource):
    def list(self) -> ModelsListResponse:
        """The configured models with their measured status."""
        return self._client.fetch(Call("GET", "/models", ModelsListResponse))

    def retrieve(self, model_id: str) -> ModelInfoResponse:
        return self._client.fetch(_model(model_id))


class AsyncModels(AsyncResource):
    async def list(self) -> ModelsListResponse:
        """The configured models with their measured status."""
        return await self._client.fetch(Call("GET", "/models", ModelsListResponse))

    async def retrieve(self, model_id: str) -> ModelInfoResponse:
        return await self._client.fetch(_model(model_id))


class Evals(SyncResource):
    def create(self, **body: Unpack[EvaluationParams]) -> EvaluationDetails:
        """Queue an evaluation of templates x models over a dataset."""
        return self._client.fetch(Call("POST", "/evaluations", EvaluationDetails, body=body))

    def get(self, evaluation_id: str) -> EvaluationDetails:
        """Progress and, once completed, the comparison table."""
        return self._client.fetch(_eval(evaluation_id))

    def list(self, **filters: Unpack[JobListFilters]) -> EvaluationList:
        """A page of your evaluations, newest first (``after=page.last_id`` for the next, while ``has_more``)."""
        return self._client.fetch(_eval_list(filters))

    def cancel(self, evaluation_id: str) -> EvaluationDetails:
        return self._client.fetch(_eval(evaluation_id, "/cancel", "POST"))

    def results(self, evaluation_id: str) -> Iterator[dict[str, Any]]:
        """A completed evaluation's per-row results, streamed: one dict per (row, template, model)."""
        for line in self._client.lines(_eval(evaluation_id, "/results")):
            yield json.loads(line)


class AsyncEvals(AsyncResource):
    async def create(self, **body: Unpack[EvaluationParams]) -> EvaluationDetails:
        """Queue an evaluation of templates x models over a dataset."""
        return await self._client.fetch(Call("POST", "/evaluations", EvaluationDetails, body=body))

    async def get(self, evaluation_id: str) -> EvaluationDetails:
        """Progress and, once completed, the comparison table."""
        return await self._client.fetch(_eval(evaluation_id))

    async def list(self, **filters: Unpack[JobListFilters]) -> EvaluationList:
        """A page of your evaluations, newest first (``after=page.last_id`` for the next, while ``has_more``)."""
        return await self._client.fetch(_eval_list(filters))

    async def cancel(self, evaluation_id: str) -> EvaluationDetails:
        return await self._client.fetch(_eval(evaluation_id, "/cancel", "POST"))

    async def results(self, evaluation_id: str) -> AsyncIterator[dict[str, Any]]:
        """A completed evaluation's per-row results, streamed: one dict per (row, template, model)."""
        async for line in self._client.lines(_eval(evaluation_id, "/results")):
            yield json.loads(line)


class Feedback(SyncResource):
    def create(self, **body: Unpack[FeedbackParams]) -> FeedbackItem:
        """Rate, label, comment on or correct a generation or an SDG output row."""
        return self._client.fetch(Call("POST", "/feedback", FeedbackItem, body=body))

    def list(self, **filters: Unpack[FeedbackFilters]) -> FeedbackList:
        """Your feedback (an admin: everyone's), newest first."""
        return self._client.fetch(Call("GET", "/feedback", FeedbackList, params=filters))

    def export(self, format: ExportFormat = "preference") -> FeedbackExport:
        """Feedback as training data: DPO preference pairs or SFT examples."""
        with self._client.stream(_export(format)) as response:
            rows = [json.loads(line) for line in response.iter_lines() if line.strip()]
        return FeedbackExport(format=format, rows=rows, empty_reason=response.headers.get("x-winnow-empty-reason"))


class AsyncFeedback(AsyncResource):
    async def create(self, **body: Unpack[FeedbackParams]) -> FeedbackItem:
        """Rate, label, comment on or correct a generation or an SDG output row."""
        return await self._client.fetch(Call("POST", "/feedback", FeedbackItem, body=body))

    async def list(self, **filters: Unpack[FeedbackFilters]) -> FeedbackList:
        """Your feedback (an admin: everyone's), newest first."""
        return await self._client.fetch(Call("GET", "/feedback", FeedbackList, params=filters))

    async def export(self, format: ExportFormat = "preference") -> FeedbackExport:
        """Feedback as training data: DPO preference pairs or SFT examples."""
        async with self._client.stream(_export(format)) as response:
            rows = [json.loads(line) async for line in response.aiter_lines() if line.strip()]
        return FeedbackExport(format=format, rows=rows, empty_reason=response.headers.get("x-winnow-empty-reason"))


class Keys(SyncResource):
    """Key management: admin keys only (others get ``PermissionDenied``)."""

    def create(self, name: str, **options: Unpack[KeyOptions]) -> KeyCreated:
        """Create a key; ``.key`` is its secret, shown only this once."""
        return self._client.fetch(Call("POST", "/keys", KeyCreated, body={"name": name, **options}))

    def list(self, *, include_revoked: bool = False) -> KeyList:
        return self._client.fetch(Call("GET", "/keys", KeyList, params={"include_revoked": include_revoked}))

    def revoke(self, name: str) -> KeyInfo:
        return self._client.fetch(Call("DELETE", f"/keys/{name}", KeyInfo))

    def set_budget(self, name: str, **budget: Unpack[BudgetParams]) -> KeyInfo:
        """Cap the key's spend in USD and/or tokens per period (paused jobs of the key wake up)."""
        return self._client.fetch(_key_budget(name, budget))

    def clear_budget(self, name: str) -> KeyInfo:
        return self._client.fetch(_key_budget(name, None))

    def set_storage_quota(self, name: str, quota_bytes: int) -> KeyInfo:
        """Let the key keep ``quota_bytes`` of uploaded files (instead of the server's default)."""
        return self._client.fetch(_key_quota(name, quota_bytes))

    def clear_storage_quota(self, name: str) -> KeyInfo:
        return self._client.fetch(_key_quota(name, None))


class AsyncKeys(AsyncResource):
    """Key management: admin keys only (others get ``PermissionDenied``)."""

    async def create(self, name: str, **options: Unpack[KeyOptions]) -> KeyCreated:
        """Create a key; ``.key`` is its secret, shown only this once."""
        return await self._client.fetch(Call("POST", "/keys", KeyCreated, body={"name": name, **options}))

    async def list(self, *, include_revoked: bool = False) -> KeyList:
        return await self._client.fetch(Call("GET", "/keys", KeyList, params={"include_revoked": include_revoked}))

    async def revoke(self, name: str) -> KeyInfo:
        return await self._client.fetch(Call("DELETE", f"/keys/{name}", KeyInfo))

    async def set_budget(self, name: str, **budget: Unpack[BudgetParams]) -> KeyInfo:
        """Cap the key's spend in USD and/or tokens per period (paused jobs of the key wake up)."""
        return await self._client.fetch(_key_budget(name, budget))

    async def clear_budget(self, name: str) -> KeyInfo:
        return await self._client.fetch(_key_budget(name, None))

    async def set_storage_quota(self, name: str, quota_bytes: int) -> KeyInfo:
        """Let the key keep ``quota_bytes`` of uploaded files (instead of the server's default)."""
        return await self._client.fetch(_key_quota(name, quota_bytes))

    async def clear_storage_quota(self, name: str) -> KeyInfo:
        return await self._client.fetch(_key_quota(name, None))

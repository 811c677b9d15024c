"""``Winnow`` and ``AsyncWinnow``: the API's resources on one pooled connection."""

from __future__ import annotations

from datetime import datetime
from types import TracebackType
from typing import Literal, Unpack

from winnow.client._http import AsyncAPIClient, Call, SyncAPIClient
from winnow.client.fine_tuning import AsyncFineTuning, SyncFineTuning
from winnow.client.params import SamplingParams
from winnow.client.prompts import AsyncPrompts, Prompts
from winnow.client.resources import (
    AsyncEvals,
    AsyncFeedback,
    AsyncFiles,
    AsyncKeys,
    AsyncModels,
    Evals,
    Feedback,
    Files,
    Keys,
    Models,
)
from winnow.client.sdg import AsyncSDG, SyncSDG
from winnow.schemas.platform import BatchGenerateResponse, GenerateResponse, HealthResponse
from winnow.schemas.prompts import PromptRef
from winnow.schemas.usage import BudgetStatus, UsageReport

GroupBy = Literal["key", "model", "day"]


def _usage(group_by: GroupBy, start: datetime | None, end: datetime | None, key: str | None) -> Call[UsageReport]:
    return Call("GET", "/usage", UsageReport, params={"group_by": group_by, "from": start, "to": end, "key": key})


def _budget(key: str | None) -> Call[BudgetStatus]:
    return Call("GET", "/usage/budget", BudgetStatus, params={"key": key})


def _generate(prompt: str | PromptRef, params: SamplingParams) -> Call[GenerateResponse]:
    sent = prompt if isinstance(prompt, str) else prompt.model_dump(exclude_none=True)
    return Call("POST", "/generate", GenerateResponse, body={"prompt": sent, **params})


def _generate_batch(prompts: list[str], params: SamplingParams) -> Call[BatchGenerateResponse]:
    return Call("POST", "/generate/batch", BatchGenerateResponse, body={"prompts": prompts, **params})


_HEALTH = Call("GET", "/health", HealthResponse)


class Winnow(SyncAPIClient):
    """A client of a Winnow server: ``base_url`` (else WINNOW_URL, else http://127.0.0.1:8000) with
    ``api_key`` (else WINNOW_API_KEY). Each request may take ``timeout`` seconds; 429 (after its
    Retry-After), 502/503/504 and connection failures are retried ``max_retries`` times with
    exponential backoff. Use it as a context manager, or ``close()`` it."""

    def _attach(self) -> None:
        self.files = Files(self)
        self.prompts = Prompts(self)
        self.sdg = SyncSDG(self)
        self.fine_tuning = SyncFineTuning(self)
        self.evals = Evals(self)
        self.feedback = Feedback(self)
        self.models = Models(self)
        self.keys = Keys(self)

    def __enter__(self) -> Winnow:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def health(self) -> HealthResponse:
        return self.fetch(_HEALTH)

    def generate(self, prompt: str | PromptRef, **params: Unpack[SamplingParams]) -> GenerateResponse:
        """Generate text for ``prompt`` (or a registered prompt's version, rendered) with ``model_id``."""
        return self.fetch(_generate(prompt, params))

    def generate_batch(self, prompts: list[str], **params: Unpack[SamplingParams]) -> BatchGenerateResponse:
        """Generate for up to 10 prompts in one request."""
        return self.fetch(_generate_batch(prompts, params))

    def usage(
        self,
        group_by: GroupBy = "model",
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        key: str | None = None,
    ) -> UsageReport:
        """Tokens and cost grouped by key, model or UTC day (``key``: one key's, admins only)."""
        return self.fetch(_usage(group_by, start, end, key))

    def budget(self, key: str | None = None) -> BudgetStatus:
        """This key's budget, spend this period and what remains (an admin may name another key)."""
        return self.fetch(_budget(key))


class AsyncWinnow(AsyncAPIClient):
    """The async twin of ``Winnow``: the same resources, each call awaited."""

    def _attach(self) -> None:
        self.files = AsyncFiles(self)
        self.prompts = AsyncPrompts(self)
        self.sdg = AsyncSDG(self)
        self.fine_tuning = AsyncFineTuning(self)
        self.evals = AsyncEvals(self)
        self.feedback = AsyncFeedback(self)
        self.models = AsyncModels(self)
        self.keys = AsyncKeys(self)

    async def __aenter__(self) -> AsyncWinnow:
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.close()

    async def health(self) -> HealthResponse:
        return await self.fetch(_HEALTH)

    async def generate(self, prompt: str | PromptRef, **params: Unpack[SamplingParams]) -> GenerateResponse:
        """Generate text for ``prompt`` (or a registered prompt's version, rendered) with ``model_id``."""
        return await self.fetch(_generate(prompt, params))

    async def generate_batch(self, prompts: list[str], **params: Unpack[SamplingParams]) -> BatchGenerateResponse:
        """Generate for up to 10 prompts in one request."""
        return await self.fetch(_generate_batch(prompts, params))

    async def usage(
        self,
        group_by: GroupBy = "model",
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        key: str | None = None,
    ) -> UsageReport:
        """Tokens and cost grouped by key, model or UTC day (``key``: one key's, admins only)."""
        return await self.fetch(_usage(group_by, start, end, key))

    async def budget(self, key: str | None = None) -> BudgetStatus:
        """This key's budget, spend this period and what remains (an admin may name another key)."""
        return await self.fetch(_budget(key))

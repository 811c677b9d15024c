"""The keyword arguments of the SDK's calls that send a request body: the server's request models
(``SubmitJobRequest``, ``EvaluationRequest``, ...) as TypedDicts, so that an editor and mypy check
them; the server validates them (and names an unknown field)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Required, TypedDict

from winnow.schemas.evals import Baseline, PromptTemplate
from winnow.schemas.keys import KeyBudget, KeyRateLimits
from winnow.schemas.sdg import FilteringFunction, OutputKind, PreferenceOptions


class SubmitJobParams(TypedDict, total=False):
    """``SubmitJobRequest``: the seed's submit_job body, plus ``dry_run``."""

    model: Required[str]
    prompts_path: Required[str]
    reward_model: Required[str]
    batch_size: int
    temperature: float
    top_p: float
    max_gen_len: int
    num_generations: int
    scoring_function: str
    filtering_function: FilteringFunction | dict[str, Any]
    system_prompt: str | None
    seed: int | None
    response_format: dict[str, Any] | None
    executor: Literal["local", "ray"] | None
    dry_run: bool
    outputs: list[OutputKind]
    preference: PreferenceOptions | dict[str, Any]


class EvaluationParams(TypedDict, total=False):
    """``EvaluationRequest``: templates x models over a dataset."""

    dataset_path: Required[str]
    templates: Required[list[PromptTemplate | dict[str, Any]]]
    models: Required[list[str]]
    name: str | None
    scoring_function: str | None
    reward_model: str | None
    baseline: Baseline | dict[str, Any] | None
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    response_format: dict[str, Any] | None
    batch_size: int


class SamplingParams(TypedDict, total=False):
    model_id: Required[str]
    max_tokens: int
    temperature: float
    top_p: float


class FeedbackParams(TypedDict, total=False):
    """``FeedbackRequest``: a generation (``generation_id``, ``index``) or an SDG row (``job_id``,
    ``id``, ``index``), and at least one of rating, labels, comment, corrected_response."""

    generation_id: str
    job_id: str
    id: str
    index: int
    rating: Literal["up", "down"] | int
    labels: list[str]
    comment: str
    corrected_response: str


class KeyOptions(TypedDict, total=False):
    """``KeyCreateRequest`` beside the name."""

    admin: bool
    rate_limits: KeyRateLimits | dict[str, str] | None
    budget: KeyBudget | dict[str, Any] | None
    storage_quota_bytes: int | None


class BudgetParams(TypedDict, total=False):
    """``KeyBudget``: USD and/or tokens per UTC day, month (the default) or in total."""

    usd: float | None
    tokens: int | None
    period: Literal["day", "month", "total"]


class FeedbackFilters(TypedDict, total=False):
    """What ``GET /feedback`` narrows by."""

    generation_id: str
    job_id: str
    label: str
    limit: int
    after: str


class JobListFilters(TypedDict, total=False):
    """What the job lists (SDG jobs, evaluations, fine-tuning jobs) page and narrow by: ``limit`` items
    older than the item ``after`` (a previous page's ``last_id``), a status, a model, a creation window."""

    limit: int
    after: str
    status: Literal["queued", "running", "paused", "completed", "failed", "cancelled"]
    model: str
    created_after: datetime | str
    created_before: datetime | str

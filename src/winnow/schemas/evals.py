"""Wire models of ``/api/v1/evaluations``: prompt templates x models over a dataset, scored by any
registered scoring function or reward model, compared in one table."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from winnow.schemas.common import CursorPage, Int, RequestModel, Seed, Timestamp, WireModel
from winnow.schemas.structured_outputs import RESPONSE_FORMAT_DOC, ResponseFormat

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$"


class PromptTemplate(RequestModel):
    """A prompt built from a dataset row: ``{field}`` placeholders name the row's fields (``{prompt}``
    is the row's prompt text, ``{id}`` its id; ``{{`` and ``}}`` are literal braces)."""

    name: str = Field(pattern=NAME, examples=["plain"])
    template: str = Field(min_length=1, max_length=20_000, examples=["{prompt}"])
    system: str | None = Field(None, max_length=20_000, description="A system message sent first")


class Baseline(RequestModel):
    template: str = Field(pattern=NAME)
    model: str = Field(min_length=1, max_length=200)


class EvaluationRequest(RequestModel):
    """Every template with every model, on every row of the dataset."""

    name: str | None = Field(None, max_length=200)
    dataset_path: str = Field(
        min_length=1, description="JSONL rows (id, prompt or messages, any fields), in a data dir"
    )
    templates: list[PromptTemplate] = Field(min_length=1, max_length=20)
    models: list[str] = Field(min_length=1, max_length=10, examples=[["demo-lm"]])
    scoring_function: str | None = Field(
        None, description="Any registered scoring function, e.g. exact_match[:field]; default raw (needs reward_model)"
    )
    reward_model: str | None = Field(None, description="A reward model id (classifier, openai-score, llm-judge)")
    baseline: Baseline | None = Field(None, description="What win rates compare against (default: the first pair)")
    max_tokens: Int = Field(64, ge=1, le=8192)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    response_format: ResponseFormat | None = Field(None, description=RESPONSE_FORMAT_DOC)
    seed: Seed | None = Field(None, description="Makes sampling reproducible: any integer >= 0")
    batch_size: Int = Field(32, ge=1, le=4096, description="Dataset rows per chunk (and checkpoint)")


class ComparisonRow(WireModel):
    """One (template, model) pair over the dataset."""

    template: str
    model: str
    rows: int = Field(description="Rows scored")
    errors: int = Field(description="Rows the model could not serve")
    mean_score: float | None = Field(description="With exact_match, the accuracy")
    std_score: float | None
    ci95: float | None = Field(description="Half-width of a normal 95% interval around the mean")
    min_score: float | None
    max_score: float | None
    baseline: bool = Field(False, description="This pair is the baseline the win rates compare against")
    win_rate: float | None = Field(
        description="(wins + ties / 2) / rows compared, against the baseline; null for the baseline itself "
        "and for a pair with no row to compare (every row failed on one side)"
    )
    wins: int
    ties: int
    losses: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    input_tokens: int
    output_tokens: int
    cost_usd: float


class EvaluationCounts(WireModel):
    rows_total: int = 0
    rows_done: int = 0
    generations: int = 0
    errors: int = 0


class EvaluationDetails(WireModel):
    id: str
    name: str | None = None
    status: str = Field(description="queued, running, paused, completed, failed or cancelled")
    stage: str
    created: Timestamp
    started: Timestamp | None = None
    finished: Timestamp | None = None
    error: str | None = None
    counts: EvaluationCounts
    eta_seconds: float | None = None
    baseline: Baseline
    table: list[ComparisonRow] | None = Field(None, description="When completed")
    results_path: str | None = Field(None, description="Per-row results JSONL, when completed")
    params: dict[str, Any] = Field(default_factory=dict)


class EvaluationList(CursorPage):
    evaluations: list[EvaluationDetails]
    count: int

"""Wire models of ``spec/synthetic_data_generation.yaml`` and the Llama Stack batch_inference
message types it refers to (see ``spec/README.md``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, RootModel, StrictBool

from winnow.schemas.common import CursorPage, Int, RequestModel, Seed, Timestamp, WireModel
from winnow.schemas.structured_outputs import RESPONSE_FORMAT_DOC, ResponseFormat

JOB_ID_PATTERN = r"^job-[0-9a-f]{24}$"
EVAL_ID_PATTERN = r"^eval-[0-9a-f]{24}$"


class UserMessage(WireModel):
    role: Literal["user"] = "user"
    content: str


class SystemMessage(WireModel):
    role: Literal["system"] = "system"
    content: str


class ToolResponseMessage(WireModel):
    role: Literal["ipython"] = "ipython"
    call_id: str
    tool_name: str
    content: str


class ToolCall(WireModel):
    call_id: str
    tool_name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class CompletionMessage(WireModel):
    role: Literal["assistant"] = "assistant"
    content: str
    stop_reason: Literal["end_of_turn", "end_of_message", "out_of_tokens"]
    tool_calls: list[ToolCall] = Field(default_factory=list)


class Message(
    RootModel[
        Annotated[
            UserMessage | SystemMessage | ToolResponseMessage | CompletionMessage,
            Field(discriminator="role"),
        ]
    ]
):
    """Any of the four batch_inference message types, told apart by ``role``."""


class Completion(RootModel[CompletionMessage]):
    """What one generation returned: a CompletionMessage."""


class PromptResponseScore(WireModel):
    id: str = Field(description="Carry forwarded from the user provided id from prompt.")
    index: int = Field(description="Index of the generation.")
    prompt: list[Message]
    response: Completion
    score: float = Field(description="Final score after filtering.")
    raw_score: float = Field(description="Raw score from the reward model.")


class FilteringFunction(RequestModel):
    name: str = Field(description="A simple threshold or a pre-registered function")
    params: dict[str, Any] = Field(default_factory=dict)


class SyntheticDataGeneration(WireModel):
    job_id: str
    created: Timestamp
    status: str
    output_file_path: str | None = None


OutputKind = Literal["preference", "sft"]


class PreferenceOptions(RequestModel):
    """How the ``preference`` output pairs a prompt's responses (all of them, scored, before the filter)."""

    pairs: Literal["best_worst", "all"] = Field(
        "best_worst", description="best_worst: the best-scored response against the worst; all: every pair"
    )
    min_margin: float = Field(
        0.0, ge=0.0, description="A pair needs chosen score - rejected score above this (0: strictly better)"
    )


class SubmitJobRequest(RequestModel):
    """The seed's submit_job body (all twelve parameters), plus a few of Winnow's own."""

    model: str = Field(description="Model identifier for batch inference.")
    prompts_path: str = Field(min_length=1, description="JSONL prompts, inside the server's data directories")
    batch_size: Int = Field(32, ge=1, le=4096, description="Number of prompts to process in each batch.")
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_gen_len: Int = Field(100, ge=1, le=8192, description="Maximum length of generated responses (tokens).")
    num_generations: Int = Field(1, ge=1, le=64, description="Number of generations per prompt.")
    reward_model: str = Field(description="Identifier for the reward model used for scoring.")
    scoring_function: str = Field("raw", description="raw, sigmoid, zscore, rank, exact_match[:field], ...")
    filtering_function: FilteringFunction = Field(default_factory=lambda: FilteringFunction(name="none"))
    system_prompt: str | None = Field(None, description="Sent first with every prompt that has none")
    response_format: ResponseFormat | None = Field(None, description=RESPONSE_FORMAT_DOC)
    seed: Seed | None = Field(
        None, description="Makes sampling reproducible: any integer >= 0 (each chunk derives its own seed from it)"
    )
    executor: Literal["local", "ray"] | None = Field(
        None, description="local (the worker's process) or ray (a Ray Data pipeline); default from config"
    )
    dry_run: StrictBool = Field(
        False, description="Validate and estimate tokens and cost (answer's `estimate`) without running"
    )
    outputs: list[OutputKind] = Field(
        default_factory=list,
        max_length=2,
        description="Training sets written beside the PromptResponseScore JSONL (which is always written): "
        "preference (TRL prompt/chosen/rejected pairs from every scored response of a prompt, before the "
        "filter) and sft (the kept rows as messages)",
    )
    preference: PreferenceOptions = Field(default_factory=PreferenceOptions)


class JobCounts(WireModel):
    prompts_total: int = 0
    prompts_read: int = 0
    prompts_generated: int = 0
    responses_generated: int = 0
    responses_scored: int = 0
    rows_kept: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


class JobEstimate(WireModel):
    """What a job would use, from a dry run. Input tokens are counted as the job will bill them (a local
    model's own tokenizer; an upper bound for upstreams); output is the most the job can generate
    (prompts x num_generations x max_gen_len)."""

    prompts: int
    generations: int
    input_tokens: int
    max_output_tokens: int
    price_input_per_mtok: float
    price_output_per_mtok: float
    input_cost_usd: float
    max_cost_usd: float
    budget_remaining_usd: float | None = None
    budget_remaining_tokens: int | None = None
    fits_budget: bool = Field(description="Whether even the most the job can use fits the key's budget")


class JobDetails(SyntheticDataGeneration):
    """``job_status``'s answer: the seed's four fields, then progress, ETA and timings."""

    stage: str
    counts: JobCounts
    eta_seconds: float | None = None
    error: str | None = None
    started: Timestamp | None = None
    finished: Timestamp | None = None
    duration_seconds: float | None = Field(None, description="From start to finish (a running job: so far)")
    cost_usd: float | None = Field(None, description="USD billed to the job so far (job_status only)")
    params: dict[str, Any] = Field(default_factory=dict)
    estimate: JobEstimate | None = Field(None, description="Only on a dry run (status dry_run; nothing is queued)")


class JobList(CursorPage):
    jobs: list[JobDetails]
    count: int


class JobRows(WireModel):
    """A page of a job's output, read by byte offset."""

    rows: list[PromptResponseScore]
    offset: int = Field(description="Byte offset this page starts at")
    next_offset: int | None = Field(description="Byte offset of the next page; null when this page ends the file")
    size_bytes: int = Field(description="Size of the whole output file")
    references: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="The other fields of this page's prompts in the prompts file (e.g. answer), by prompt id",
    )


class SdgFunctions(WireModel):
    reward_models: list[str] = Field(description="Configured reward models")
    scoring_functions: list[str] = Field(description="Registered scoring functions (name or name:arg)")
    filters: list[str] = Field(description="Registered filtering functions")

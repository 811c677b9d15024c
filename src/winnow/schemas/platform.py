"""Wire models of ``spec/llm_platform.yaml``, field for field."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from winnow.schemas.common import Int, RequestModel, Timestamp, WireModel, now_utc
from winnow.schemas.prompts import EXTENSION, PromptRef


class HealthResponse(WireModel):
    status: Literal["healthy", "unhealthy"]
    timestamp: Timestamp = Field(default_factory=now_utc)
    version: str


class MemoryInfo(WireModel):
    total: int
    available: int
    percent: float
    used: int


class DiskInfo(WireModel):
    total: int
    free: int
    used: int
    percent: float


class CpuInfo(WireModel):
    percent: float
    count: int


class SystemInfo(WireModel):
    memory: MemoryInfo
    disk: DiskInfo
    cpu: CpuInfo


class EnvironmentInfo(WireModel):
    python_version: str
    platform: str


class DetailedStatusResponse(WireModel):
    status: Literal["healthy", "degraded", "unhealthy"]
    timestamp: Timestamp = Field(default_factory=now_utc)
    version: str
    system: SystemInfo
    environment: EnvironmentInfo
    warnings: list[str] = Field(default_factory=list)


class ReadinessChecks(WireModel):
    memory_available: bool
    disk_available: bool
    database: bool = Field(description="The database answered a trivial query")
    models: bool = Field(description="At least one configured model can serve (true when none configured)")


class ReadinessResponse(WireModel):
    ready: bool
    timestamp: Timestamp = Field(default_factory=now_utc)
    checks: ReadinessChecks
    failing: list[str] = Field(default_factory=list, description="Names of the checks that failed")


class DeploymentStatus(WireModel):
    """One upstream of a routed model, as its router sees it now (Winnow's addition to the spec's Model)."""

    id: str
    state: Literal["healthy", "cooldown", "probing"] = Field(
        description="cooldown: skipped after failures; probing: back, until one call succeeds"
    )
    cooldown_remaining_s: float
    in_flight: int
    latency_ms: float | None = Field(None, description="Moving average of recent successful calls")
    requests: int
    failures: int
    cooldowns: int
    waiting: int = Field(0, description="Calls waiting for its probe to end (none other could take them)")


class Model(WireModel):
    id: str = Field(description="Unique model identifier", examples=["gpt-4"])
    name: str = Field(description="Human readable model name")
    type: Literal["commercial", "fine-tuned"]
    provider: str
    description: str | None = None
    status: Literal["available", "unavailable"]
    capabilities: list[str] = Field(default_factory=list)
    context_length: int | None = None
    deployments: list[DeploymentStatus] | None = Field(
        None, description="Upstream models: each deployment's state (Winnow's router; not in the spec)"
    )
    task: Literal["generation", "embedding"] = Field(
        "generation",
        description="What the model serves: text generation, or embeddings on /v1/embeddings (Winnow's "
        "extension; the spec's ``type`` keeps its two values, and an embedding model is configured as type embedding)",
    )


class ModelsListResponse(WireModel):
    models: list[Model]
    count: int
    timestamp: Timestamp = Field(default_factory=now_utc)


class ModelInfoResponse(WireModel):
    model: Model
    timestamp: Timestamp = Field(default_factory=now_utc)


class SamplingFields(RequestModel):
    max_tokens: Int = Field(default=100, ge=1, le=2048, description="Maximum number of tokens to generate")
    temperature: float = Field(default=0.7, ge=0.0, le=2.0, description="Sampling temperature (0 = greedy)")
    top_p: float = Field(default=1.0, ge=0.0, le=1.0, description="Nucleus sampling parameter")


# One cap on a prompt for /generate and each prompt of /generate/batch (the spec's maxLength).
MAX_PROMPT_CHARS = 10_000


class GenerateRequest(SamplingFields):
    prompt: Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARS)] | PromptRef = Field(
        description=(
            "Input prompt for text generation; or (a Winnow extension) a registered prompt "
            "{name, version|label, variables}, rendered through that version: its system message applies, "
            "and its sampling parameters unless the request sets its own"
        ),
        json_schema_extra=EXTENSION,
    )
    model_id: str = Field(description="Model identifier to use for generation")

    @field_validator("prompt", mode="before")
    @classmethod
    def _text_in_bounds(cls, value: Any) -> Any:
        """A text prompt's length errors name ``prompt`` alone (not each member of the union)."""
        if isinstance(value, str) and not value:
            raise PydanticCustomError("string_too_short", "String should have at least 1 character")
        if isinstance(value, str) and len(value) > MAX_PROMPT_CHARS:
            raise PydanticCustomError("string_too_long", f"String should have at most {MAX_PROMPT_CHARS} characters")
        return value

    def text(self) -> str:
        """The prompt's text (a reference must have been rendered first: ``winnow.prompts.use``)."""
        if not isinstance(self.prompt, str):
            raise TypeError("a prompt reference is rendered before generation")
        return self.prompt


class GenerationParameters(WireModel):
    max_tokens: int
    temperature: float
    top_p: float


class GenerationMetrics(WireModel):
    latency_ms: int
    input_tokens: int
    output_tokens: int
    total_tokens: int


class GenerateResponse(WireModel):
    text: str
    model_id: str
    prompt: str
    parameters: GenerationParameters
    metrics: GenerationMetrics
    metadata: dict[str, Any] = Field(default_factory=dict)
    timestamp: Timestamp = Field(default_factory=now_utc)


class BatchGenerateRequest(SamplingFields):
    prompts: list[Annotated[str, Field(max_length=MAX_PROMPT_CHARS)]] = Field(
        min_length=1,
        max_length=10,
        description=f"List of prompts for batch generation (each at most {MAX_PROMPT_CHARS} characters, as /generate's)",
    )
    model_id: str


class BatchResult(WireModel):
    index: int
    prompt: str
    text: str | None = None
    success: bool
    error: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class BatchMetrics(WireModel):
    total_latency_ms: int
    successful_generations: int
    failed_generations: int
    average_latency_ms: int


class BatchGenerateResponse(WireModel):
    results: list[BatchResult]
    model_id: str
    parameters: GenerationParameters
    metrics: BatchMetrics
    timestamp: Timestamp = Field(default_factory=now_utc)

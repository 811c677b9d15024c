"""Wire models of ``/v1/fine_tuning/jobs``: OpenAI's fine-tuning API (``model``, file ids,
``n_epochs``/``batch_size``/``learning_rate_multiplier``, ``method``), mapped onto Winnow's
``FineTuningJobRequest`` by ``winnow.finetune.openai``; one job store with ``/api/v1/fine_tuning``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from winnow.schemas.common import Int, RequestModel, Seed, WireModel

Auto = Literal["auto"]
OpenAIStatus = Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]


class OpenAIHyperparameters(RequestModel):
    """``auto``: Winnow's default (``/api/v1/fine_tuning``'s), named in the job once created."""

    n_epochs: Auto | Int = Field("auto", description="auto: 3")
    batch_size: Auto | Int = Field("auto", description="auto: 16")
    learning_rate_multiplier: Auto | float = Field("auto", description="Times Winnow's learning rate 1e-3; auto: 1")


class OpenAIDpoHyperparameters(OpenAIHyperparameters):
    beta: Auto | float = Field("auto", description="auto: 0.1")


class SupervisedMethod(RequestModel):
    hyperparameters: OpenAIHyperparameters | None = None


class DpoMethod(RequestModel):
    hyperparameters: OpenAIDpoHyperparameters | None = None


class FineTuneMethod(RequestModel):
    type: Literal["supervised", "dpo"] = Field(description="reinforcement is not served")
    supervised: SupervisedMethod | None = None
    dpo: DpoMethod | None = None


class CreateFineTuningJob(RequestModel):
    model: str = Field(min_length=1, max_length=200, description="A local (transformers) model, or a fine-tuned one")
    training_file: str = Field(min_length=1, max_length=64, description="The id of a fine-tune file of this key")
    validation_file: str | None = Field(None, min_length=1, max_length=64)
    hyperparameters: OpenAIHyperparameters | None = Field(None, description="Deprecated by OpenAI: use method")
    method: FineTuneMethod | None = None
    suffix: str | None = Field(None, max_length=64, description="Lowercase letters, digits and -, up to 40")
    seed: Seed | None = None
    metadata: dict[str, str] | None = Field(None, max_length=16)
    integrations: list[Any] | None = Field(None, max_length=0, description="Not served: none or []")


class JobHyperparameters(WireModel):
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float


class DpoJobHyperparameters(JobHyperparameters):
    beta: float


class JobError(WireModel):
    code: str
    message: str
    param: str | None = None


class OpenAIFineTuningJob(WireModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    hyperparameters: JobHyperparameters
    model: str
    organization_id: str = "winnow"
    result_files: list[str] = Field(default_factory=list)
    status: OpenAIStatus
    trained_tokens: int | None = None
    training_file: str
    validation_file: str | None = None
    seed: int
    estimated_finish: int | None = None
    method: dict[str, Any]
    metadata: dict[str, str] | None = None


class OpenAIFineTuningJobList(WireModel):
    object: Literal["list"] = "list"
    data: list[OpenAIFineTuningJob]
    has_more: bool


class OpenAIFineTuningEvent(WireModel):
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    id: str
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    type: Literal["message", "metrics"]
    data: dict[str, Any] = Field(default_factory=dict)


class OpenAIFineTuningEventList(WireModel):
    object: Literal["list"] = "list"
    data: list[OpenAIFineTuningEvent]
    has_more: bool


class OpenAICheckpoint(WireModel):
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    id: str
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: dict[str, float]
    step_number: int


class OpenAICheckpointList(WireModel):
    object: Literal["list"] = "list"
    data: list[OpenAICheckpoint]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool

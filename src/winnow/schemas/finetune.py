"""Wire models of ``/api/v1/fine_tuning``: train a local model on data Winnow made (an SDG job's rows
or preference pairs, a feedback export) or on an uploaded JSONL, with TRL and PEFT, and serve it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from winnow.schemas.common import CursorPage, Int, RequestModel, Seed, Timestamp, WireModel

Method = Literal["sft", "dpo"]
SUFFIX = r"^[a-z0-9][a-z0-9-]{0,39}$"


class LoraParams(RequestModel):
    """A LoRA adapter (PEFT): only these low-rank matrices train; the base stays as it is."""

    r: Int = Field(16, ge=1, le=256, description="Rank")
    alpha: Int = Field(32, ge=1, le=1024, description="Scaling numerator (lora_alpha)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names to adapt, or all-linear (every linear layer but the output head)"
    )


class Hyperparameters(RequestModel):
    epochs: Int = Field(3, ge=1, le=100)
    learning_rate: float = Field(1e-3, gt=0.0, le=1.0)
    batch_size: Int = Field(16, ge=1, le=1024)
    max_length: Int = Field(512, ge=8, le=32_768, description="Tokens per example (longer ones are cut)")
    lora: LoraParams | None = Field(
        default_factory=LoraParams, description="LoRA settings; null trains every weight (full fine-tuning)"
    )
    beta: float = Field(0.1, gt=0.0, le=10.0, description="DPO only: how far the policy may move from the base")
    sft_weight: float = Field(
        0.0,
        ge=0.0,
        le=10.0,
        description="DPO only: add the chosen answers' likelihood loss with this weight (RPO), which keeps "
        "DPO from lowering the chosen answers along with the rejected ones",
    )
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    seed: Seed = Field(0, description="Shuffling and initialisation: the same seed, the same run")
    checkpoint_steps: Int | None = Field(
        None, ge=1, le=1_000_000, description="Save a resumable checkpoint every N steps (default: about 10 a run)"
    )


class FineTuningJobRequest(RequestModel):
    """Exactly one training source: an SDG job, the feedback export, or a JSONL file in a data dir."""

    base_model: str = Field(min_length=1, max_length=200, description="A local model id (or a fine-tuned one)")
    method: Method = Field("sft", description="sft (supervised) or dpo (preference pairs)")
    training_file: str | None = Field(
        None,
        min_length=1,
        description="JSONL in a data dir, in TRL's formats: messages, prompt+completion, or text (sft); "
        "prompt+chosen+rejected (dpo)",
    )
    sdg_job: str | None = Field(
        None,
        description="A completed SDG job of yours: its kept rows (sft) or its preference output (dpo)",
    )
    feedback: bool = Field(False, description="Train on your feedback export (sft rows or preference pairs)")
    validation_file: str | None = Field(None, min_length=1, description="JSONL in the same format, for validation loss")
    validation_split: float = Field(
        0.0, ge=0.0, le=0.5, description="Hold this fraction of the training rows out for validation loss"
    )
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    suffix: str | None = Field(
        None, pattern=SUFFIX, description="Goes into the new model's id: <base>:ft-<suffix>-<job>"
    )

    @model_validator(mode="after")
    def _one_source(self) -> FineTuningJobRequest:
        given = [name for name in ("training_file", "sdg_job") if getattr(self, name)] + (
            ["feedback"] if self.feedback else []
        )
        if len(given) != 1:
            raise ValueError(
                "name exactly one training source: training_file, sdg_job or feedback"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if self.validation_file and self.validation_split:
            raise ValueError("give validation_file or validation_split, not both")
        return self


class Progress(WireModel):
    step: int = 0
    total_steps: int | None = None
    epoch: float = 0.0
    train_loss: float | None = None
    validation_loss: float | None = None
    tokens_per_second: float | None = None
    eta_seconds: float | None = None
    resumed_from_step: int | None = Field(None, description="Set when a restarted worker went on from a checkpoint")


class FineTuningJob(WireModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    base_model: str
    method: Method
    status: str = Field(description="queued, running, paused, completed, failed or cancelled")
    stage: str = Field(description="queued, preparing (a worker checks the rows), training, or the status once ended")
    created: Timestamp
    started: Timestamp | None = None
    finished: Timestamp | None = None
    error: str | None = None
    fine_tuned_model: str | None = Field(None, description="The new model's id, once the job completed")
    training_rows: int = Field(description="0 until a worker has checked the rows (stage preparing)")
    validation_rows: int = 0
    hyperparameters: dict[str, Any]
    progress: Progress
    metrics: dict[str, Any] | None = Field(None, description="Final metrics, once completed")
    loss_curve: str | None = Field(None, description="GET this path for the loss curve (PNG), once completed")
    attempts: int = 0


class FineTuningJobList(CursorPage):
    object: Literal["list"] = "list"
    data: list[FineTuningJob]


class FineTuningEvent(WireModel):
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    id: str
    created_at: int = Field(description="Unix seconds")
    level: Literal["info", "warn", "error"] = "info"
    type: Literal["message", "metrics"] = "message"
    message: str
    data: dict[str, Any] | None = None


class FineTuningEventList(WireModel):
    object: Literal["list"] = "list"
    data: list[FineTuningEvent]
    has_more: bool = False


class DeletedModel(WireModel):
    id: str
    object: Literal["model"] = "model"
    deleted: bool = True

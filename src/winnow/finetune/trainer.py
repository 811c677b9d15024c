"""One fine-tuning run with TRL (``SFTTrainer``, ``DPOTrainer``) and PEFT LoRA, resumable.

The run checkpoints every ``checkpoint_steps`` into its work folder (transformers' own checkpoints:
weights, optimizer, scheduler, RNG and data order); a restarted run goes on from the last checkpoint
its job recorded as complete, so a killed worker loses at most the steps since then. Progress and
metrics go to ``hooks`` (the worker writes them to the job's row and events; ``winnow ft run`` draws a
progress bar), and ``hooks.progress`` answering True (cancellation) stops the run at the next step.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from winnow.config import ModelConfig
from winnow.errors import ServiceUnavailable
from winnow.finetune.data import read_rows
from winnow.schemas.finetune import FineTuningJobRequest

log = logging.getLogger("winnow.finetune")


class Hooks(Protocol):
    def progress(self, progress: dict[str, Any], event: dict[str, Any] | None = None) -> bool:
        """Record progress (and an event); True asks the run to stop (cancelled)."""

    def saved(self, step: int) -> None:
        """A resumable checkpoint of ``step`` is complete on disk."""


@dataclass
class TrainResult:
    cancelled: bool
    metrics: dict[str, Any] = field(default_factory=dict)
    model_path: Path | None = None  # the weights to serve (the base, or a full fine-tune)
    adapter_path: Path | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def total_steps(rows: int, batch_size: int, epochs: int, world: int = 1) -> int:
    """Optimizer steps of a run; with ``world`` processes each takes ``per_process_batch`` rows of
    its share (PyTorch's DistributedSampler pads the shares to the same length)."""
    return math.ceil(math.ceil(rows / world) / per_process_batch(batch_size, world)) * epochs


def per_process_batch(batch_size: int, world: int) -> int:
    """Each process's part of the job's batch (rounded up), so the effective batch stays the job's."""
    return math.ceil(batch_size / world)


def world_size() -> int:
    """Processes this run trains with (WORLD_SIZE, set by winnow.finetune.distributed or torchrun)."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1")))


def checkpoint_dir(work: Path, step: int) -> Path:
    return work / f"checkpoint-{step}"


def load_base(base: ModelConfig, device: str) -> tuple[Any, Any, Path]:
    """The base model (with its adapter merged in, for a fine-tune of a fine-tune), its tokenizer,
    and the folder the tokenizer came from."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = base.path or base.base_model
    if not source or not Path(source).is_dir():
        raise ServiceUnavailable(f"Model {base.id!r} has no local directory", f"path={source!r}")
    dtype = torch.float32 if device == "cpu" else "auto"
    model: Any = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, local_files_only=True)
    if base.adapter_path:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, base.adapter_path, local_files_only=True).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer, Path(source)


class _Reporter:
    """A TrainerCallback (built lazily: transformers is imported only when a run starts)."""

    def __init__(self, hooks: Hooks, total: int, resumed_from: int | None, world: int = 1, device: str = "cpu") -> None:
        self.hooks = hooks
        self.world = world
        self.device = device  # where the stop flag is broadcast from (NCCL wants a CUDA tensor)
        self.total = total
        self.resumed_from = resumed_from
        self.every_s = 1.0
        self.cancelled = False
        self.progress: dict[str, Any] = {"step": resumed_from or 0, "total_steps": total, "epoch": 0.0}
        if resumed_from:
            self.progress["resumed_from_step"] = resumed_from
        self._started = time.monotonic()
        self._first_step: int | None = None
        self._last_report = 0.0
        self._tokens: tuple[float, float] | None = None  # (time, num_tokens) at the last log

    def callback(self) -> Any:
        from transformers import TrainerCallback

        reporter = self

        class Callback(TrainerCallback):
            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                reporter.step(state, control)

            def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
                reporter.log(state, control, logs or {})

            def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                reporter.hooks.saved(int(state.global_step))

        return Callback()

    def _eta(self, step: int) -> float | None:
        if self._first_step is None or step <= self._first_step:
            return None
        rate = (time.monotonic() - self._started) / (step - self._first_step)
        return round(rate * max(0, self.total - step), 1)

    def step(self, state: Any, control: Any) -> None:
        step = int(state.global_step)
        if self._first_step is None:
            self._first_step, self._started = step - 1, time.monotonic()
        self.progress.update(step=step, epoch=round(float(state.epoch or 0.0), 4), eta_seconds=self._eta(step))
        now = time.monotonic()
        if now - self._last_report >= self.every_s or step >= self.total:
            self._last_report = now
            self._report(control, None)
        if self.world > 1:
            self._agree(control)

    def _agree(self, control: Any) -> None:
        """Every rank stops at the same step: rank 0 (which hears of a cancel) broadcasts its answer.
        A rank that stopped alone would leave the others waiting in the next gradient all-reduce."""
        import torch
        import torch.distributed as dist

        flag = torch.tensor([int(self.cancelled)], dtype=torch.int32, device=self.device)
        dist.broadcast(flag, src=0)
        if flag.item():
            self.cancelled = True
            control.should_training_stop = True
            control.should_save = False

    def log(self, state: Any, control: Any, logs: dict[str, Any]) -> None:
        data = {k: v for k, v in logs.items() if isinstance(v, int | float)}
        if "loss" in data:
            self.progress["train_loss"] = round(float(data["loss"]), 6)
        if "eval_loss" in data:
            self.progress["validation_loss"] = round(float(data["eval_loss"]), 6)
        tokens = data.get("num_tokens")
        if tokens is not None:
            now = time.monotonic()
            if self._tokens is not None and now > self._tokens[0] and tokens > self._tokens[1]:
                self.progress["tokens_per_second"] = round((tokens - self._tokens[1]) / (now - self._tokens[0]), 1)
            self._tokens = (now, float(tokens))
        if not data or "train_runtime" in data:
            return
        step = int(state.global_step)
        message = ", ".join(f"{k} {v:.4g}" for k, v in data.items() if k in ("loss", "eval_loss", "learning_rate"))
        self._report(control, {"type": "metrics", "message": f"step {step}: {message}", "data": {"step": step, **data}})

    def _report(self, control: Any, event: dict[str, Any] | None) -> None:
        if self.hooks.progress(dict(self.progress), event):
            self.cancelled = True
            if self.world == 1:  # several ranks stop together, at the next step's broadcast
                control.should_training_stop = True
                control.should_save = False


def _lora(spec: FineTuningJobRequest) -> Any:
    lora = spec.hyperparameters.lora
    if lora is None:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )


def _trl(method: str, common: dict[str, Any], beta: float, sft_weight: float) -> tuple[Any, Any]:
    """TRL's trainer class for ``method`` and its config."""
    if method == "dpo":
        from trl.trainer.dpo_config import DPOConfig
        from trl.trainer.dpo_trainer import DPOTrainer

        losses: dict[str, Any] = {}
        if sft_weight > 0:  # RPO: DPO's loss plus the chosen answers' negative log-likelihood
            losses = {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, sft_weight]}
        return DPOTrainer, DPOConfig(**common, beta=beta, **losses)
    from trl.trainer.sft_config import SFTConfig
    from trl.trainer.sft_trainer import SFTTrainer

    return SFTTrainer, SFTConfig(**common, packing=False)


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class TrainingRun:
    """One training run: the job's spec and base model, its normalized rows (and validation rows),
    the work folder its checkpoints go to, where the result goes, and the checkpoint step it resumes."""

    spec: FineTuningJobRequest
    base: ModelConfig
    train_path: Path
    validation_path: Path | None
    work: Path
    out: Path
    resume_step: int | None = None


def train(run: TrainingRun, hooks: Hooks) -> TrainResult:
    """Train ``run.base`` on the normalized rows in ``run.train_path``; write the result under ``run.out``."""
    from datasets import Dataset
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hp = run.spec.hyperparameters
    device, world, rank = _device(), world_size(), int(os.environ.get("RANK", "0"))
    model, tokenizer, source = load_base(run.base, device)
    if run.base.adapter_path and hp.lora is not None and rank == 0:
        # A LoRA on a fine-tune: the new adapter sits on the parent's merged weights, kept beside it.
        merged = run.out / "base"
        model.save_pretrained(str(merged))
        tokenizer.save_pretrained(str(merged))
    train_rows = read_rows(run.train_path)
    validation = Dataset.from_list(read_rows(run.validation_path)) if run.validation_path is not None else None
    total = total_steps(len(train_rows), hp.batch_size, hp.epochs, world)
    resume_step = run.resume_step
    resume = checkpoint_dir(run.work, resume_step) if resume_step else None
    if resume is not None and not resume.is_dir():
        log.warning("checkpoint %s is gone; starting over", resume)
        resume, resume_step = None, None
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    reporter = _Reporter(hooks, total, resume_step, world, f"cuda:{local_rank}" if device == "cuda" else "cpu")
    trainer_cls, args = _trl(
        run.spec.method, _common_args(run, total, device, validation is not None), hp.beta, hp.sft_weight
    )
    trainer: Any = trainer_cls(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=validation,
        processing_class=tokenizer,
        peft_config=_lora(run.spec),
        callbacks=[reporter.callback()],
    )
    _quiet(trainer, world)
    started = f"resumed from step {resume_step} of {total}" if resume_step else f"training started: {total} steps"
    data = {"resumed_from_step": resume_step, "total_steps": total, "device": device, "processes": world}
    if hooks.progress(dict(reporter.progress), {"message": started, "data": data}):
        # cancelled while the model loaded: several ranks stop together at the first step
        reporter.cancelled = True
        if world == 1:
            return TrainResult(cancelled=True)
    output = trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    if reporter.cancelled:
        return TrainResult(cancelled=True)
    metrics = _metrics(trainer, output, validation is not None, len(train_rows))
    result = TrainResult(cancelled=False, metrics=metrics, history=list(trainer.state.log_history))
    if rank == 0:  # the weights are the same on every rank
        _save(trainer, tokenizer, run.base, source, run.out, result)
    return result


def _common_args(run: TrainingRun, total: int, device: str, validating: bool) -> dict[str, Any]:
    """The trainer's arguments that SFT and DPO share."""
    import torch

    hp, world = run.spec.hyperparameters, world_size()
    save_steps = hp.checkpoint_steps or max(1, total // 10)
    common: dict[str, Any] = {
        "output_dir": str(run.work),
        "num_train_epochs": hp.epochs,
        "learning_rate": hp.learning_rate,
        "per_device_train_batch_size": per_process_batch(hp.batch_size, world),
        "per_device_eval_batch_size": per_process_batch(hp.batch_size, world),
        "warmup_steps": math.ceil(hp.warmup_ratio * total),
        "weight_decay": hp.weight_decay,
        "lr_scheduler_type": "linear",
        "max_length": hp.max_length,
        "seed": hp.seed,
        "data_seed": hp.seed,
        "logging_steps": max(1, min(save_steps, total // 50 or 1)),
        "save_strategy": "steps",
        "save_steps": save_steps,
        "save_total_limit": 2,
        "eval_strategy": "steps" if validating else "no",
        "eval_steps": save_steps if validating else None,
        "report_to": "none",
        "disable_tqdm": True,
        "use_cpu": device == "cpu",
        "bf16": device == "cuda" and torch.cuda.is_bf16_supported(),
        "dataloader_num_workers": 0,
    }
    if world > 1:
        common.update(
            ddp_backend="nccl" if device == "cuda" else "gloo", ddp_timeout=600, ddp_find_unused_parameters=False
        )
    return common


def _quiet(trainer: Any, world: int) -> None:
    """Check the trainer sees every process, and send its progress to the hooks instead of stdout."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    if trainer.args.world_size != world:  # the process group did not form: each rank would train alone
        raise RuntimeError(f"{world} training processes, but the trainer sees {trainer.args.world_size}")
    for noisy in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(noisy)


def _metrics(trainer: Any, output: Any, validating: bool, train_rows: int) -> dict[str, Any]:
    metrics: dict[str, Any] = {k: v for k, v in output.metrics.items() if isinstance(v, int | float)}
    if validating:
        metrics["validation_loss"] = trainer.evaluate().get("eval_loss")
    metrics["steps"] = int(trainer.state.global_step)
    metrics["train_rows"] = train_rows
    metrics["processes"] = trainer.args.world_size
    return metrics


def _save(trainer: Any, tokenizer: Any, base: ModelConfig, source: Path, out: Path, result: TrainResult) -> None:
    """The adapter (LoRA) or the whole model (full fine-tuning) under ``out``; for a LoRA on a base
    that is itself a fine-tune, the merged base too, so the new model serves as base + its adapter."""
    out.mkdir(parents=True, exist_ok=True)
    model = trainer.model
    if hasattr(model, "peft_config"):
        adapter = out / "adapter"
        model.save_pretrained(str(adapter))
        result.adapter_path = adapter
        result.model_path = out / "base" if base.adapter_path else source  # saved before training
    else:
        full = out / "model"
        model.save_pretrained(str(full))
        tokenizer.save_pretrained(str(full))
        result.model_path = full


def loss_curve(history: list[dict[str, Any]], path: Path, title: str) -> Path | None:
    """The train (and validation) loss by step as a PNG, like an SDG job's score histogram."""
    train = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
    evals = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h and "step" in h]
    if not train and not evals:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss")
    if evals:
        ax.plot(*zip(*evals, strict=True), marker="o", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=10)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path

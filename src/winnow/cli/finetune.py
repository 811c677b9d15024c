"""``winnow ft``: fine-tune a local model here (``run``, with a progress bar) or on a server
(``submit``, ``status``, ``wait``, ``list``, ``cancel``, ``events``, ``delete``)."""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.progress import TextColumn

from winnow.auth import Principal
from winnow.cli.common import ConfigOption, err, fail, load_settings, progress_bar, quiet_model_loading
from winnow.cli.remote import (
    AfterOption,
    KeyOption,
    LimitOption,
    ModelOption,
    StatusOption,
    UrlOption,
    list_filters,
    server,
    show,
)
from winnow.cli.styling import typer_app
from winnow.config import Settings
from winnow.errors import WinnowError
from winnow.schemas.finetune import FineTuningJob, FineTuningJobRequest

if TYPE_CHECKING:
    from winnow.runtime import Runtime

ft_app = typer_app("Fine-tune local models on training data Winnow made (TRL + PEFT LoRA).")

Base = Annotated[str, typer.Option("--base", help="The local model to train (a fine-tuned one too)", metavar="MODEL")]
File = Annotated[
    Path | None,
    typer.Option("--file", help="A JSONL training file here (TRL formats; uploaded for a server)", dir_okay=False),
]
SdgJob = Annotated[str | None, typer.Option("--sdg-job", help="Train on a completed SDG job's output", metavar="ID")]
Feedback = Annotated[bool, typer.Option("--feedback", help="Train on the feedback export")]
Method = Annotated[Literal["sft", "dpo"], typer.Option("--method", help="sft, or dpo on preference pairs")]
Epochs = Annotated[int, typer.Option("--epochs", help="Passes over the training rows")]
Lr = Annotated[float, typer.Option("--lr", help="Learning rate")]
Batch = Annotated[int, typer.Option("--batch-size", help="Rows per step")]
Rank = Annotated[int, typer.Option("--lora-r", help="LoRA rank")]
Full = Annotated[bool, typer.Option("--full", help="Train every weight instead of a LoRA adapter")]
Split = Annotated[float, typer.Option("--validation-split", help="Fraction held out for validation loss")]
Suffix = Annotated[str | None, typer.Option("--suffix", help="Goes into the new model's id", metavar="NAME")]
Seed = Annotated[int, typer.Option("--seed", help="Same seed, same run")]


@dataclass(frozen=True)
class _Recipe:
    """What a fine-tuning command's options say about the job (all but where its data is)."""

    base: str
    sdg_job: str | None
    feedback: bool
    method: str
    epochs: int
    lr: float
    batch_size: int
    lora_r: int
    full: bool
    validation_split: float
    suffix: str | None
    seed: int

    @classmethod
    def of(cls, options: dict[str, Any]) -> _Recipe:
        """The recipe among a command's options (its ``locals()``)."""
        return cls(**{field.name: options[field.name] for field in fields(cls)})

    def request(self, training_file: str | None) -> FineTuningJobRequest:
        hyper: dict[str, Any] = {
            "epochs": self.epochs,
            "learning_rate": self.lr,
            "batch_size": self.batch_size,
            "seed": self.seed,
        }
        hyper["lora"] = None if self.full else {"r": self.lora_r, "alpha": 2 * self.lora_r}
        body = {
            "base_model": self.base,
            "method": self.method,
            "training_file": training_file,
            "sdg_job": self.sdg_job,
            "feedback": self.feedback,
            "validation_split": self.validation_split,
            "hyperparameters": hyper,
            "suffix": self.suffix,
        }
        try:
            return FineTuningJobRequest.model_validate({k: v for k, v in body.items() if v is not None})
        except ValueError as exc:
            raise fail("invalid fine-tuning job", str(exc).splitlines()[-1].strip()) from exc


Processes = Annotated[
    int | None,
    typer.Option(
        "--processes",
        min=1,
        help="Training processes (PyTorch DDP): one per GPU by default, 1 on CPU [setting fine_tuning_processes]",
    ),
]


@ft_app.command("run")
def run(  # noqa: PLR0913 (a Typer command: each parameter is one of its options)
    base: Base = "demo-lm",
    file: File = None,
    sdg_job: SdgJob = None,
    feedback: Feedback = False,
    method: Method = "sft",
    epochs: Epochs = 3,
    lr: Lr = 1e-3,
    batch_size: Batch = 16,
    lora_r: Rank = 16,
    full: Full = False,
    validation_split: Split = 0.0,
    suffix: Suffix = None,
    seed: Seed = 0,
    processes: Processes = None,
    config: ConfigOption = None,
) -> None:
    """Fine-tune in this process with a progress bar; the new model is registered in this data dir's
    database, so `winnow serve` (and every server sharing it) serves it at once to admin keys."""
    quiet_model_loading()
    from winnow.runtime import Runtime

    settings = load_settings(config)
    if processes is not None:
        settings = settings.model_copy(update={"fine_tuning_processes": processes})
    runtime = Runtime.open(settings)
    spec = _Recipe.of(locals()).request(_copied_here(settings, file))
    try:
        final, model = _train_here(runtime, spec)
    finally:
        runtime.db.dispose()
    show(final)
    typer.echo(model)


def _copied_here(settings: Settings, file: Path | None) -> str | None:
    """A training file copied into the data dir, where a job's inputs live."""
    if file is None:
        return None
    target = settings.data_dir / "files" / "0" / f"file-{uuid.uuid4().hex[:24]}.jsonl"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(file, target)
    return str(target)


def _train_here(runtime: Runtime, spec: FineTuningJobRequest) -> tuple[FineTuningJob, str]:
    """Submit ``spec`` as the machine's operator, claim it and train it in this process."""
    from winnow.finetune.runner import run_fine_tuning
    from winnow.jobs.worker import worker_id

    operator = Principal(id=0, name="cli", is_admin=True)  # the machine's operator: admin keys see its models

    def feedback_rows(owner: Principal, fmt: str) -> list[dict[str, Any]]:
        rows, why = runtime.feedback.export(owner, "preference" if fmt == "preference" else "sft")
        if not rows:
            raise fail("the feedback export has no training rows", why)
        return list(rows)

    me = worker_id()
    row = None
    try:
        job = runtime.fine_tuning.submit(spec, operator, feedback_rows)
        row = runtime.jobs.claim(me, job_id=job.id)
        if row is None:
            raise fail("a worker took the job first", f"follow it with `winnow ft status {job.id}`")
        err.print(f"{job.id}: {spec.method} on {spec.base_model}")
        with progress_bar(TextColumn("loss {task.fields[loss]}")) as bar:
            task = bar.add_task("training", total=None, loss="-")

            def watch(progress: dict[str, Any]) -> None:
                loss = progress.get("train_loss")
                shown = f"{loss:.4f}" if isinstance(loss, float) else "-"
                bar.update(task, completed=progress.get("step", 0), total=progress.get("total_steps"), loss=shown)

            model = run_fine_tuning(runtime.settings, runtime.jobs, runtime.fine_tuning, row, me, watch)
        return runtime.fine_tuning.get(job.id, operator), model
    except KeyboardInterrupt:
        if row is not None:
            runtime.jobs.release(row.id, me)
            err.print(f"interrupted: a worker resumes {row.id} from its last checkpoint (or `winnow serve`)")
        raise typer.Exit(130) from None
    except WinnowError as exc:
        raise fail(exc.message, exc.details) from exc


@ft_app.command("submit")
def submit(  # noqa: PLR0913 (a Typer command: each parameter is one of its options)
    base: Base = "demo-lm",
    file: File = None,
    training_file: Annotated[
        str | None, typer.Option("--training-file", help="A training file's path on the server", metavar="PATH")
    ] = None,
    sdg_job: SdgJob = None,
    feedback: Feedback = False,
    method: Method = "sft",
    epochs: Epochs = 3,
    lr: Lr = 1e-3,
    batch_size: Batch = 16,
    lora_r: Rank = 16,
    full: Full = False,
    validation_split: Split = 0.0,
    suffix: Suffix = None,
    seed: Seed = 0,
    wait: Annotated[bool, typer.Option("--wait", help="Follow it with a progress bar until it ends")] = False,
    url: UrlOption = None,
    key: KeyOption = None,
) -> None:
    """Queue a fine-tuning job on a server (a --file here is uploaded first)."""
    with server(url, key) as client:
        if file is not None:
            training_file = client.files.upload(file, purpose="fine-tune").path
        spec = _Recipe.of(locals()).request(training_file)
        job = client.fine_tuning.create(**spec.model_dump(mode="json", exclude_defaults=True))
        if wait:
            job = client.fine_tuning.wait(job.id)
    show(job)
    if wait and job.status != "completed":
        raise typer.Exit(1)


JobId = Annotated[str, typer.Argument(help="The job's id (ftjob-...)", show_default=False)]


@ft_app.command("status")
def status(job_id: JobId, url: UrlOption = None, key: KeyOption = None) -> None:
    """A job's status, progress (step, loss, tokens/s, ETA) and, once done, its model and metrics."""
    with server(url, key) as client:
        show(client.fine_tuning.retrieve(job_id))


@ft_app.command("wait")
def wait_job(job_id: JobId, url: UrlOption = None, key: KeyOption = None) -> None:
    """Follow a job with a progress bar until it ends (exit 1 unless completed)."""
    with server(url, key) as client:
        job = client.fine_tuning.wait(job_id)
    show(job)
    if job.status != "completed":
        raise typer.Exit(1)


@ft_app.command("list")
def list_jobs(
    url: UrlOption = None,
    key: KeyOption = None,
    limit: LimitOption = None,
    after: AfterOption = None,
    status: StatusOption = None,
    model: ModelOption = None,
) -> None:
    """A page of your fine-tuning jobs, newest first (has_more: true means older ones follow: --after LAST_ID)."""
    with server(url, key) as client:
        show(client.fine_tuning.list(**list_filters(limit, after, status, model)))


@ft_app.command("cancel")
def cancel(job_id: JobId, url: UrlOption = None, key: KeyOption = None) -> None:
    """Cancel a queued or running job (a running one stops at its next step)."""
    with server(url, key) as client:
        show(client.fine_tuning.cancel(job_id))


@ft_app.command("events")
def events(job_id: JobId, url: UrlOption = None, key: KeyOption = None) -> None:
    """A job's events: lifecycle messages and metrics, oldest first."""
    with server(url, key) as client:
        after = 0
        while True:
            page = client.fine_tuning.events(job_id, after=after, limit=1000)
            for event in page.data:
                typer.echo(f"{event.created_at} {event.level:5} {event.message}")
            after += len(page.data)
            if not page.has_more:
                return


@ft_app.command("delete")
def delete(
    model_id: Annotated[str, typer.Argument(help="A fine-tuned model's id", show_default=False)],
    url: UrlOption = None,
    key: KeyOption = None,
) -> None:
    """Delete a fine-tuned model: every server process stops serving it and its files go."""
    with server(url, key) as client:
        show(client.fine_tuning.delete_model(model_id))

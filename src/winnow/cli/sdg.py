"""``winnow sdg``: run a synthetic-data job in this process, or drive a server's jobs over HTTP;
``winnow worker``: a job worker."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import typer
from rich.progress import TextColumn

from winnow.cli.common import ConfigOption, err, fail, load_settings, progress_bar, resume_dir, work_dir
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
from winnow.client.params import SubmitJobParams
from winnow.config import Settings
from winnow.errors import WinnowError
from winnow.schemas.sdg import FilteringFunction, OutputKind, SubmitJobRequest
from winnow.sdg.outputs import OUTPUT_PATHS, ExportFormat, Output, export, import_datasets
from winnow.sdg.report import summary_path
from winnow.sdg.reward import open_registries
from winnow.sdg.runner import Progress as JobProgress
from winnow.sdg.service import LocalRun, check_spec, run_local
from winnow.sdg.workfiles import FileCheckpoint
from winnow.usage.service import cli_usage

sdg_app = typer_app("Synthetic data generation: generate -> reward-score -> filter -> JSONL.")


PromptsOption = Annotated[
    Path, typer.Option("--prompts", help="JSONL of prompts", exists=True, dir_okay=False, show_default=False)
]
OutputOption = Annotated[
    Path, typer.Option("--output", "-o", help="Where the PromptResponseScore JSONL goes", show_default=False)
]
GenModel = Annotated[str, typer.Option(help="Generation model id", metavar="MODEL")]
RewardModel = Annotated[str, typer.Option("--reward-model", help="Reward model id", metavar="MODEL")]
Generations = Annotated[int, typer.Option("--num-generations", "-n", help="Responses per prompt")]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Prompts per chunk")]
Temperature = Annotated[float, typer.Option(help="Sampling temperature (0 = greedy)")]
TopP = Annotated[float, typer.Option("--top-p", help="Nucleus sampling: the smallest set of tokens with this mass")]
MaxGenLen = Annotated[int, typer.Option("--max-gen-len", help="Most tokens per response")]
Scoring = Annotated[
    str, typer.Option("--scoring-function", help="raw, sigmoid, zscore, rank, exact_match[:field], ...")
]
FilterName = Annotated[str, typer.Option("--filter", help="none, threshold, best_of_n, top_k, top_p, ...")]
FilterParams = Annotated[str, typer.Option("--filter-params", help="JSON object of filter parameters", metavar="JSON")]
SystemPrompt = Annotated[str | None, typer.Option("--system-prompt", help="Sent first with every prompt that has none")]
SeedOption = Annotated[int | None, typer.Option(help="Reproducible sampling")]
Restart = Annotated[bool, typer.Option("--restart", help="Discard an interrupted run of OUTPUT")]
Force = Annotated[bool, typer.Option("--force", help="Regenerate OUTPUT even if a run like this one completed it")]
Executor = Annotated[
    Literal["local", "ray"] | None, typer.Option("--executor", help="Where chunks run (default from config: local)")
]
Also = Annotated[
    str | None,
    typer.Option(
        "--also", help="Training sets beside OUTPUT: preference, sft or both (preference,sft)", metavar="SETS"
    ),
]


@sdg_app.command("run")
def run(  # noqa: PLR0913 (a Typer command: each parameter is one of its options)
    prompts: PromptsOption,
    output: OutputOption,
    model: GenModel = "demo-lm",
    reward_model: RewardModel = "demo-rm",
    num_generations: Generations = 1,
    batch_size: BatchSize = 32,
    temperature: Temperature = 0.7,
    top_p: TopP = 1.0,
    max_gen_len: MaxGenLen = 100,
    scoring_function: Scoring = "raw",
    filter_name: FilterName = "none",
    filter_params: FilterParams = "{}",
    system_prompt: SystemPrompt = None,
    seed: SeedOption = None,
    restart: Restart = False,
    force: Force = False,
    executor: Executor = None,
    also: Also = None,
    config: ConfigOption = None,
) -> None:
    """Run a job in this process with a progress bar; an interrupted run resumes where it stopped."""
    settings = load_settings(config)
    try:
        spec = SubmitJobRequest(
            model=model,
            prompts_path=str(prompts.resolve()),
            batch_size=batch_size,
            temperature=temperature,
            top_p=top_p,
            max_gen_len=max_gen_len,
            num_generations=num_generations,
            reward_model=reward_model,
            scoring_function=scoring_function,
            filtering_function=FilteringFunction(name=filter_name, params=json.loads(filter_params)),
            system_prompt=system_prompt,
            seed=seed,
            executor=executor,
            outputs=cast(list[OutputKind], [name.strip() for name in (also or "").split(",") if name.strip()]),
        )
    except (ValueError, json.JSONDecodeError) as exc:
        raise fail("invalid parameters", str(exc)) from exc
    # The local user may read any file: this process's data roots are the file's own folder.
    settings = settings.model_copy(update={"data_roots": [prompts.resolve().parent]})
    _run_here(spec, settings, output, fresh=restart or force, force=force)


def _run_here(spec: SubmitJobRequest, settings: Settings, output: Path, fresh: bool, force: bool) -> None:
    """``sdg run`` once its spec is built: skip a run that is already complete, else run (or resume) it."""
    finished = None if force else _finished(output, spec)
    if finished is not None:
        counts = finished["counts"]
        err.print(
            f"{output} is already complete ({counts['rows_kept']} rows from {counts['prompts_read']} prompts): "
            "nothing to do (--force regenerates it)",
            soft_wrap=True,
        )
        typer.echo(str(output))
        return
    work = resume_dir(output, spec.model_dump_json(), fresh)
    try:
        summary = asyncio.run(_go(spec, settings, work, output.resolve()))
    except WinnowError as exc:
        raise fail(exc.message, exc.details) from exc
    shutil.rmtree(work, ignore_errors=True)
    counts = summary["counts"]
    err.print(
        f"kept {counts['rows_kept']} of {counts['responses_generated']} responses "
        f"({summary['kept_ratio']:.1%}) from {counts['prompts_read']} prompts; errors: {counts['errors']}"
    )
    typer.echo(str(output))


async def _go(spec: SubmitJobRequest, settings: Settings, work: Path, output: Path) -> dict[str, Any]:
    async with open_registries(settings) as (models, rewards), cli_usage(settings) as usage:
        prompt_file = check_spec(spec, settings, models, rewards)
        checkpoint = FileCheckpoint(work / "checkpoint.json", usage)
        meter = checkpoint.meter(spec.model)  # usage rows, source cli
        done = _resume_point(checkpoint.load(), prompt_file.rows, spec.batch_size)
        with progress_bar(TextColumn("{task.fields[rate]} prompts/s")) as bar:
            task = bar.add_task("prompts", total=prompt_file.rows, completed=done, rate="-")

            def show(p: JobProgress) -> None:
                elapsed = p.timings.get("total_s", 0.0)
                rate = f"{p.counts.prompts_read / elapsed:.1f}" if elapsed else "-"
                bar.update(task, completed=p.counts.prompts_read, rate=rate, description=p.stage)

            run = LocalRun(work, output, checkpoint, meter=meter, on_progress=show)
            return await run_local(spec, prompt_file, settings, (models, rewards), run)


def _finished(output: Path, spec: SubmitJobRequest) -> dict[str, Any] | None:
    """The summary of the completed run of ``spec`` that wrote ``output``, while that is still what
    is there: the summary beside it names these parameters, no run of them is under way (an
    interrupted ``--force`` run resumes), and the prompts have not changed since."""
    try:
        summary: dict[str, Any] = json.loads(summary_path(output).read_text())
        current = output.stat().st_mtime >= Path(spec.prompts_path).stat().st_mtime
    except (OSError, ValueError):
        return None
    state = FileCheckpoint(work_dir(output) / "checkpoint.json").load()
    same = summary.get("params") == spec.model_dump(mode="json") and summary.get("output") == str(output.resolve())
    return summary if same and current and state.get("stage", "finalizing") == "finalizing" else None


def _resume_point(state: dict[str, Any], prompts: int, batch_size: int) -> int:
    """Say where an interrupted run resumes (from its checkpoint's ``state``); the prompts done."""
    chunks_done = int(state.get("chunks_done", 0))
    done = int(state.get("counts", {}).get("prompts_read", 0))
    chunks = -(-prompts // batch_size)
    if chunks_done and chunks_done < chunks:
        err.print(f"Resuming at chunk {chunks_done + 1} of {chunks} ({done} prompts done)")
    elif chunks_done:
        err.print(f"Resuming after the last of {chunks} chunks ({done} prompts done): writing the output")
    return done


# -- talking to a server ----------------------------------------------------------------------
@sdg_app.command("submit")
def submit(
    body: Annotated[str, typer.Argument(help="The submit_job body as JSON, or @file.json", show_default=False)],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate and estimate tokens and cost; queue nothing")
    ] = False,
    url: UrlOption = None,
    key: KeyOption = None,
) -> None:
    """Submit a job to a server (the seed's submit_job body)."""
    text = Path(body[1:]).read_text() if body.startswith("@") else body
    try:
        params = json.loads(text)
    except ValueError as exc:
        raise fail("the body is not JSON", str(exc)) from exc
    if not isinstance(params, dict):
        raise fail("the body is not a JSON object")
    if dry_run:
        params["dry_run"] = True
    with server(url, key) as client:
        show(client.sdg.submit(**cast(SubmitJobParams, params)))


JobId = Annotated[str, typer.Argument(help="The job's id (as submit printed it)", show_default=False)]


@sdg_app.command("status")
def status(job_id: JobId, url: UrlOption = None, key: KeyOption = None) -> None:
    """A job's status, progress and ETA."""
    with server(url, key) as client:
        show(client.sdg.status(job_id))


@sdg_app.command("wait")
def wait(job_id: JobId, url: UrlOption = None, key: KeyOption = None) -> None:
    """Wait for a job to end, with a progress bar on a terminal; print its status (exit 1 unless completed)."""
    with server(url, key) as client:
        job = client.sdg.wait(job_id)
    show(job)
    if job.status != "completed":
        raise typer.Exit(1)


@sdg_app.command("list")
def list_jobs(
    url: UrlOption = None,
    key: KeyOption = None,
    limit: LimitOption = None,
    after: AfterOption = None,
    status: StatusOption = None,
    model: ModelOption = None,
) -> None:
    """A page of your jobs, newest first (has_more: true means older ones follow: --after LAST_ID)."""
    with server(url, key) as client:
        show(client.sdg.list(**list_filters(limit, after, status, model)))


@sdg_app.command("cancel")
def cancel(job_id: JobId, url: UrlOption = None, key: KeyOption = None) -> None:
    """Cancel a queued or running job (a running one stops after its current chunk)."""
    with server(url, key) as client:
        show(client.sdg.cancel(job_id))


@sdg_app.command("download")
def download(
    job_id: JobId,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where the output JSONL goes", show_default=False)],
    url: UrlOption = None,
    key: KeyOption = None,
) -> None:
    """Download a completed job's output JSONL (OUTPUT appears whole or not at all)."""
    with server(url, key) as client:
        client.sdg.download(job_id, output)
    typer.echo(str(output))


@sdg_app.command("export")
def export_job(
    job: Annotated[
        str, typer.Argument(help="A server job's id, or the OUTPUT of an in-process run", show_default=False)
    ],
    to: Annotated[Path, typer.Option("--to", help="Where the export goes (a folder for hf)", show_default=False)],
    format: Annotated[
        ExportFormat, typer.Option("--format", "-f", help="parquet, jsonl, or hf (a Hugging Face dataset folder)")
    ] = "parquet",
    output: Annotated[Output, typer.Option("--output", help="Which of the job's outputs")] = "rows",
    url: UrlOption = None,
    key: KeyOption = None,
) -> None:
    """Export a completed job's rows, preference pairs or SFT set as Parquet, JSONL or a Hugging Face dataset."""
    local = Path(job)
    try:
        if format == "hf":
            import_datasets().disable_progress_bars()  # the CLI draws no bars of other libraries
        if local.is_file():
            source = OUTPUT_PATHS[output](local)
            if not source.exists():
                raise fail(f"{source} does not exist", f"run the job with --also {output}")
            with source.open("rb") as lines:
                export(lines, format, to)
        else:
            with server(url, key) as client:
                client.sdg.export(job, to, format, output)
    except ImportError as exc:
        raise fail(str(exc)) from exc
    typer.echo(str(to))


def worker(
    config: ConfigOption = None,
    parent_pid: Annotated[int | None, typer.Option("--parent-pid", help="Stop when this process is gone")] = None,
) -> None:
    """Run an SDG job worker (claims queued jobs from the database)."""
    from winnow import telemetry
    from winnow.jobs.worker import Worker
    from winnow.logs import configure_logging

    settings = load_settings(config)
    configure_logging(settings.log_level, settings.log_json)
    telemetry.configure("winnow-worker")  # job spans, where an OTLP endpoint is configured

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        import signal

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Worker(settings).run_forever(stop, parent_pid)

    try:
        asyncio.run(go())
    finally:
        telemetry.shutdown()  # the spans still buffered go out

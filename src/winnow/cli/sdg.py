"""``winnow sdg``: run a synthetic-data job in this process, or drive a server's jobs over HTTP;
``winnow worker``: a job worker."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import TextColumn

from winnow.cli.common import ConfigOption, err, fail, load_settings, progress_bar, resume_dir
from winnow.cli.remote import KeyOption, UrlOption, answer, server, show
from winnow.errors import WinnowError
from winnow.schemas.sdg import FilteringFunction, SubmitJobRequest
from winnow.sdg.reward import open_registries
from winnow.sdg.runner import FileCheckpoint
from winnow.sdg.runner import Progress as JobProgress
from winnow.sdg.service import build_plan, check_spec, make_runner

sdg_app = typer.Typer(
    help="Synthetic data generation: generate -> reward-score -> filter -> JSONL.", no_args_is_help=True
)


@sdg_app.command("run")
def run(
    prompts: Annotated[Path, typer.Option("--prompts", help="JSONL of prompts", exists=True, dir_okay=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where the PromptResponseScore JSONL goes")],
    model: Annotated[str, typer.Option(help="Generation model id")] = "demo-lm",
    reward_model: Annotated[str, typer.Option("--reward-model", help="Reward model id")] = "demo-rm",
    num_generations: Annotated[int, typer.Option("--num-generations", "-n", help="Responses per prompt")] = 1,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Prompts per chunk")] = 32,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (0 = greedy)")] = 0.7,
    top_p: Annotated[float, typer.Option("--top-p")] = 1.0,
    max_gen_len: Annotated[int, typer.Option("--max-gen-len", help="Most tokens per response")] = 100,
    scoring_function: Annotated[
        str, typer.Option("--scoring-function", help="raw, sigmoid, zscore, rank, exact_match[:field], ...")
    ] = "raw",
    filter_name: Annotated[
        str, typer.Option("--filter", help="none, threshold, best_of_n, top_k, top_p, ...")
    ] = "none",
    filter_params: Annotated[str, typer.Option("--filter-params", help="JSON object of filter parameters")] = "{}",
    system_prompt: Annotated[str | None, typer.Option("--system-prompt")] = None,
    seed: Annotated[int | None, typer.Option(help="Reproducible sampling")] = None,
    restart: Annotated[bool, typer.Option("--restart", help="Discard an interrupted run of this output")] = False,
    executor: Annotated[
        str | None, typer.Option("--executor", help="local or ray (default from config: local)")
    ] = None,
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
        )
    except (ValueError, json.JSONDecodeError) as exc:
        raise fail("invalid parameters", str(exc)) from exc
    # The local user may read any file: this process's data roots are the file's own folder.
    settings = settings.model_copy(update={"data_roots": [prompts.resolve().parent]})
    work = resume_dir(output, spec.model_dump_json(), restart)

    async def go() -> dict[str, Any]:
        async with open_registries(settings) as (models, rewards):
            prompt_file = check_spec(spec, settings, models, rewards)
            plan = build_plan(spec, prompt_file, models, rewards)
            with progress_bar(TextColumn("{task.fields[rate]} prompts/s")) as bar:
                task = bar.add_task("prompts", total=prompt_file.rows, rate="-")

                def show(p: JobProgress) -> None:
                    elapsed = p.timings.get("total_s", 0.0)
                    rate = f"{p.counts.prompts_read / elapsed:.1f}" if elapsed else "-"
                    bar.update(task, completed=p.counts.prompts_read, rate=rate, description=p.stage)

                checkpoint = FileCheckpoint(work / "checkpoint.json")
                runner = make_runner(plan, settings, work, output.resolve(), checkpoint, show)
                return await runner.run()

    try:
        summary = asyncio.run(go())
    except WinnowError as exc:
        raise fail(exc.message, exc.details) from exc
    shutil.rmtree(work, ignore_errors=True)
    counts = summary["counts"]
    err.print(
        f"kept {counts['rows_kept']} of {counts['responses_generated']} responses "
        f"({summary['kept_ratio']:.1%}) from {counts['prompts_read']} prompts; errors: {counts['errors']}"
    )
    typer.echo(str(output))


# -- talking to a server ----------------------------------------------------------------------
@sdg_app.command("submit")
def submit(
    body: Annotated[str, typer.Argument(help="The submit_job body as JSON, or @file.json", show_default=False)],
    url: UrlOption = None,
    key: KeyOption = None,
) -> None:
    """Submit a job to a server (the seed's submit_job body)."""
    text = Path(body[1:]).read_text() if body.startswith("@") else body
    with server(url, key) as client:
        show(
            client.post(
                "/synthetic_data_generation/submit_job", content=text, headers={"Content-Type": "application/json"}
            )
        )


JobId = Annotated[str, typer.Argument(help="The job's id (as submit printed it)", show_default=False)]


@sdg_app.command("status")
def status(job_id: JobId, url: UrlOption = None, key: KeyOption = None) -> None:
    """A job's status, progress and ETA."""
    with server(url, key) as client:
        show(client.get("/synthetic_data_generation/job_status", params={"job_id": job_id}))


@sdg_app.command("list")
def list_jobs(url: UrlOption = None, key: KeyOption = None) -> None:
    """Your jobs, newest first."""
    with server(url, key) as client:
        show(client.get("/synthetic_data_generation/jobs"))


@sdg_app.command("cancel")
def cancel(job_id: JobId, url: UrlOption = None, key: KeyOption = None) -> None:
    """Cancel a queued or running job (a running one stops after its current chunk)."""
    with server(url, key) as client:
        show(client.post(f"/synthetic_data_generation/jobs/{job_id}/cancel"))


@sdg_app.command("download")
def download(
    job_id: JobId,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where the output JSONL goes", show_default=False)],
    url: UrlOption = None,
    key: KeyOption = None,
) -> None:
    """Download a completed job's output JSONL."""
    part = output.with_name(output.name + ".part")  # the output appears whole or not at all
    with (
        server(url, key) as client,
        client.stream("GET", f"/synthetic_data_generation/jobs/{job_id}/output") as response,
    ):
        if response.status_code >= 400:
            response.read()
            answer(response)
        try:
            with part.open("wb") as handle:
                for block in response.iter_bytes():
                    handle.write(block)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
    part.replace(output)
    typer.echo(str(output))


def worker(
    config: ConfigOption = None,
    parent_pid: Annotated[int | None, typer.Option("--parent-pid", help="Stop when this process is gone")] = None,
) -> None:
    """Run an SDG job worker (claims queued jobs from the database)."""
    from winnow.logs import configure_logging
    from winnow.sdg.worker import Worker

    settings = load_settings(config)
    configure_logging(settings.log_level, settings.log_json)

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        import signal

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Worker(settings).run_forever(stop, parent_pid)

    asyncio.run(go())

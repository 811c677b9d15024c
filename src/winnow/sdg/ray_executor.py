"""The Ray executor: the local runner's stages, scheduled as a Ray Data pipeline.

    chunk numbers -> read (the chunk's JSONL rows) -> map_batches(generate) on an actor pool that
    holds the model -> map_batches(score + chunk filter) on an actor pool that holds the reward
    model -> the driver writes, checkpoints and filters exactly as the local runner does.

One chunk is one batch all the way through, generated with the chunk's own seed
(``runner.job_params``), so with fixed seeds the rows are the local executor's, byte for byte.
The driver is the worker (or ``winnow sdg run``) that holds the job: it writes chunks in order and
checkpoints after each, so progress, cancel and crash-resume behave as with the local executor;
after a crash, the chunks in flight on the cluster are simply done again.

``RAY_ADDRESS`` (or ``ray.address`` in the config) names a cluster; without one a local Ray starts
on demand. Every node needs Winnow installed and the data directory at the same path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from winnow.config import Settings
from winnow.errors import InvalidRequest
from winnow.models.base import Completion, GenerationResult
from winnow.schemas.sdg import SubmitJobRequest
from winnow.sdg import stages
from winnow.sdg.inputs import parse_line
from winnow.sdg.rows import Candidate, PromptRow
from winnow.sdg.runner import LocalRunner, Progress, job_params
from winnow.sdg.workfiles import Save


def ray_module() -> Any:
    try:
        import ray
    except ImportError:
        raise InvalidRequest("executor 'ray' needs Ray installed", "pip install 'winnow[ray]'") from None
    return ray


def _rows_json(rows: list[PromptRow]) -> str:
    return json.dumps([{"id": r.id, "messages": r.messages, "fields": r.fields, "line": r.line} for r in rows])


def _rows(text: str) -> list[PromptRow]:
    return [PromptRow(r["id"], r["messages"], r["fields"], r["line"]) for r in json.loads(text)]


def _outcome_json(rows: list[PromptRow], outcome: stages.GenerateOutcome, usage: list[Any] | None = None) -> str:
    """A chunk's outcome between stages; ``usage`` (per row: tokens in, out, latency, or None) is taken
    from the outcome's results unless given (a deserialized outcome carries no results)."""
    position = {id(row): i for i, row in enumerate(rows)}
    if usage is None:
        usage = [
            None if r.error is not None else [r.input_tokens, r.output_tokens, r.latency_ms] for r in outcome.results
        ]
    return json.dumps(
        {
            "candidates": [
                [position[id(c.row)], c.index, c.text, c.stop_reason, c.output_tokens, c.raw_score, c.score]
                for c in outcome.candidates
            ],
            "failed": [[position[id(row)], reason] for row, reason in outcome.failed],
            "input_tokens": outcome.input_tokens,
            "output_tokens": outcome.output_tokens,
            "usage": usage,
            "elapsed_ms": outcome.elapsed_ms,
        }
    )


def _outcome(rows: list[PromptRow], text: str) -> tuple[stages.GenerateOutcome, list[Any]]:
    data = json.loads(text)
    candidates = [
        Candidate(rows[row], index, body, stop, tokens, raw, score)
        for row, index, body, stop, tokens, raw, score in data["candidates"]
    ]
    outcome = stages.GenerateOutcome(
        candidates,
        [(rows[row], reason) for row, reason in data["failed"]],
        data["input_tokens"],
        data["output_tokens"],
        elapsed_ms=data["elapsed_ms"],
    )
    return outcome, data["usage"]


class _Stage:
    """An actor of the pipeline: settings and the job's spec, and an event loop of its own (the
    model's batching engine lives on it)."""

    def __init__(self, settings: dict[str, Any], spec: dict[str, Any]) -> None:
        import sqlalchemy

        from winnow.db import Database
        from winnow.models.registry import ModelRegistry

        self.settings = Settings(**settings)
        self.spec = SubmitJobRequest.model_validate(spec)
        # The database too, when it has one: a job may sample a fine-tuned model (the
        # fine_tuned_models table); an in-process run (`winnow sdg run`) may have no database.
        db = Database(self.settings.effective_database_url)
        migrated = sqlalchemy.inspect(db.engine).has_table("fine_tuned_models")
        if not migrated:
            db.dispose()
        self.models = ModelRegistry(self.settings, db if migrated else None)
        self.loop = asyncio.new_event_loop()


class Generate(_Stage):
    def __init__(self, settings: dict[str, Any], spec: dict[str, Any]) -> None:
        super().__init__(settings, spec)
        self.provider = self.models.provider(self.spec.model)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        outcomes, seconds = [], []
        for text in batch["rows"]:
            rows = _rows(text)
            started = time.perf_counter()
            outcome = self.loop.run_until_complete(stages.generate(rows, self.provider, job_params(self.spec)))
            seconds.append(time.perf_counter() - started)
            outcomes.append(_outcome_json(rows, outcome))
        return {"chunk": batch["chunk"], "rows": batch["rows"], "outcome": outcomes, "generate_s": seconds}


class Score(_Stage):
    def __init__(self, settings: dict[str, Any], spec: dict[str, Any]) -> None:
        from winnow.sdg.filters import split_filter
        from winnow.sdg.reward import RewardModelRegistry
        from winnow.sdg.scoring import resolve_scoring

        super().__init__(settings, spec)
        self.reward = RewardModelRegistry(self.settings, self.models).get(self.spec.reward_model)
        self.scoring, self.arg = resolve_scoring(self.spec.scoring_function)
        self.chunk_filter, _ = split_filter(self.spec)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        outcomes, kept_lists, seconds = [], [], []
        for text, outcome_text in zip(batch["rows"], batch["outcome"], strict=True):
            rows = _rows(text)
            outcome, usage = _outcome(rows, outcome_text)
            started = time.perf_counter()
            self.loop.run_until_complete(stages.score(outcome.candidates, self.reward, self.scoring, self.arg))
            kept = stages.keep(outcome.candidates, self.chunk_filter)
            seconds.append(time.perf_counter() - started)
            position = {id(c): i for i, c in enumerate(outcome.candidates)}
            kept_lists.append(json.dumps([position[id(c)] for c in kept]))
            outcomes.append(_outcome_json(rows, outcome, usage))
        return {
            "chunk": batch["chunk"],
            "rows": batch["rows"],
            "outcome": outcomes,
            "kept": kept_lists,
            "generate_s": batch["generate_s"],
            "score_s": seconds,
        }


class RayRunner(LocalRunner):
    """``LocalRunner`` with its chunk loop run as a Ray Data pipeline (see the module docstring)."""

    def __init__(self, *args: Any, settings: Settings, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings = settings

    async def _chunks(self, progress: Progress, files: dict[str, BinaryIO], save: Save) -> None:
        ray = ray_module()
        config = self.settings.ray
        if not ray.is_initialized():
            ray.init(
                address=config.address,
                num_cpus=None if config.address else config.num_cpus,
                include_dashboard=False,
                log_to_driver=False,
                ignore_reinit_error=True,
            )
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        spec, plan = self.plan.spec, self.plan
        first, count = self.rows
        start = first // spec.batch_size + progress.chunks_done
        end = first // spec.batch_size + -(-count // spec.batch_size)
        batch = spec.batch_size
        read = _chunk_reader(str(plan.prompts), spec.system_prompt, batch, first + count)
        shared = {"settings": self.settings.dump_for_child(), "spec": spec.model_dump(mode="json")}
        dataset = (
            ray.data.from_items(chunk_starts(plan.prompts, batch, start, end), override_num_blocks=max(end - start, 1))
            .map(read)
            .map_batches(
                Generate,
                fn_constructor_kwargs=shared,
                batch_size=1,
                concurrency=config.generate_replicas,
                num_cpus=config.generate_cpus,
                num_gpus=config.generate_gpus,
            )
            .map_batches(
                Score,
                fn_constructor_kwargs=shared,
                batch_size=1,
                concurrency=config.score_replicas,
                num_cpus=config.score_cpus,
                num_gpus=config.score_gpus,
            )
        )
        iterator = iter(dataset.iter_rows())
        self._pending: asyncio.Future[Any] | None = None
        try:
            await self._drain(iterator, progress, files, save)
        finally:
            # Stop the pipeline now (cancel, crash, budget), not whenever the iterator is collected;
            # a generator cannot be closed while a next() on it still runs in its thread.
            if self._pending is not None and not self._pending.done():
                await asyncio.wait({self._pending})
            close = getattr(iterator, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(close)

    async def _drain(self, iterator: Any, progress: Progress, files: dict[str, BinaryIO], save: Save) -> None:
        """Write the chunks as they come back, in order, checkpointing after each."""
        plan = self.plan
        while True:
            self._pending = asyncio.ensure_future(asyncio.to_thread(next, iterator, None))
            item = await self._pending
            if item is None:
                break
            rows = _rows(item["rows"])
            outcome, usage = _outcome(rows, item["outcome"])
            kept = [outcome.candidates[i] for i in json.loads(item["kept"])]
            timings = progress.timings
            timings["generate_s"] = timings.get("generate_s", 0.0) + float(item["generate_s"])
            timings["score_s"] = timings.get("score_s", 0.0) + float(item["score_s"])
            self.write_chunk(rows, outcome, kept, progress.counts, timings, files)
            progress.chunks_done += 1
            events = []  # usage as the cluster reported it, written with the chunk's checkpoint
            if plan.meter is not None:
                events = plan.meter.record([r.chat() for r in rows], _results(usage), outcome.elapsed_ms)
            save("generating", events)
            if plan.meter is not None:
                plan.meter.check([])  # the budget after the fact: this chunk is kept, the next waits


def chunk_starts(path: Path, batch: int, start: int, end: int) -> list[dict[str, int]]:
    """Where chunks ``start``..``end - 1`` begin in the file: byte offset and the line before."""
    starts: list[dict[str, int]] = []
    rows = offset = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle):
            if raw.strip():
                if rows % batch == 0 and start <= rows // batch < end:
                    starts.append({"chunk": rows // batch, "offset": offset, "line": number})
                rows += 1
            offset += len(raw)
    return starts


def _results(usage: list[Any]) -> list[GenerationResult]:
    """Token counts per row, as the meter records them (no texts: they are in the output)."""
    out = []
    for entry in usage:
        if entry is None:
            out.append(GenerationResult(error=RuntimeError("failed")))
        else:
            out.append(GenerationResult([Completion("", "stop", int(entry[1]))], int(entry[0]), latency_ms=entry[2]))
    return out


def _chunk_reader(
    path: str, system: str | None, batch: int, end_row: int
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """What reads a chunk's rows from its byte offset (one pass over the file in all), up to row ``end_row``."""

    def read(item: dict[str, Any]) -> dict[str, Any]:
        index, offset, line = int(item["chunk"]), int(item["offset"]), int(item["line"])
        wanted = min(batch, end_row - index * batch)
        rows: list[PromptRow] = []
        with Path(path).open("rb") as handle:
            handle.seek(offset)
            for raw in handle:
                line += 1
                text = raw.decode("utf-8")
                if text.strip():
                    rows.append(parse_line(text, line, system))
                    if len(rows) == wanted:
                        break
        return {"chunk": index, "rows": _rows_json(rows)}

    return read

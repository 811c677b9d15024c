"""The local executor: runs the stages chunk by chunk with a checkpoint after every chunk.

Crash safety. Every chunk appends its rows to files in the job's work directory, flushes and
fsyncs them, then saves a checkpoint naming the byte offset of every file and the chunks done.
A resumed job first truncates each file to its checkpointed offset (dropping a chunk that was
written but not checkpointed), then goes on from the next chunk: no row is lost, none doubled.
A worker that takes a job over works in a directory of its own (one per attempt), copied from the
previous attempt up to the checkpoint, so a stalled previous owner cannot write into it.
The final output is written to a temporary name and renamed, so it appears whole or not at all.

Memory stays bounded by one chunk: prompts are streamed, and filters that need the whole dataset
(global percentile / top-p) work from a spill file and a memory-mapped array of its scores.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from winnow import telemetry
from winnow.errors import WinnowError
from winnow.models.base import Provider, SamplingParams
from winnow.schemas.sdg import JobCounts, SubmitJobRequest
from winnow.schemas.structured_outputs import response_format_guide
from winnow.sdg import stages
from winnow.sdg.filters import GlobalFilter
from winnow.sdg.inputs import read_rows
from winnow.sdg.outputs import jsonl, preference_pairs, preference_path, write_sft
from winnow.sdg.report import write_histogram, write_summary
from winnow.sdg.reward import RewardModel
from winnow.sdg.rows import Candidate, PromptRow
from winnow.sdg.scoring import ScoringFn
from winnow.sdg.semantic import diversity, resume_from
from winnow.sdg.workfiles import Checkpoint, Save, copy_prefix, open_files, open_work, publish, snapshot
from winnow.usage.recorder import UsageEvent

# A generated chunk: its rows, what the model gave, the seconds it took, and its span (None: tracing off)
Generated = tuple[list[PromptRow], stages.GenerateOutcome, float, Any]


class EveryPromptFailed(WinnowError):
    """A job ran to its end, but no prompt got a response: its output is empty and its errors file
    says why for each prompt. (A WinnowError, so that ``winnow sdg run`` reports it as one.)"""

    def __init__(self, counts: JobCounts, first: dict[str, Any]) -> None:
        where = f"id {first.get('id')!r}, line {first.get('line')}"
        super().__init__(
            f"all {counts.prompts_read} prompts failed",
            f"the first ({where}): {first.get('error')}; the job's errors file lists every one",
        )
        self.counts = counts


def errors_path(output: Path) -> Path:
    """The failed prompts of a finished job, one JSON line each (id, index, line, error), beside its output."""
    return output.with_name(output.stem + ".errors.jsonl")


@dataclass
class JobPlan:
    """A validated job: its spec and the resolved pieces that run it."""

    spec: SubmitJobRequest
    prompts: Path
    prompts_total: int
    provider: Provider
    reward: RewardModel
    scoring: ScoringFn
    scoring_arg: str | None
    chunk_filter: Callable[[list[Candidate]], list[Candidate]]
    global_filter: GlobalFilter | None
    meter: stages.Meter | None = None  # usage rows and the owner's budget
    job_id: str | None = None  # a server job's id (the histogram's title names it)


@dataclass
class Progress:
    counts: JobCounts
    stage: str
    chunks_done: int
    timings: dict[str, float] = field(default_factory=dict)


def job_params(spec: SubmitJobRequest) -> SamplingParams:
    """Sampling for a job's chunks: with the job's seed, each prompt is seeded from it and the
    prompt's id (``stages.generate``), so any batch size, executor, worker, shard layout or resume
    gets the same responses."""
    return SamplingParams(
        max_tokens=spec.max_gen_len,
        temperature=spec.temperature,
        top_p=spec.top_p,
        n=spec.num_generations,
        seed=spec.seed,
        guide=response_format_guide(spec.response_format),
    )


def add_counts(total: JobCounts, shards: list[dict[str, Any]]) -> JobCounts:
    """``total`` plus the counts of the shards' checkpoints (prompts_total is the job's, not a sum)."""
    for state in shards:
        for name, value in state.get("counts", {}).items():
            if name != "prompts_total":
                setattr(total, name, getattr(total, name) + value)
    return total


def _row_json(candidate: Candidate) -> bytes:
    """One PromptResponseScore line. Built as a plain dict (the shape is fixed and tested against the
    spec's schema); pydantic validation per row would cost more than the rest of the write."""
    return json.dumps(candidate.to_dict(), ensure_ascii=False).encode() + b"\n"


class LocalRunner:
    """Runs one job, or one shard of it (``rows``: first row and count, ``final=False``: leave the
    files for ``finish_from``), in this process, resuming from its checkpoint."""

    def __init__(
        self,
        plan: JobPlan,
        work_dir: Path,
        output: Path,
        checkpoint: Checkpoint,
        on_progress: Callable[[Progress], None] | None = None,
        rows: tuple[int, int] | None = None,
        final: bool = True,
    ) -> None:
        self.plan = plan
        self.work = work_dir
        self.output = output
        self.checkpoint = checkpoint
        self.on_progress = on_progress or (lambda _p: None)
        self.rows = rows or (0, plan.prompts_total)
        self.final = final
        if self.rows[0] % plan.spec.batch_size:
            raise ValueError("a shard must start on a chunk boundary")

    async def run(self) -> dict[str, Any]:
        plan = self.plan
        state, files, started = open_work(self.work, self.checkpoint)
        progress = Progress(
            JobCounts.model_validate(state.get("counts", {"prompts_total": plan.prompts_total})),
            "generating",
            int(state.get("chunks_done", 0)),
            dict(state.get("timings", {})),
        )
        counts, timings = progress.counts, progress.timings

        def save(stage: str, usage: Sequence[UsageEvent] = ()) -> None:
            offsets = {name: handle.tell() for name, handle in files.items()}
            state = snapshot(self.work, progress.chunks_done, offsets, counts.model_dump(), timings, started)
            self.checkpoint.save(state, stage, usage)
            progress.stage = stage
            self.on_progress(progress)

        try:
            # a semantic filter across the job starts from what the checkpointed rows kept
            resume_from(plan.chunk_filter, self.work / ("partial" if plan.global_filter is None else "spill"))
            await self._chunks(progress, files, save)
            if not self.final:
                save("shard_done")
                return {"counts": counts.model_dump(), "timings": timings}
            self._finish(files, counts, timings)
            save("finalizing")
        finally:
            for handle in files.values():
                handle.close()
        return self._report(counts, timings)

    def _report(self, counts: JobCounts, timings: dict[str, float]) -> dict[str, Any]:
        """The summary and histogram beside the output; EveryPromptFailed when no prompt got a response."""
        summary = write_summary(
            self.work, self.output, self.plan.spec, counts, timings, diversity(self.plan.chunk_filter, self.output)
        )
        write_histogram(self.work, self.output, self.plan.spec, self.plan.job_id or self.output.name)
        if counts.prompts_read and counts.errors == counts.prompts_read:
            with errors_path(self.output).open("rb") as handle:
                raise EveryPromptFailed(counts, json.loads(handle.readline() or b"{}"))
        return summary

    def _chunk_range(self, chunks_done: int) -> tuple[Iterator[PromptRow], int]:
        """The rows still to do, and the job-wide number of the first chunk of them (chunk numbers,
        and so seeds, are the job's, whatever the shard or executor)."""
        spec = self.plan.spec
        first, count = self.rows
        done = chunks_done * spec.batch_size
        rows = islice(read_rows(self.plan.prompts, spec.system_prompt, skip=first + done), max(count - done, 0))
        return rows, first // spec.batch_size + chunks_done

    async def _chunks(self, progress: Progress, files: dict[str, BinaryIO], save: Save) -> None:
        """Generate, score and write every remaining chunk in order, saving a checkpoint (and the
        chunk's usage rows) after each."""
        rows, index = self._chunk_range(progress.chunks_done)
        ahead: asyncio.Task[Generated] | None = None
        try:
            # One chunk of lookahead: chunk k+1 generates (model thread) while chunk k is scored
            # (reward-model thread), so both cores work. Chunks are still written and
            # checkpointed strictly in order; a generation in flight at a crash is simply redone.
            ahead = self._generate_next(rows, index)
            while ahead is not None:
                chunk, outcome, generate_s, span = await ahead
                if not chunk:
                    break
                index += 1
                ahead = self._generate_next(rows, index)
                progress.timings["generate_s"] = progress.timings.get("generate_s", 0.0) + generate_s
                with telemetry.within(span, end=True):  # the chunk's span, from its generate on
                    await self._score_and_write(chunk, outcome, progress.counts, progress.timings, files)
                    progress.chunks_done += 1
                    save("generating", outcome.usage)
        finally:
            if ahead is not None and not ahead.done():
                ahead.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ahead

    async def finish_from(self, shards: list[dict[str, Any]]) -> dict[str, Any]:
        """The job's output from its shards' checkpointed files (in shard order), then the same
        final step as a one-worker run. Starts from scratch each time, so a crash here is redone."""
        self.work.mkdir(parents=True, exist_ok=True)
        files = open_files(self.work, {})
        counts = add_counts(JobCounts(prompts_total=self.plan.prompts_total), shards)
        timings: dict[str, float] = {}

        def copy() -> None:
            for state in shards:
                for name, handle in files.items():
                    copy_prefix(Path(state["work_dir"]) / name, handle, state["offsets"].get(name, 0))

        try:
            await asyncio.to_thread(copy)
            for state in shards:
                for name, value in state.get("timings", {}).items():
                    timings[name] = timings.get(name, 0.0) + value
            for handle in files.values():
                handle.flush()
                os.fsync(handle.fileno())
            await asyncio.to_thread(self._finish, files, counts, timings)
        finally:
            for handle in files.values():
                handle.close()
        return self._report(counts, timings)

    def _generate_next(self, rows: Iterator[PromptRow], index: int) -> asyncio.Task[Generated]:
        """Start generating chunk ``index`` (the next ``batch_size`` rows) as a task; while tracing
        is on, in an ``sdg.chunk`` span that the caller ends once the chunk is written."""
        spec, plan = self.plan.spec, self.plan
        chunk = take(rows, spec.batch_size)
        params = job_params(spec)

        async def run() -> Generated:
            if not chunk:
                return chunk, stages.GenerateOutcome([]), 0.0, None
            span = telemetry.start("sdg.chunk", {"winnow.chunk.index": index, "winnow.chunk.rows": len(chunk)})
            try:
                with telemetry.within(span), telemetry.span("sdg.generate", {"gen_ai.request.model": spec.model}):
                    started = time.perf_counter()
                    outcome = await stages.generate(chunk, plan.provider, params, plan.meter)
            except BaseException:  # cancelled (the job stops) or failed: the chunk's span ends here
                if span is not None:
                    span.end()
                raise
            if span is not None:
                telemetry.chunk_usage(span, outcome.input_tokens, outcome.output_tokens, len(outcome.failed))
            return chunk, outcome, time.perf_counter() - started, span

        return asyncio.create_task(run())

    async def _score_and_write(
        self,
        chunk: list[PromptRow],
        outcome: stages.GenerateOutcome,
        counts: JobCounts,
        timings: dict[str, float],
        files: dict[str, BinaryIO],
    ) -> None:
        plan = self.plan
        t1 = time.perf_counter()
        with telemetry.span("sdg.score"):
            await stages.score(outcome.candidates, plan.reward, plan.scoring, plan.scoring_arg)
        timings["score_s"] = timings.get("score_s", 0.0) + time.perf_counter() - t1
        with telemetry.span("sdg.filter"):
            kept = stages.keep(outcome.candidates, plan.chunk_filter)
        with telemetry.span("sdg.write"):
            self.write_chunk(chunk, outcome, kept, counts, timings, files)

    def write_chunk(
        self,
        chunk: list[PromptRow],
        outcome: stages.GenerateOutcome,
        kept: list[Candidate],
        counts: JobCounts,
        timings: dict[str, float],
        files: dict[str, BinaryIO],
    ) -> None:
        """Append one scored chunk to the work files and fsync them (the checkpoint comes next)."""
        t2 = time.perf_counter()
        first = self.rows[0] + counts.prompts_read  # the chunk's first prompt, 0-based in the file
        index = {id(row): first + i for i, row in enumerate(chunk)}
        counts.prompts_read += len(chunk)
        counts.prompts_generated += len(chunk) - len(outcome.failed)
        counts.responses_generated += len(outcome.candidates)
        counts.responses_scored += len(outcome.candidates)
        counts.errors += len(outcome.failed)
        counts.input_tokens += outcome.input_tokens
        counts.output_tokens += outcome.output_tokens
        for row, reason in outcome.failed:
            error = {"id": row.id, "index": index[id(row)], "line": row.line, "error": reason}
            files["errors"].write(json.dumps(error, ensure_ascii=False).encode() + b"\n")
        files["raw_scores"].write(np.asarray([c.raw_score for c in outcome.candidates], dtype=np.float32).tobytes())
        if "preference" in self.plan.spec.outputs:  # from every scored response, before the filter
            files["preference"].write(jsonl(preference_pairs(outcome.candidates, self.plan.spec.preference)))
        if self.plan.global_filter is None:
            files["partial"].write(b"".join(_row_json(c) for c in kept))
            files["kept_scores"].write(np.asarray([c.score for c in kept], dtype=np.float32).tobytes())
            counts.rows_kept += len(kept)
        else:
            files["spill"].write(b"".join(_row_json(c) for c in kept))
            files["spill_scores"].write(np.asarray([c.score for c in kept], dtype=np.float32).tobytes())
        for handle in files.values():
            handle.flush()
            os.fsync(handle.fileno())
        timings["write_s"] = timings.get("write_s", 0.0) + time.perf_counter() - t2

    def _finish(self, files: dict[str, BinaryIO], counts: JobCounts, timings: dict[str, float]) -> None:
        """Write the final output and the training sets asked for beside it (each whole or not at
        all). Idempotent, so a crash here is redone."""
        for handle in files.values():
            handle.flush()
        self.output.parent.mkdir(parents=True, exist_ok=True)
        publish(self.work / "errors", errors_path(self.output), self.work.name)
        outputs = self.plan.spec.outputs
        if "preference" in outputs:
            publish(self.work / "preference", preference_path(self.output), self.work.name)
        self._write_output(files, counts, timings)
        if "sft" in outputs:
            write_sft(self.output, self.work.name)

    def _write_output(self, files: dict[str, BinaryIO], counts: JobCounts, timings: dict[str, float]) -> None:
        """The PromptResponseScore JSONL: the kept rows, or the spilled rows a global filter keeps."""
        if self.plan.global_filter is None:
            publish(self.work / "partial", self.output, self.work.name)
            return
        tmp = self.output.with_name(f"{self.output.name}.{self.work.name}.tmp")  # one per attempt
        tmp.unlink(missing_ok=True)
        t0 = time.perf_counter()
        scores = _scores(self.work / "spill_scores")
        cutoff = float(self.plan.global_filter.cutoff(scores)) if len(scores) else 0.0
        kept_file = files["kept_scores"]
        kept_file.truncate(0)
        kept = 0
        with (self.work / "spill").open("rb") as spill, tmp.open("wb") as out:
            for line, value in zip(spill, scores, strict=True):
                if value >= cutoff:
                    out.write(line)
                    kept_file.write(np.float32(value).tobytes())
                    kept += 1
            out.flush()
            os.fsync(out.fileno())
        counts.rows_kept = kept
        os.replace(tmp, self.output)
        timings["filter_s"] = time.perf_counter() - t0


def _scores(path: Path) -> np.ndarray[Any, np.dtype[np.float32]]:
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=np.float32)
    return np.memmap(path, dtype=np.float32, mode="r")


def take(rows: Any, count: int) -> list[PromptRow]:
    chunk: list[PromptRow] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == count:
            break
    return chunk

"""Runs an evaluation chunk by chunk with the SDG runner's crash safety: each chunk's results are
appended and fsynced, then a checkpoint records the file's length and the chunks done; a resumed
run cuts the file back to the checkpoint and goes on (nothing lost, nothing doubled). For each
chunk and model, every template's prompts go to the model in one batched call."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from winnow import telemetry
from winnow.evals.plan import EvalPlan, render
from winnow.evals.table import comparison, read_records
from winnow.models.base import GenerationResult, Prompt, Provider, SamplingParams
from winnow.schemas.evals import ComparisonRow, EvaluationCounts
from winnow.schemas.structured_outputs import response_format_guide
from winnow.sdg import stages
from winnow.sdg.inputs import read_rows
from winnow.sdg.rows import Candidate, PromptRow
from winnow.sdg.runner import take
from winnow.sdg.workfiles import Checkpoint, open_work, publish, snapshot
from winnow.usage.recorder import UsageEvent

FILES = ("results",)


@dataclass
class EvalProgress:
    counts: EvaluationCounts
    stage: str
    timings: dict[str, float] = field(default_factory=dict)


def table_path(output: Path) -> Path:
    return output.with_name("table.json")


class EvalRunner:
    def __init__(
        self,
        plan: EvalPlan,
        work_dir: Path,
        output: Path,
        checkpoint: Checkpoint,
        on_progress: Callable[[EvalProgress], None] | None = None,
    ) -> None:
        self.plan = plan
        self.work = work_dir
        self.output = output
        self.checkpoint = checkpoint
        self.on_progress = on_progress or (lambda _p: None)

    async def run(self) -> list[ComparisonRow]:
        spec = self.plan.spec
        state, files, started = open_work(self.work, self.checkpoint, FILES)
        chunks_done = int(state.get("chunks_done", 0))
        counts = EvaluationCounts.model_validate(state.get("counts", {"rows_total": self.plan.prompts.rows}))
        timings: dict[str, float] = dict(state.get("timings", {}))
        offsets: dict[str, int] = {name: handle.tell() for name, handle in files.items()}

        def save(stage: str, usage: Sequence[UsageEvent] = ()) -> None:
            state = snapshot(self.work, chunks_done, offsets, counts.model_dump(), timings, started)
            self.checkpoint.save(state, stage, usage)
            self.on_progress(EvalProgress(counts, stage, timings))

        for provider in self.plan.providers.values():
            await provider.warm()  # latencies measure generation, not loading
        rows = read_rows(self.plan.prompts.path, skip=chunks_done * spec.batch_size)
        try:
            while chunk := take(rows, spec.batch_size):
                usage: list[UsageEvent] = []  # the chunk's usage rows, written with its checkpoint
                with telemetry.span("eval.chunk", {"winnow.chunk.index": chunks_done, "winnow.chunk.rows": len(chunk)}):
                    lines = await self._chunk(chunk, chunks_done, counts, usage)
                    files["results"].write(b"".join(lines))
                    files["results"].flush()
                    os.fsync(files["results"].fileno())
                    counts.rows_done += len(chunk)
                    chunks_done += 1
                    offsets = {name: handle.tell() for name, handle in files.items()}
                    save("generating", usage)
        finally:
            for handle in files.values():
                handle.close()
        table = self._finish()
        save("finalizing")
        return table

    async def _chunk(
        self, chunk: list[PromptRow], index: int, counts: EvaluationCounts, usage: list[UsageEvent]
    ) -> list[bytes]:
        plan, spec = self.plan, self.plan.spec
        items = [(t, PromptRow(row.id, render(t, row), row.fields, row.line)) for row in chunk for t in spec.templates]
        params = SamplingParams(  # each prompt seeded from the job's seed, its row and its template
            max_tokens=spec.max_tokens,
            temperature=spec.temperature,
            top_p=spec.top_p,
            seed=spec.seed,
            guide=response_format_guide(spec.response_format),
            prompt_seeds=None if spec.seed is None else stages.row_seeds(spec.seed, [(r.id, t.name) for t, r in items]),
        )
        lines: list[bytes] = []
        for model in spec.models:
            results = await _generate_each(
                [r for _, r in items], plan.providers[model], params, plan.meters.get(model), usage
            )
            by_template: dict[str, list[tuple[Candidate, Any]]] = {}
            for (template, row), result in zip(items, results, strict=True):
                record: dict[str, Any] = {"id": row.id, "template": template.name, "model": model}
                if result.error is not None:
                    counts.errors += 1
                    lines.append(_line(record | {"prompt": row.messages, "error": str(result.error)}))
                    continue
                completion = result.completions[0]
                candidate = Candidate(
                    row, 0, completion.text, stages.STOP_REASONS[completion.finish_reason], completion.output_tokens
                )
                record |= {
                    "prompt": row.messages,
                    "response": completion.text,
                    "stop_reason": candidate.stop_reason,
                    "latency_ms": round(result.latency_ms or 0.0, 3),
                    "input_tokens": result.input_tokens,
                    "output_tokens": completion.output_tokens,
                    "cost_usd": plan.prices[model].cost(result.input_tokens, completion.output_tokens),
                }
                by_template.setdefault(template.name, []).append((candidate, record))
                counts.generations += 1
            for pairs in by_template.values():
                candidates = [c for c, _ in pairs]
                await stages.score(candidates, plan.reward, plan.scoring, plan.scoring_arg)
                for candidate, record in pairs:
                    lines.append(_line(record | {"score": candidate.score, "raw_score": candidate.raw_score}))
        return lines

    def _finish(self) -> list[ComparisonRow]:
        """The table, then the results under their final name (both whole or not at all)."""
        spec = self.plan.spec
        pairs = [(t.name, m) for t in spec.templates for m in spec.models]
        table = comparison(read_records(self.work / "results"), pairs, self.plan.baseline)
        self.output.parent.mkdir(parents=True, exist_ok=True)
        tmp = table_path(self.output).with_suffix(".tmp")
        tmp.write_text(json.dumps([row.model_dump() for row in table]))
        os.replace(tmp, table_path(self.output))
        publish(self.work / "results", self.output, self.work.name)
        return table


async def _generate_each(
    rows: list[PromptRow],
    provider: Provider,
    params: SamplingParams,
    meter: stages.Meter | None,
    usage: list[UsageEvent],
) -> list[GenerationResult]:
    """Each row as a call of its own, all at once (a local model's batcher still batches them), so
    that each row's latency is its own: from its call to its answer, not the whole chunk's. The
    budget is checked for the chunk before any call and its usage recorded once (``stages.generate``)."""
    prompts = [row.chat() for row in rows]
    if meter is not None:
        meter.check(prompts)

    async def one(prompt: Prompt) -> GenerationResult:
        started = time.perf_counter()
        (result,) = await provider.generate([prompt], params)
        if result.latency_ms is None:
            result.latency_ms = (time.perf_counter() - started) * 1000
        return result

    started = time.perf_counter()
    results = list(await asyncio.gather(*(one(prompt) for prompt in prompts)))
    if meter is not None:
        usage.extend(meter.record(prompts, results, (time.perf_counter() - started) * 1000))
    return results


def _line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode() + b"\n"

"""The pipeline's stages, each a plain async function over one chunk of rows.

Executors (the local runner today) only schedule these; they hold no business logic.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from winnow.models.base import GenerationResult, Prompt, Provider, SamplingParams, derived_seed
from winnow.sdg.reward import RewardModel
from winnow.sdg.rows import Candidate, PromptRow
from winnow.sdg.scoring import ScoringFn, apply_scoring
from winnow.usage.recorder import UsageEvent

STOP_REASONS = {"stop": "end_of_turn", "length": "out_of_tokens"}


class Meter(Protocol):
    """Usage accounting around a generate call: a budget check before; after, the usage rows, held
    against the budget and handed back to be written with the chunk's checkpoint."""

    def check(self, prompts: Sequence[Prompt]) -> None: ...

    def record(
        self, prompts: Sequence[Prompt], results: Sequence[GenerationResult], elapsed_ms: float
    ) -> list[UsageEvent]: ...


@dataclass
class GenerateOutcome:
    candidates: list[Candidate]
    failed: list[tuple[PromptRow, str]] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    results: list[GenerationResult] = field(default_factory=list)  # one per row, in order
    elapsed_ms: float = 0.0
    usage: list[UsageEvent] = field(default_factory=list)  # the meter's rows, not written yet


async def generate(
    rows: Sequence[PromptRow], provider: Provider, params: SamplingParams, meter: Meter | None = None
) -> GenerateOutcome:
    """``params.n`` responses per row; a row the model cannot serve is reported, not fatal.
    ``meter`` may refuse the call (BudgetExceeded) before the model runs. With a seed (and no
    ``prompt_seeds``), each row's seed comes from it and the row's id, never from its chunk."""
    prompts: list[Prompt] = [row.chat() for row in rows]
    if params.seed is not None and params.prompt_seeds is None:
        params = replace(params, prompt_seeds=row_seeds(params.seed, [(row.id,) for row in rows]))
    if meter is not None:
        meter.check(prompts)
    started = time.perf_counter()
    results = await provider.generate(prompts, params)
    elapsed_ms = (time.perf_counter() - started) * 1000
    usage = meter.record(prompts, results, elapsed_ms) if meter is not None else []
    outcome = GenerateOutcome([], results=results, elapsed_ms=elapsed_ms, usage=usage)
    for row, result in zip(rows, results, strict=True):
        if result.error is not None:
            reason = getattr(result.error, "message", str(result.error))
            details = getattr(result.error, "details", None)
            outcome.failed.append((row, f"{reason}: {details}" if details else reason))
            continue
        outcome.input_tokens += result.input_tokens  # once per prompt: its n generations share it
        for index, completion in enumerate(result.completions):
            outcome.output_tokens += completion.output_tokens
            outcome.candidates.append(
                Candidate(row, index, completion.text, STOP_REASONS[completion.finish_reason], completion.output_tokens)
            )
    return outcome


def row_seeds(seed: int, keys: Sequence[tuple[object, ...]]) -> tuple[int | None, ...]:
    """Each job row's seed, from the job's seed and what names the row (its prompt's id, ...);
    the seeds of its n samples derive from it (``choice_seed``)."""
    return tuple(derived_seed(seed, "row", *key) for key in keys)


async def score(
    candidates: list[Candidate], reward_model: RewardModel | None, scoring: ScoringFn, arg: str | None
) -> None:
    """Set ``raw_score`` from the reward model (if any), then ``score`` from the scoring function."""
    if reward_model is not None and candidates:
        for candidate, raw in zip(candidates, await reward_model.score(candidates), strict=True):
            candidate.raw_score = float(raw)
    apply_scoring(candidates, scoring, arg)


def keep(candidates: list[Candidate], chunk_filter: Callable[[list[Candidate]], list[Candidate]]) -> list[Candidate]:
    """The chunk-scope part of the filtering function (the seed's rows -> rows)."""
    return chunk_filter(candidates)

"""Per-row decoding for local transformers models: each row of a batched ``generate`` samples with its
own parameters and its own random stream.

``generate`` runs greedy over ``RowSampler``, a logits processor that samples itself: it applies each
row's penalties, bias, temperature and top-k / top-p / min-p, draws the row's token by inverting the
row's distribution at one uniform number, and leaves only that token finite. A seeded row takes its
uniform numbers from a ``torch.Generator`` seeded with its own seed, a fixed count per step, so its
tokens depend on nothing else in the batch; unseeded rows share a generator seeded from the OS.
A constrained row (structured outputs) draws only among the tokens its grammar allows (``RowGuides``).
``RowStops`` ends each row at its own stop tokens and max_tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from transformers import LogitsProcessor, StoppingCriteria

from winnow.models.base import GREEDY_BELOW, SamplingParams

if TYPE_CHECKING:
    from winnow.models.guided import RowGuides

_BLOCK = 64  # uniform numbers a row draws from its generator at once (one per step)
_NEG_INF = float("-inf")


@dataclass(frozen=True)
class DecodeRow:
    """One row of a batch: its prompt tokens, its sampling parameters, its own seed and token limit."""

    input_ids: list[int]
    params: SamplingParams
    seed: int | None
    max_tokens: int


# A sampled token's id and log-probability, and the most likely tokens at its step (id, logprob).
Logprob = tuple[int, float, list[tuple[int, float]]]


def _column(values: list[float], dtype: Any = torch.float32) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype).unsqueeze(1)


class RowSampler(LogitsProcessor):
    """Chooses every row's next token (see the module docstring); ``generate`` then takes the argmax."""

    def __init__(
        self, rows: list[DecodeRow], width: int, vocab: int, eos_ids: set[int], guides: RowGuides | None = None
    ) -> None:
        self.rows = rows
        self.guides = guides  # structured outputs: the constrained rows' grammars
        self.width = width
        self.vocab = vocab
        self.step = 0
        params = [r.params for r in rows]
        self.greedy = torch.tensor([p.greedy for p in params])
        self.any_greedy = bool(self.greedy.any())
        self.all_greedy = bool(self.greedy.all())
        self.temperature = _column([max(p.temperature, GREEDY_BELOW) for p in params])
        self.top_k = torch.tensor([p.top_k if p.top_k > 0 else vocab for p in params]).unsqueeze(1)
        self.top_p = _column([p.top_p for p in params])
        self.min_p = _column([p.min_p for p in params])
        # Rows that filter draw from their distribution sorted by probability, the others in vocabulary
        # order: per row, so that a row's draw does not depend on what else is in the batch.
        filtered = [0 < p.top_k < vocab or p.top_p < 1 or p.min_p > 0 for p in params]
        self.filtered = torch.tensor(filtered)
        self.filtered_rows = torch.tensor([i for i, f in enumerate(filtered) if f], dtype=torch.long)
        self.plain_rows = torch.tensor([i for i, f in enumerate(filtered) if not f], dtype=torch.long)
        self._seeded = [torch.Generator().manual_seed(r.seed) if r.seed is not None else None for r in rows]
        self._fresh = torch.Generator()
        self._fresh.seed()  # unseeded rows: a new random stream each batch, not torch's fixed default seed
        self._uniform = torch.empty(0)
        self._penalties(rows, vocab)
        self._masks(rows, vocab, eos_ids)
        self.logprobs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.top_logprobs = max((p.logprobs or 0 for p in params if p.logprobs is not None), default=-1)

    def _penalties(self, rows: list[DecodeRow], vocab: int) -> None:
        params = [r.params for r in rows]
        self.repetition = _column([p.repetition_penalty for p in params])
        self.presence = _column([p.presence_penalty for p in params])
        self.frequency = _column([p.frequency_penalty for p in params])
        self.use_repetition = any(p.repetition_penalty != 1 for p in params)
        self.use_counts = self.use_repetition or any(p.presence_penalty or p.frequency_penalty for p in params)
        self.counts = torch.zeros((len(rows), vocab)) if self.use_counts else torch.empty(0)
        if self.use_repetition:  # vLLM's repetition penalty counts the prompt's tokens too
            self.in_prompt = torch.zeros((len(rows), vocab), dtype=torch.bool)
            for i, row in enumerate(rows):
                ids = torch.tensor([t for t in row.input_ids if t < vocab], dtype=torch.long)
                self.in_prompt[i, ids] = True

    def _masks(self, rows: list[DecodeRow], vocab: int, eos_ids: set[int]) -> None:
        params = [r.params for r in rows]
        self.bias = torch.empty(0)
        if any(p.logit_bias for p in params):
            self.bias = torch.zeros((len(rows), vocab))
            for i, p in enumerate(params):
                for token, value in p.logit_bias:
                    if 0 <= token < vocab:
                        self.bias[i, token] = value
        self.stops = torch.zeros((len(rows), vocab), dtype=torch.bool)
        for i, p in enumerate(params):
            ids = set(p.stop_token_ids) | (set() if p.ignore_eos else eos_ids)
            self.stops[i, [t for t in ids if 0 <= t < vocab]] = True
        self.min_tokens = torch.tensor([p.min_tokens for p in params])
        self.max_min_tokens = max(p.min_tokens for p in params)

    def _draw(self) -> None:
        """The next block of uniform numbers, ``_BLOCK`` per row: a seeded row's from its own
        generator, so it reads the same numbers at the same step in any batch."""
        block = torch.rand((len(self.rows), _BLOCK), generator=self._fresh)
        for i, generator in enumerate(self._seeded):
            if generator is not None:
                block[i] = torch.rand(_BLOCK, generator=generator)
        self._uniform = block

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = self.step
        self.step += 1
        if step:
            self._count(input_ids[:, -1])
        raw = torch.log_softmax(scores[:, : self.vocab], dim=-1) if self.top_logprobs >= 0 else None
        logits = self._adjust(scores[:, : self.vocab], step)
        if self.guides is not None:
            logits = self.guides.mask(logits, scores[:, : self.vocab])
        if self.all_greedy:
            chosen = logits.argmax(dim=-1)
        else:
            if step % _BLOCK == 0:
                self._draw()
            chosen = self._sample(logits, self._uniform[:, step % _BLOCK])
            if self.any_greedy:
                chosen = torch.where(self.greedy, logits.argmax(dim=-1), chosen)
        if self.guides is not None:
            self.guides.advance(chosen)
        if raw is not None:
            self._record(raw, chosen)
        out = torch.full_like(scores, _NEG_INF)
        out.scatter_(1, chosen.unsqueeze(1), 0.0)
        return out  # type: ignore[return-value]

    def _count(self, last: torch.Tensor) -> None:
        if self.use_counts:
            self.counts.scatter_add_(1, last.unsqueeze(1).clamp(max=self.vocab - 1), torch.ones((len(self.rows), 1)))

    def _adjust(self, logits: torch.Tensor, step: int) -> torch.Tensor:
        """Penalties, logit bias and min_tokens, row by row (vLLM's definitions)."""
        if self.use_repetition:
            seen = self.in_prompt | (self.counts > 0)
            penalised = torch.where(logits > 0, logits / self.repetition, logits * self.repetition)
            logits = torch.where(seen, penalised, logits)
        if self.use_counts:
            logits = logits - self.frequency * self.counts - self.presence * (self.counts > 0)
        if self.bias.numel():
            logits = logits + self.bias
        if step < self.max_min_tokens:
            early = (step < self.min_tokens).unsqueeze(1) & self.stops
            logits = logits.masked_fill(early, _NEG_INF)
        return logits

    def _sample(self, logits: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
        """Each row's token at its uniform number, by inverse CDF over its filtered distribution."""
        scaled = logits / self.temperature
        if not len(self.filtered_rows):
            return self._invert(torch.softmax(scaled, dim=-1).cumsum(dim=-1), uniform)
        if not len(self.plain_rows):
            return self._sample_filtered(scaled, uniform, slice(None))
        chosen = torch.empty(len(self.rows), dtype=torch.long)
        plain = self.plain_rows
        chosen[plain] = self._invert(torch.softmax(scaled[plain], dim=-1).cumsum(dim=-1), uniform[plain])
        rows = self.filtered_rows
        chosen[rows] = self._sample_filtered(scaled[rows], uniform[rows], rows)
        return chosen

    def _sample_filtered(self, scaled: torch.Tensor, uniform: torch.Tensor, rows: Any) -> torch.Tensor:
        """Top-k, top-p and min-p over the distribution sorted by probability, then the draw."""
        ordered, order = scaled.sort(dim=-1, descending=True)
        probs = torch.softmax(ordered, dim=-1)
        ranks = torch.arange(probs.shape[1]).unsqueeze(0)
        keep = ranks < self.top_k[rows]
        keep &= (probs.cumsum(dim=-1) - probs) < self.top_p[rows]
        keep &= probs >= self.min_p[rows] * probs[:, :1]
        keep[:, 0] = True
        index = self._invert((probs * keep).cumsum(dim=-1), uniform)
        return order.gather(1, index.unsqueeze(1)).squeeze(1)

    @staticmethod
    def _invert(cdf: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
        target = (uniform * cdf[:, -1]).unsqueeze(1)
        index = torch.searchsorted(cdf, target, right=True).squeeze(1)
        return index.clamp(max=cdf.shape[1] - 1)

    def _record(self, raw: torch.Tensor, chosen: torch.Tensor) -> None:
        picked = raw.gather(1, chosen.unsqueeze(1)).squeeze(1)
        if self.top_logprobs > 0:
            values, ids = raw.topk(self.top_logprobs, dim=-1)
        else:
            values, ids = torch.empty((len(self.rows), 0)), torch.empty((len(self.rows), 0), dtype=torch.long)
        self.logprobs.append((picked, values, ids))

    def row_logprobs(self, tokens: list[list[int]]) -> list[list[Logprob] | None]:
        """Each row's recorded log-probabilities for its kept ``tokens`` (None where it asked for none)."""
        if not self.logprobs:
            return [None] * len(self.rows)
        picked = torch.stack([p for p, _, _ in self.logprobs], dim=1).tolist()
        values = torch.stack([v for _, v, _ in self.logprobs], dim=1).tolist()
        ids = torch.stack([t for _, _, t in self.logprobs], dim=1).tolist()
        out: list[list[Logprob] | None] = []
        for i, row in enumerate(self.rows):
            wanted = row.params.logprobs
            if wanted is None:
                out.append(None)
                continue
            out.append(
                [
                    (token, picked[i][s], list(zip(ids[i][s][:wanted], values[i][s][:wanted], strict=True)))
                    for s, token in enumerate(tokens[i])
                ]
            )
        return out


class RowStops(StoppingCriteria):
    """Ends each row at a stop token of its own (EOS unless ignore_eos, stop_token_ids) once it has
    min_tokens, or at its max_tokens. (``eos_token_id`` tells ``generate`` to pad finished rows.)"""

    eos_token_id = True

    def __init__(self, sampler: RowSampler) -> None:
        self.sampler = sampler
        self.max_tokens = torch.tensor([r.max_tokens for r in sampler.rows])
        self.rows = torch.arange(len(sampler.rows))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        sampler = self.sampler
        count = input_ids.shape[1] - sampler.width
        last = input_ids[:, -1].clamp(max=sampler.vocab - 1)
        done = sampler.stops[self.rows, last] & (count > sampler.min_tokens)
        return (done | (count >= self.max_tokens)).to(input_ids.device)  # type: ignore[return-value]


def finish(tokens: list[int], row: DecodeRow, stops: set[int]) -> tuple[list[int], bool]:
    """A row's tokens cut at its max_tokens and its first stop token (kept, as EOS is counted), and
    whether a stop token ended it."""
    tokens = tokens[: row.max_tokens]
    for i, token in enumerate(tokens):
        if token in stops and i >= row.params.min_tokens:
            return tokens[: i + 1], True
    return tokens, False


def stop_ids(params: SamplingParams, eos_ids: set[int]) -> set[int]:
    return set(params.stop_token_ids) | (set() if params.ignore_eos else eos_ids)

"""Reward models: give every (prompt, response) a raw score.

Registered by name through the ``winnow.reward_models`` entry-point group:
- ``classifier``: a local ``AutoModelForSequenceClassification`` (one logit), chat template when the
  tokenizer has one, batched, on its own thread.
- ``openai-score``: a remote reward model behind a vLLM-style ``POST /score``.
- ``llm-judge``: any configured generation model grades with a rubric; the first number in its
  answer is the score.
"""

from __future__ import annotations

import abc
import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

from winnow.config import RewardModelConfig, Settings
from winnow.errors import InvalidRequest, ServiceUnavailable
from winnow.models.base import ChatMessage, SamplingParams
from winnow.models.registry import ModelRegistry
from winnow.plugins import load_group
from winnow.sdg.rows import Candidate

ENTRY_POINT_GROUP = "winnow.reward_models"
SCORE_LENGTH_STEP = 16  # a local classifier's passes are this many tokens wide, or a multiple
SCORE_ROWS = 16  # and this many rows tall at most


class RewardModel(abc.ABC):
    name: ClassVar[str]

    def __init__(self, config: RewardModelConfig, settings: Settings, models: ModelRegistry) -> None:
        self.config = config
        self.settings = settings
        self.models = models

    @abc.abstractmethod
    async def score(self, candidates: Sequence[Candidate]) -> list[float]:
        """One raw score per candidate, in order."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""


class ClassifierRewardModel(RewardModel):
    """``provider: classifier`` — a local sequence classifier; higher logit = better response."""

    name = "classifier"

    def __init__(self, config: RewardModelConfig, settings: Settings, models: ModelRegistry) -> None:
        super().__init__(config, settings, models)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"winnow-rm-{config.id}")
        self._loaded: tuple[Any, Any, Any] | None = None

    def _load(self) -> tuple[Any, Any, Any]:
        if self._loaded is None:
            with self.models.pool.load_lock:  # one model load at a time in a process (see ModelPool)
                self._loaded = self._load_now()
        return self._loaded

    def _load_now(self) -> tuple[Any, Any, Any]:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from winnow.models.providers.transformers import configure_torch_threads, resolve_device

        if not self.config.path or not Path(self.config.path).is_dir():
            raise ServiceUnavailable(f"Reward model {self.config.id!r} has no local directory", str(self.config.path))
        configure_torch_threads(self.settings.local_torch_threads)
        device = resolve_device(self.config.device)
        tokenizer = AutoTokenizer.from_pretrained(self.config.path, local_files_only=True)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForSequenceClassification.from_pretrained(self.config.path, local_files_only=True)
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        return tokenizer, model.to(device).eval(), torch

    def render(self, candidate: Candidate) -> str:
        tokenizer, _, _ = self._load()
        conversation = [*candidate.row.messages, {"role": "assistant", "content": candidate.text}]
        if tokenizer.chat_template:
            return str(tokenizer.apply_chat_template(conversation, tokenize=False))
        return "\n".join(str(m["content"]) for m in conversation)

    def score_texts(self, texts: list[str]) -> list[float]:
        """Blocking. Texts of about one length (rounded up to ``SCORE_LENGTH_STEP`` tokens) are
        scored together, in forward passes of one fixed shape (``batch_size`` rows, at most
        ``SCORE_ROWS``; rows left over are padding): a batched forward pass differs in a float's last
        bits with its shape, never with what the other rows hold, so a text's score is the same bits
        whatever shares its pass (a job's rows are the same at any batch size, after any resume)."""
        tokenizer, model, torch = self._load()
        add_special = not tokenizer.chat_template
        encoded = tokenizer(texts, truncation=True, add_special_tokens=add_special)["input_ids"]
        buckets: dict[int, list[int]] = {}
        for i, ids in enumerate(encoded):
            buckets.setdefault(-(-len(ids) // SCORE_LENGTH_STEP) * SCORE_LENGTH_STEP, []).append(i)
        rows = min(self.config.batch_size, SCORE_ROWS)
        left = tokenizer.padding_side == "left"
        scores = [0.0] * len(texts)
        for width, members in buckets.items():
            for start in range(0, len(members), rows):
                part = members[start : start + rows]
                ids = torch.full((rows, width), tokenizer.pad_token_id)
                mask = torch.zeros((rows, width), dtype=torch.long)
                for row, i in enumerate(part):
                    span = slice(width - len(encoded[i]), width) if left else slice(0, len(encoded[i]))
                    ids[row, span], mask[row, span] = torch.tensor(encoded[i]), 1
                with torch.inference_mode():
                    logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits
                for row, value in zip(part, logits[: len(part), 0].float().tolist(), strict=True):
                    scores[row] = value
        return scores

    def _score_sync(self, candidates: Sequence[Candidate]) -> list[float]:
        return self.score_texts([self.render(c) for c in candidates])

    async def score(self, candidates: Sequence[Candidate]) -> list[float]:
        if not candidates:
            return []
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._score_sync, candidates)

    async def close(self) -> None:
        self._executor.shutdown(wait=False)
        self._loaded = None


def prompt_text(candidate: Candidate) -> str:
    """The prompt as one text (system and user turns), for scorers that take text pairs."""
    return "\n".join(str(m["content"]) for m in candidate.row.messages if m["role"] in ("system", "user"))


class OpenAIScoreRewardModel(RewardModel):
    """``provider: openai-score`` — a remote reward model behind a vLLM-style ``POST /score``
    (``text_1`` = prompt, ``text_2`` = response): vLLM, or another Winnow serving its reward models."""

    name = "openai-score"

    def __init__(self, config: RewardModelConfig, settings: Settings, models: ModelRegistry) -> None:
        super().__init__(config, settings, models)
        import os

        import openai

        api_key = os.environ.get(config.api_key_env) if config.api_key_env else None
        self.client = openai.AsyncOpenAI(
            base_url=config.base_url, api_key=api_key or "not-set", timeout=config.timeout_s, max_retries=2
        )

    async def score(self, candidates: Sequence[Candidate]) -> list[float]:
        import openai

        from winnow.models.providers.openai import upstream_error

        scores: list[float] = []
        size = self.config.batch_size
        for start in range(0, len(candidates), size):
            batch = candidates[start : start + size]
            body = {
                "model": self.config.upstream_model or self.config.id,
                "text_1": [prompt_text(c) for c in batch],
                "text_2": [c.text for c in batch],
            }
            try:
                result: dict[str, Any] = await self.client.post("/score", cast_to=dict[str, Any], body=body)
            except openai.OpenAIError as exc:
                raise upstream_error(exc, self.config.id) from exc
            ordered = sorted(result["data"], key=lambda item: item["index"])
            scores.extend(float(item["score"]) for item in ordered)
        return scores

    async def close(self) -> None:
        await self.client.close()


DEFAULT_RUBRIC = (
    "Rate how well the response answers the request, from 0 (wrong or useless) to 10 (fully correct "
    "and helpful). Reply with the number only.\n\nRequest:\n{prompt}\n\nResponse:\n{response}\n\nScore:"
)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


class LLMJudgeRewardModel(RewardModel):
    """``provider: llm-judge`` — a configured generation model (``judge_model``) grades each response."""

    name = "llm-judge"

    async def score(self, candidates: Sequence[Candidate]) -> list[float]:
        judge = self.config.judge_model
        if not judge:
            raise InvalidRequest(f"Reward model {self.config.id!r} needs judge_model")
        provider = self.models.provider(judge)
        rubric = self.config.rubric or DEFAULT_RUBRIC
        prompts = [
            [
                ChatMessage(
                    "user",
                    rubric.format(
                        prompt="\n".join(str(m["content"]) for m in c.row.messages if m["role"] != "system"),
                        response=c.text,
                    ),
                )
            ]
            for c in candidates
        ]
        results = await provider.generate(prompts, SamplingParams(max_tokens=8, temperature=0.0))
        scores = []
        for result in results:
            text = result.completions[0].text if result.completions else ""
            match = _NUMBER.search(text)
            scores.append(float(match.group()) if match else self.config.unparsed_score)
        return scores


@cache
def reward_model_classes() -> dict[str, type[RewardModel]]:
    """Every reward-model class by name, from the ``winnow.reward_models`` entry points."""
    return load_group(
        ENTRY_POINT_GROUP, lambda c: isinstance(c, type) and issubclass(c, RewardModel), "a RewardModel subclass"
    )


class RewardModelRegistry:
    """Configured reward models by id; each built on first use."""

    def __init__(self, settings: Settings, models: ModelRegistry) -> None:
        self.settings = settings
        self.models = models
        self._configs = {c.id: c for c in settings.reward_models}
        self._built: dict[str, RewardModel] = {}

    def ids(self) -> list[str]:
        return list(self._configs)

    def check(self, reward_model_id: str) -> RewardModelConfig:
        config = self._configs.get(reward_model_id)
        if config is None:
            raise InvalidRequest(
                f"Unknown reward model {reward_model_id!r}", f"configured: {', '.join(self._configs) or 'none'}"
            )
        classes = reward_model_classes()
        if config.provider not in classes:
            raise InvalidRequest(
                f"Reward model {config.id!r} has unknown provider {config.provider!r}", f"known: {sorted(classes)}"
            )
        if config.provider == "llm-judge" and (config.judge_model or "") not in self.models.ids():
            raise InvalidRequest(
                f"Reward model {config.id!r} judges with an unknown model", f"judge_model={config.judge_model!r}"
            )
        return config

    def get(self, reward_model_id: str) -> RewardModel:
        if reward_model_id not in self._built:
            config = self.check(reward_model_id)
            self._built[reward_model_id] = reward_model_classes()[config.provider](config, self.settings, self.models)
        return self._built[reward_model_id]

    async def close(self) -> None:
        await asyncio.gather(*(m.close() for m in self._built.values()))
        self._built.clear()


@asynccontextmanager
async def open_registries(settings: Settings) -> AsyncIterator[tuple[ModelRegistry, RewardModelRegistry]]:
    """The model and reward-model registries of a job run outside a Runtime (the CLI's in-process
    runs, scripts), both closed when the block ends."""
    models = ModelRegistry(settings)
    rewards = RewardModelRegistry(settings, models)
    try:
        yield models, rewards
    finally:
        await rewards.close()
        await models.close()

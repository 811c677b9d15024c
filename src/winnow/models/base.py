"""The provider interface: a batch of prompts or chats in, texts with finish reasons and token counts out.

Every provider — local transformers, an OpenAI-compatible upstream, a user's plugin registered
under the ``winnow.providers`` entry-point group — implements ``Provider``.
"""

from __future__ import annotations

import abc
import hashlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from winnow.config import ModelConfig, Settings
from winnow.models.pool import ModelPool

FinishReason = Literal["stop", "length"]
GuideKind = Literal["json_schema", "json_object", "regex", "choice", "grammar", "tool_call"]


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str
    tool_calls: str | None = None  # an assistant's calls: OpenAI's tool_calls list as JSON text
    tool_call_id: str | None = None  # a tool message's answer to that call


class ToolChat(tuple[ChatMessage, ...]):
    """A chat sent with tools (OpenAI's ``tools`` list as JSON text), which a local model's chat
    template renders; a model whose template has no tools refuses it."""

    tools: str

    def __new__(cls, messages: Sequence[ChatMessage], tools: str) -> ToolChat:
        chat = super().__new__(cls, messages)
        chat.tools = tools
        return chat

    def __reduce__(self) -> tuple[type[ToolChat], tuple[tuple[ChatMessage, ...], str]]:
        return (ToolChat, (tuple(self), self.tools))


class RawPrompt(str):
    """A prompt a local model sees exactly as written, never wrapped in a chat template (OpenAI's
    and vLLM's ``/v1/completions``), or given as token ids (then the text is empty)."""

    token_ids: tuple[int, ...] | None

    def __new__(cls, text: str = "", token_ids: Sequence[int] | None = None) -> RawPrompt:
        prompt = super().__new__(cls, text)
        prompt.token_ids = None if token_ids is None else tuple(token_ids)
        return prompt

    def __reduce__(self) -> tuple[type[RawPrompt], tuple[str, tuple[int, ...] | None]]:
        return (RawPrompt, (str(self), self.token_ids))


# A plain prompt (sent as-is or wrapped by a chat template, per model; a RawPrompt as-is), or a chat.
Prompt = str | Sequence[ChatMessage]


# Temperatures below this sample as greedy (vLLM's rule too): dividing logits by a tiny positive
# temperature overflows float32 to inf, and softmax of inf - inf is nan.
GREEDY_BELOW = 1e-5


def engine_seed(seed: int, offset: int = 0) -> int:
    """A seed (plus ``offset``) as local engines take it: any integer, reduced modulo 2**63 into the
    range torch and vLLM accept. Seeds below 2**63 are unchanged, so their samples stay the same."""
    return (seed + offset) % 2**63


def derived_seed(seed: int, *parts: object) -> int:
    """A seed of its own for a part of something seeded (a choice of n, a job's prompt): a hash of
    the seed and the parts, the same in every process, in the range engines take."""
    digest = hashlib.blake2b(repr((seed, *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 2**63


def choice_seed(seed: int | None, index: int) -> int | None:
    """The seed of choice ``index`` of ``n`` of a prompt seeded with ``seed``: the first choice uses the
    seed itself (so n=1 and the first of n agree), the others seeds derived from it."""
    if seed is None:
        return None
    return engine_seed(seed) if index == 0 else derived_seed(seed, "choice", index)


@dataclass(frozen=True)
class Guide:
    """What a row's output must match: ``spec`` is the schema as JSON text, the regex, the grammar,
    or the choices as a JSON list (``tool_call``: the schema of a call's JSON, written between
    ``<tool_call>`` and ``</tool_call>``); ``param`` is the request field that asked for it (its 400s name it)."""

    kind: GuideKind
    spec: str = ""
    param: str = "response_format"

    @staticmethod
    def json_schema(schema: object, param: str = "response_format") -> Guide:
        return Guide("json_schema", schema if isinstance(schema, str) else json.dumps(schema), param)

    def upstream_fields(self) -> dict[str, Any]:
        """The guide as an OpenAI-compatible upstream takes it: ``response_format`` for JSON, vLLM's
        ``guided_*`` fields (in ``extra_body``) for the rest."""
        if self.kind == "tool_call":  # an upstream gets the request's tools and tool_choice as sent
            return {}
        if self.kind == "json_object":
            return {"response_format": {"type": "json_object"}}
        if self.kind == "json_schema":
            schema = {"name": "output", "schema": json.loads(self.spec), "strict": True}
            return {"response_format": {"type": "json_schema", "json_schema": schema}}
        value: object = json.loads(self.spec) if self.kind == "choice" else self.spec
        return {"extra_body": {f"guided_{self.kind}": value}}


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 100
    temperature: float = 0.7  # 0 (or anything below GREEDY_BELOW) means greedy
    top_p: float = 1.0
    n: int = 1
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # Each prompt's own seed, in order (SDG and evaluation rows: from the job's seed and the prompt's
    # id); without it prompt i of a seeded call is seeded with seed + i.
    prompt_seeds: tuple[int | None, ...] | None = None
    # vLLM's sampling controls (0 / 1 / empty: off)
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    min_tokens: int = 0
    ignore_eos: bool = False
    stop_token_ids: tuple[int, ...] = ()
    logit_bias: tuple[tuple[int, float], ...] = ()
    logprobs: int | None = None  # the sampled tokens' log-probabilities, with this many top ones
    prompt_logprobs: int | None = None  # the prompt's too (completions' echo)
    guide: Guide | None = None  # structured outputs: what the text must match (models/guided.py)

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW

    def prompt_seed(self, index: int) -> int | None:
        """The seed of prompt ``index`` of a call: its own, or the call's seed + index."""
        if self.prompt_seeds is not None:
            seed = self.prompt_seeds[index]
            return None if seed is None else engine_seed(seed)
        return None if self.seed is None else engine_seed(self.seed, index)


@dataclass
class TokenLogprob:
    """A token's text and log-probability, and the most likely tokens at its position (OpenAI's shape).
    A prompt's first token has none (``logprob`` None)."""

    token: str
    logprob: float | None
    top: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class Completion:
    """One generated continuation (with its tokens' log-probabilities, when asked for)."""

    text: str
    finish_reason: FinishReason
    output_tokens: int
    logprobs: list[TokenLogprob] | None = None


@dataclass
class GenerationResult:
    """Everything generated for one prompt: ``n`` completions, or the reason there are none."""

    completions: list[Completion] = field(default_factory=list)
    input_tokens: int = 0
    prompt_logprobs: list[TokenLogprob] | None = None  # echo: the prompt's tokens
    error: Exception | None = None
    latency_ms: float | None = None  # set by providers that time each prompt on its own
    generation_id: str | None = None  # set by the generation service (usage rows, feedback)
    model: str | None = None  # the model that answered, when a fallback did (routed models)
    deployment: str | None = None  # the deployment that answered (routed models)
    attempts: int | None = None  # upstream calls it took (routed models)

    @property
    def output_tokens(self) -> int:
        return sum(c.output_tokens for c in self.completions)


@dataclass
class StreamDelta:
    """A piece of a streamed completion; the last one carries the finish reason and usage."""

    text: str
    finish_reason: FinishReason | None = None
    input_tokens: int = 0
    output_tokens: int = 0


class Provider(abc.ABC):
    """Generates text for one configured model."""

    name: ClassVar[str]

    def __init__(self, config: ModelConfig, settings: Settings, pool: ModelPool | None = None) -> None:
        self.config = config
        self.settings = settings
        self.pool = pool or ModelPool()  # shared by local providers: one memory budget

    @abc.abstractmethod
    async def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[GenerationResult]:
        """One result per prompt, in order. A prompt that cannot be served gets ``error``;
        a failure of the whole backend raises a WinnowError."""

    async def stream(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[StreamDelta]:
        """Stream one completion. Providers without native streaming yield it whole."""
        (result,) = await self.generate([prompt], params)
        if result.error is not None:
            raise result.error
        completion = result.completions[0]
        yield StreamDelta(completion.text, completion.finish_reason, result.input_tokens, completion.output_tokens)

    @abc.abstractmethod
    async def available(self) -> bool:
        """Measured availability: files present and loadable, or the upstream answered a cheap probe."""

    async def warm(self) -> None:  # noqa: B027 - optional hook
        """Load whatever the first call would (weights), so that timings measure generation only."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (models, connections)."""

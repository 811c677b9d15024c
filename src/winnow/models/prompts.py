"""What a local model sees: chat templating, tokenization and context checks, shared by the local engines.

The transformers and vLLM providers both turn prompts into token ids here, so one prompt gets the
same tokens, the same token counts and the same errors whichever engine serves the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from winnow.config import ModelConfig
from winnow.errors import ContextLengthExceeded, InvalidRequest, UnsupportedParameter
from winnow.models.base import ChatMessage, Prompt, RawPrompt, SamplingParams, ToolChat

# Prompts longer than this (in characters) are tokenized before they reach a model's queue, on a
# thread of their own, so that one large prompt never holds up the batch other callers wait in.
INLINE_ENCODE_CHARS = 16_384

# A token covers at most the longest vocabulary entry; normalizers (NFC composition, ...) may
# shorten a text a little before it is split, so the cheap size check keeps this margin.
_NORMALIZER_MARGIN = 4


@dataclass(frozen=True)
class PromptRequest:
    """One prompt as an engine queues it, with its own per-request limits, sampling parameters and
    seed (and its token ids, when they were computed before it was queued)."""

    prompt: Prompt
    max_tokens: int
    n: int
    stop: tuple[str, ...]
    input_ids: list[int] | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)
    seed: int | None = None


def requests_for(prompts: Sequence[Prompt], params: SamplingParams) -> list[PromptRequest]:
    """A call's prompts as queued requests, each with the call's parameters and its own seed."""
    return [
        PromptRequest(p, params.max_tokens, params.n, params.stop, sampling=params, seed=params.prompt_seed(i))
        for i, p in enumerate(prompts)
    ]


def prompt_chars(prompt: Prompt) -> int:
    return len(prompt) if isinstance(prompt, str) else sum(len(m.content) for m in prompt)


@dataclass(frozen=True)
class EncodedPrompt:
    """A tokenized prompt with its own per-request limits (max_tokens already fitted to the context)."""

    input_ids: list[int]
    max_tokens: int
    n: int
    stop: tuple[str, ...]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    seed: int | None = None


_PROBE = [
    [{"role": "user", "content": "What is 1+1?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}],
]


def compiled_chat_template(tokenizer: Any) -> Callable[..., str] | None:
    """The tokenizer's chat template compiled once with jinja2, when it renders exactly as
    ``apply_chat_template`` does on a few probe conversations; else None (use transformers).

    ``apply_chat_template`` re-processes its arguments on every call (tens of microseconds per
    prompt); a batch of 64 prompts would spend milliseconds there, on the inference thread."""
    if not tokenizer.chat_template or not isinstance(tokenizer.chat_template, str):
        return None
    try:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise ValueError(message)

        from datetime import datetime

        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
        )
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        template = env.from_string(tokenizer.chat_template)
        specials = {k: v for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)}

        def render(messages: list[dict[str, Any]]) -> str:
            return template.render(messages=messages, add_generation_prompt=True, **specials)

        for probe in _PROBE:
            if render(probe) != tokenizer.apply_chat_template(probe, add_generation_prompt=True, tokenize=False):
                return None
        return render
    except Exception:  # any template this cannot reproduce exactly goes through transformers
        return None


def _message(message: ChatMessage) -> dict[str, Any]:
    """A message as chat templates read it (tool calls with their arguments as objects, as Hermes' do)."""
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        calls = json.loads(message.tool_calls)
        for call in calls:
            function = call.get("function")
            if not isinstance(function, dict):
                continue
            arguments = function.get("arguments")
            if isinstance(arguments, str):
                with contextlib.suppress(ValueError):  # not JSON: the template gets the text
                    function["arguments"] = json.loads(arguments)
        out["tool_calls"] = calls
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


def truncate_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class PromptEncoder:
    """A local model's tokenizer with its chat template and context length."""

    def __init__(self, source: str, config: ModelConfig, context_length: int) -> None:
        from transformers import AutoTokenizer

        self.tokenizer: Any = AutoTokenizer.from_pretrained(source, local_files_only=True)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.context_length = context_length
        # The fewest tokens a text of n characters can be is n / (longest vocabulary entry).
        self.max_token_chars = max((len(t) for t in self.tokenizer.get_vocab()), default=1) or 1
        template = config.options.get("chat_template", "auto")
        self.use_chat_template = bool(self.tokenizer.chat_template) and template in ("auto", True)
        self._template = compiled_chat_template(self.tokenizer)
        # A template that renders tools reads a ``tools`` variable (Hermes, Qwen, Llama 3.1, ...).
        self.renders_tools = isinstance(self.tokenizer.chat_template, str) and "tools" in self.tokenizer.chat_template
        self.model_id = config.id

    def render(self, prompt: Prompt) -> str:
        """The text the model sees: chats (and plain prompts, when the model has a chat template)
        go through the tokenizer's chat template; a RawPrompt is sent as written."""
        if isinstance(prompt, RawPrompt):
            return str(prompt)
        if isinstance(prompt, str):
            if not self.use_chat_template:
                return prompt
            messages: list[dict[str, str]] = [{"role": "user", "content": prompt}]
        else:
            messages = [_message(m) for m in prompt]
            if not self.tokenizer.chat_template:
                return "\n".join(m["content"] for m in messages)
        tools = self._tools(prompt)
        if self._template is not None and tools is None:  # with tools: transformers' own rendering (its tojson)
            return self._template(messages)
        try:
            rendered: str = self.tokenizer.apply_chat_template(
                messages, tools=tools, add_generation_prompt=True, tokenize=False
            )
        except Exception as exc:  # jinja's errors (a malformed tool call, a role it refuses): the request's
            raise InvalidRequest(
                "The model's chat template cannot render these messages", str(exc)[:300], param="messages"
            ) from exc
        return rendered

    def _tools(self, prompt: Prompt) -> list[Any] | None:
        """A ToolChat's tools for the template, or UnsupportedParameter when the template has none."""
        if not isinstance(prompt, ToolChat):
            return None
        if not self.renders_tools:
            raise UnsupportedParameter("tools", self.model_id, "its chat template does not render tools")
        tools: list[Any] = json.loads(prompt.tools)
        return tools

    def encode(self, texts: list[str], raw: bool = False) -> list[list[int]]:
        """Token ids of rendered prompts, in one batched (Rust) tokenizer call. A chat template
        writes its own special tokens; a raw prompt gets the tokenizer's (BOS), as vLLM gives it."""
        add_special = raw or not self.use_chat_template
        ids: list[list[int]] = self.tokenizer(texts, add_special_tokens=add_special)["input_ids"]
        return ids

    def token_ids(self, prompt: RawPrompt) -> list[int]:
        """A prompt given as token ids, each checked against the vocabulary."""
        assert prompt.token_ids is not None
        size = len(self.tokenizer)
        bad = next((t for t in prompt.token_ids if not 0 <= t < size), None)
        if bad is not None:
            raise InvalidRequest(
                "Prompt has a token id outside the vocabulary", f"{bad} (vocabulary: {size})", param="prompt"
            )
        return list(prompt.token_ids)

    def check_size(self, text: str) -> None:
        """InvalidRequest for a text that cannot fit the context whatever its tokens: found from its
        length alone, so a multi-megabyte prompt costs no tokenization at all."""
        fewest = len(text) // (self.max_token_chars * _NORMALIZER_MARGIN)
        if fewest > self.context_length:
            raise ContextLengthExceeded(
                "Prompt exceeds the model's context length",
                f"{len(text)} characters make at least {fewest} tokens; context length is {self.context_length}",
            )

    def check(self, ids: list[int], request: PromptRequest) -> EncodedPrompt:
        """The prompt with its room in the context, or InvalidRequest."""
        if not ids:
            raise InvalidRequest("Prompt is empty after tokenization")
        room = self.context_length - len(ids)
        if room < 1:
            raise ContextLengthExceeded(
                "Prompt exceeds the model's context length",
                f"{len(ids)} prompt tokens; context length is {self.context_length}",
            )
        return EncodedPrompt(
            ids, min(request.max_tokens, room), request.n, request.stop, request.sampling, request.seed
        )

    def prepare(self, request: PromptRequest) -> EncodedPrompt:
        result = self.prepare_all([request])[0]
        if isinstance(result, InvalidRequest):
            raise result
        return result

    def prepare_all(self, requests: list[PromptRequest]) -> list[EncodedPrompt | InvalidRequest]:
        """Every request encoded (those not encoded yet in one batched tokenizer call); a prompt that
        cannot be served gets its error."""
        ids: list[list[int] | InvalidRequest] = []
        todo: dict[bool, list[int]] = {False: [], True: []}  # templated or plain, and raw prompts
        texts: dict[bool, list[str]] = {False: [], True: []}
        for i, request in enumerate(requests):
            if request.input_ids is not None:
                ids.append(request.input_ids)
                continue
            prompt = request.prompt
            raw = isinstance(prompt, RawPrompt)
            try:
                if isinstance(prompt, RawPrompt) and prompt.token_ids is not None:
                    ids.append(self.token_ids(prompt))
                    continue
                text = self.render(prompt)
                self.check_size(text)
            except InvalidRequest as exc:
                ids.append(exc)
                continue
            ids.append([])
            todo[raw].append(i)
            texts[raw].append(text)
        for raw, batch in texts.items():
            if batch:
                for i, encoded in zip(todo[raw], self.encode(batch, raw), strict=True):
                    ids[i] = encoded
        return [self._check_or_error(item, request) for item, request in zip(ids, requests, strict=True)]

    def _check_or_error(
        self, ids: list[int] | InvalidRequest, request: PromptRequest
    ) -> EncodedPrompt | InvalidRequest:
        if isinstance(ids, InvalidRequest):
            return ids
        try:
            return self.check(ids, request)
        except InvalidRequest as exc:
            return exc

    async def pre_encode(self, requests: list[PromptRequest]) -> list[PromptRequest]:
        """The requests with the token ids of their large prompts filled in, computed on a thread of
        their own (the Rust tokenizer releases the GIL), so a large prompt neither blocks the event
        loop nor holds the model's queue. Small prompts are left to the engine's batched call; a large
        prompt that cannot fit is left as it is (``prepare_all`` refuses it without tokenizing)."""
        if all(r.input_ids is not None or prompt_chars(r.prompt) <= INLINE_ENCODE_CHARS for r in requests):
            return requests
        return await asyncio.to_thread(self._pre_encode, requests)

    def _pre_encode(self, requests: list[PromptRequest]) -> list[PromptRequest]:
        out = []
        for request in requests:
            if request.input_ids is None and prompt_chars(request.prompt) > INLINE_ENCODE_CHARS:
                text = self.render(request.prompt)
                try:
                    self.check_size(text)
                except InvalidRequest:
                    out.append(request)
                    continue
                request = replace(request, input_ids=self.encode([text], isinstance(request.prompt, RawPrompt))[0])
            out.append(request)
        return out

    async def prepare_async(self, request: PromptRequest) -> EncodedPrompt:
        """``prepare`` for a caller on the event loop: a large prompt is tokenized on a thread."""
        (request,) = await self.pre_encode([request])
        return self.prepare(request)

    def decode(self, tokens: list[int]) -> str:
        return str(self.tokenizer.decode(tokens, skip_special_tokens=True))

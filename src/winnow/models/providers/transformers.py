"""Local models with Hugging Face transformers: safetensors directories, chat templates, LoRA adapters.

Models load lazily on first use (in a thread) into the shared ``ModelPool``. Each loaded model owns
one inference thread and a ``BatchingEngine`` that gathers concurrent requests into one padded,
left-aligned ``model.generate`` call. Nothing here runs on the event loop but queue bookkeeping.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from winnow.config import ModelConfig, Settings
from winnow.errors import InvalidRequest, ServiceUnavailable
from winnow.models.base import (
    Completion,
    GenerationResult,
    Prompt,
    Provider,
    SamplingParams,
    StreamDelta,
)
from winnow.models.batching import BatchingEngine
from winnow.models.pool import ModelPool

log = logging.getLogger("winnow.models")


@dataclass(frozen=True)
class PromptRequest:
    """One prompt as the batcher queues it, with its own per-request limits."""

    prompt: Prompt
    max_tokens: int
    n: int
    stop: tuple[str, ...]


@dataclass(frozen=True)
class EncodedPrompt:
    """A tokenized prompt with its own per-request limits."""

    input_ids: list[int]
    max_tokens: int
    n: int
    stop: tuple[str, ...]


def _weights_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("*.safetensors")) + sum(f.stat().st_size for f in path.glob("*.bin"))


_PROBE = [
    [{"role": "user", "content": "What is 1+1?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}],
]


def compiled_chat_template(tokenizer: Any) -> Callable[[list[dict[str, str]]], str] | None:
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

        def render(messages: list[dict[str, str]]) -> str:
            return template.render(messages=messages, add_generation_prompt=True, **specials)

        for probe in _PROBE:
            if render(probe) != tokenizer.apply_chat_template(probe, add_generation_prompt=True, tokenize=False):
                return None
        return render
    except Exception:  # any template this cannot reproduce exactly goes through transformers
        return None


def _sampling(params: SamplingParams) -> dict[str, Any]:
    if params.greedy:
        return {"do_sample": False}
    # top_k=0 switches off transformers' default top-k of 50: temperature and top_p mean what they say.
    return {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p, "top_k": 0}


def _truncate_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class LoadedModel:
    """A model, its tokenizer, its inference thread and its batching engine."""

    def __init__(self, config: ModelConfig, settings: Settings) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        configure_torch_threads(settings.local_torch_threads)
        source = config.path or config.base_model
        if not source or not Path(source).is_dir():
            raise ServiceUnavailable(f"Model {config.id!r} has no local directory", f"path={source!r}")
        self.device = resolve_device(config.device)
        dtype = _dtype(config.dtype, self.device)
        self.tokenizer: Any = AutoTokenizer.from_pretrained(source, local_files_only=True)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        model: Any = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, local_files_only=True)
        if config.adapter_path:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, config.adapter_path, local_files_only=True)
            if config.options.get("merge_adapter", True):
                model = model.merge_and_unload()
        self.model: Any = model.to(self.device).eval()
        self.nbytes = sum(p.numel() * p.element_size() for p in self.model.parameters())
        self.context_length = config.context_length or int(
            getattr(self.model.config, "max_position_embeddings", 0) or 2048
        )
        template = config.options.get("chat_template", "auto")
        self.use_chat_template = bool(self.tokenizer.chat_template) and template in ("auto", True)
        self._template = compiled_chat_template(self.tokenizer)
        eos = self.model.generation_config.eos_token_id or self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        self.pad_id = int(self.tokenizer.pad_token_id)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"winnow-{config.id}")
        self.engine: BatchingEngine[PromptRequest, GenerationResult] = BatchingEngine(
            self.run_batch,
            self.executor,
            rows_of=lambda item: item.n,
            max_batch_rows=int(config.options.get("max_batch_rows", settings.local_max_batch_rows)),
            max_wait_ms=float(config.options.get("max_wait_ms", settings.local_batch_wait_ms)),
        )
        self._torch = torch

    def close(self) -> None:
        self.executor.shutdown(wait=False)

    # -- encoding -------------------------------------------------------------------------------
    def render(self, prompt: Prompt) -> str:
        """The text the model sees: chats (and plain prompts, when the model has a chat template)
        go through the tokenizer's chat template."""
        if isinstance(prompt, str):
            if not self.use_chat_template:
                return prompt
            messages: list[dict[str, str]] = [{"role": "user", "content": prompt}]
        else:
            messages = [{"role": m.role, "content": m.content} for m in prompt]
            if not self.tokenizer.chat_template:
                return "\n".join(m["content"] for m in messages)
        if self._template is not None:
            return self._template(messages)
        rendered: str = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return rendered

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids of rendered prompts, in one batched (Rust) tokenizer call."""
        ids: list[list[int]] = self.tokenizer(texts, add_special_tokens=not self.use_chat_template)["input_ids"]
        return ids

    def check(self, ids: list[int], request: PromptRequest) -> EncodedPrompt:
        """The prompt with its room in the context, or InvalidRequest."""
        if not ids:
            raise InvalidRequest("Prompt is empty after tokenization")
        room = self.context_length - len(ids)
        if room < 1:
            raise InvalidRequest(
                "Prompt exceeds the model's context length",
                f"{len(ids)} prompt tokens; context length is {self.context_length}",
            )
        return EncodedPrompt(ids, min(request.max_tokens, room), request.n, request.stop)

    def prepare(self, request: PromptRequest) -> EncodedPrompt:
        return self.check(self.encode([self.render(request.prompt)])[0], request)

    # -- inference (runs on the model's thread) -------------------------------------------------
    def run_batch(self, requests: list[PromptRequest], params: SamplingParams) -> list[GenerationResult]:
        """Render, tokenize, generate and decode a whole batch: all of it off the event loop."""
        results = [GenerationResult() for _ in requests]
        encoded: list[tuple[int, EncodedPrompt]] = []
        for i, (request, ids) in enumerate(
            zip(requests, self.encode([self.render(r.prompt) for r in requests]), strict=True)
        ):
            try:
                encoded.append((i, self.check(ids, request)))
            except InvalidRequest as exc:
                results[i].error = exc
        if not encoded:
            return results
        rows = [item for _, item in encoded for _ in range(item.n)]
        generated = self._generate(rows, params)
        offset = 0
        for i, item in encoded:
            results[i].input_tokens = len(item.input_ids)
            results[i].completions = [self._completion(tokens, item) for tokens in generated[offset : offset + item.n]]
            offset += item.n
        return results

    def _generate(self, rows: list[EncodedPrompt], params: SamplingParams) -> list[list[int]]:
        torch = self._torch
        width = max(len(r.input_ids) for r in rows)
        input_ids = torch.tensor([[self.pad_id] * (width - len(r.input_ids)) + r.input_ids for r in rows])
        attention = torch.tensor([[0] * (width - len(r.input_ids)) + [1] * len(r.input_ids) for r in rows])
        # Left padding aligns every row's end at ``width``: the longest prompt bounds the room.
        max_new = max(1, min(max(r.max_tokens for r in rows), self.context_length - width))
        if params.seed is not None:
            torch.manual_seed(params.seed)
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids.to(self.device),
                attention_mask=attention.to(self.device),
                max_new_tokens=max_new,
                pad_token_id=self.pad_id,
                eos_token_id=list(self.eos_ids),
                **_sampling(params),
            )
        generated: list[list[int]] = output[:, width:].tolist()
        return generated

    def _completion(self, tokens: list[int], row: EncodedPrompt) -> Completion:
        tokens = tokens[: row.max_tokens]
        finish = "length"
        for i, token in enumerate(tokens):
            if token in self.eos_ids:
                tokens, finish = tokens[: i + 1], "stop"
                break
        text = str(self.tokenizer.decode(tokens, skip_special_tokens=True))
        if row.stop:
            text, stopped = _truncate_at_stop(text, row.stop)
            if stopped:
                finish = "stop"
        return Completion(text=text, finish_reason=finish, output_tokens=len(tokens))  # type: ignore[arg-type]

    def stream_thread(self, item: EncodedPrompt, params: SamplingParams, push: Any, cancel: threading.Event) -> None:
        """Generate one row, pushing each new token id list through ``push``; None at the end."""
        from transformers import StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        torch = self._torch

        class _Push(BaseStreamer):
            first = True

            def put(self, value: Any) -> None:
                if self.first:  # the prompt
                    self.first = False
                    return
                push(value.reshape(-1).tolist())

            def end(self) -> None:
                pass

        class _Cancelled(StoppingCriteria):
            def __call__(self, *_: Any, **__: Any) -> bool:
                return cancel.is_set()

        if params.seed is not None:
            torch.manual_seed(params.seed)
        try:
            with torch.inference_mode():
                self.model.generate(
                    input_ids=torch.tensor([item.input_ids], device=self.device),
                    attention_mask=torch.ones((1, len(item.input_ids)), dtype=torch.long, device=self.device),
                    max_new_tokens=item.max_tokens,
                    pad_token_id=self.pad_id,
                    eos_token_id=list(self.eos_ids),
                    streamer=_Push(),
                    stopping_criteria=StoppingCriteriaList([_Cancelled()]),
                    **_sampling(params),
                )
        finally:
            push(None)


def torch_threads(requested: int) -> int:
    """Intra-op threads for CPU inference. By default one core is left to the event loop (and any
    client on the same machine): OpenMP teams that spin while a core is taken slow down by 10-50x."""
    import os

    return requested or max(1, (os.cpu_count() or 2) - 1)


def configure_torch_threads(requested: int) -> None:
    import torch

    wanted = torch_threads(requested)
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)


def resolve_device(requested: str) -> str:
    if requested != "auto":
        return requested
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _dtype(requested: str, device: str) -> Any:
    import torch

    if requested == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return getattr(torch, requested)


class TransformersProvider(Provider):
    """``provider: transformers`` — a local Hugging Face model directory (optionally + LoRA adapter)."""

    name = "transformers"

    def __init__(self, config: ModelConfig, settings: Settings, pool: ModelPool | None = None) -> None:
        super().__init__(config, settings, pool)
        self._load_error: str | None = None

    def _files_present(self) -> bool:
        source = self.config.path or self.config.base_model
        if not source:
            return False
        path = Path(source)
        has_weights = _weights_bytes(path) > 0 if path.is_dir() else False
        adapter_ok = not self.config.adapter_path or Path(self.config.adapter_path).is_dir()
        return path.is_dir() and (path / "config.json").is_file() and has_weights and adapter_ok

    def loaded(self) -> LoadedModel:
        """The loaded model (blocking load on first use)."""

        def load() -> tuple[LoadedModel, int]:
            try:
                model = LoadedModel(self.config, self.settings)
            except Exception as exc:
                self._load_error = f"{type(exc).__name__}: {exc}"
                log.exception("failed to load %s", self.config.id)
                raise
            self._load_error = None
            return model, model.nbytes

        expected = _weights_bytes(Path(self.config.path or self.config.base_model or "."))
        loaded: LoadedModel = self.pool.get(self.config.id, load, expected)
        return loaded

    async def _model(self) -> LoadedModel:
        resident: LoadedModel | None = self.pool.peek(self.config.id)
        if resident is not None:  # the hot path: no thread hop
            return resident
        try:
            return await asyncio.to_thread(self.loaded)
        except ServiceUnavailable:
            raise
        except Exception as exc:
            raise ServiceUnavailable(f"Model {self.config.id!r} could not be loaded", str(exc)) from exc

    async def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[GenerationResult]:
        model = await self._model()
        requests = [PromptRequest(p, params.max_tokens, params.n, params.stop) for p in prompts]
        return await model.engine.submit(requests, params)

    async def stream(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[StreamDelta]:
        model = await self._model()
        item = model.prepare(PromptRequest(prompt, params.max_tokens, 1, params.stop))
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[list[int] | None] = asyncio.Queue()
        cancel = threading.Event()

        def push(tokens: list[int] | None) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, tokens)

        task = loop.run_in_executor(model.executor, model.stream_thread, item, params, push, cancel)
        tokens: list[int] = []
        sent = ""
        finish = "length"
        eos_seen = False
        try:
            while (chunk := await queue.get()) is not None:
                for token in chunk:
                    if token in model.eos_ids:
                        finish, eos_seen = "stop", True
                        cancel.set()
                        break
                    tokens.append(token)
                text = str(model.tokenizer.decode(tokens, skip_special_tokens=True))
                if text.endswith("\ufffd"):
                    continue  # an incomplete multi-byte character; wait for the rest
                if item.stop:
                    text, stopped = _truncate_at_stop(text, item.stop)
                    if stopped:
                        finish = "stop"
                        cancel.set()
                if len(text) > len(sent):
                    yield StreamDelta(text[len(sent) :])
                    sent = text
                if cancel.is_set():
                    break
            output_tokens = len(tokens) + int(eos_seen)  # counted as the batch path counts: EOS included
            yield StreamDelta("", finish, len(item.input_ids), output_tokens)  # type: ignore[arg-type]
        finally:
            cancel.set()
            await task

    async def available(self) -> bool:
        if not self._files_present():
            return False
        if self.config.id in self.pool.loaded():
            return True
        return self._load_error is None

    async def warm(self) -> None:
        await self._model()

    async def close(self) -> None:
        self.pool.evict(self.config.id)

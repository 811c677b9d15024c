"""Local models with Hugging Face transformers: safetensors directories, chat templates, LoRA adapters.

Models load lazily on first use (in a thread) into the shared ``ModelPool``. Each loaded model owns
one inference thread and a ``BatchingEngine`` that gathers concurrent requests into one padded,
left-aligned ``model.generate`` call. Nothing here runs on the event loop but queue bookkeeping.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from winnow.config import ModelConfig, Settings
from winnow.errors import InvalidRequest, ServiceUnavailable
from winnow.models.base import (
    Completion,
    GenerationResult,
    Prompt,
    SamplingParams,
    StreamDelta,
    engine_seed,
)
from winnow.models.batching import BatchingEngine
from winnow.models.engine_process import EngineProcess
from winnow.models.pool import ModelPool
from winnow.models.prompts import EncodedPrompt, PromptEncoder, PromptRequest, truncate_at_stop
from winnow.models.providers.local import LocalProvider

log = logging.getLogger("winnow.models")


def _sampling(params: SamplingParams) -> dict[str, Any]:
    if params.greedy:
        return {"do_sample": False}
    # top_k=0 switches off transformers' default top-k of 50: temperature and top_p mean what they say.
    return {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p, "top_k": 0}


class LoadedModel:
    """A model, its tokenizer, its inference thread and its batching engine."""

    def __init__(self, config: ModelConfig, settings: Settings) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        configure_torch_threads(settings.local_torch_threads)
        source = config.path or config.base_model
        if not source or not Path(source).is_dir():
            raise ServiceUnavailable(f"Model {config.id!r} has no local directory", f"path={source!r}")
        self.device = resolve_device(config.device)
        dtype = _dtype(config.dtype, self.device)
        model: Any = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, local_files_only=True)
        if config.adapter_path:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, config.adapter_path, local_files_only=True)
            if config.options.get("merge_adapter", True):
                model = model.merge_and_unload()
        self.model: Any = model.to(self.device).eval()
        self.nbytes = sum(p.numel() * p.element_size() for p in self.model.parameters())
        self.prompts = PromptEncoder(
            source,
            config,
            config.context_length or int(getattr(self.model.config, "max_position_embeddings", 0) or 2048),
        )
        eos = self.model.generation_config.eos_token_id or self.prompts.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        self.pad_id = int(self.prompts.tokenizer.pad_token_id)
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

    # -- inference (runs on the model's thread) -------------------------------------------------
    def run_batch(self, requests: list[PromptRequest], params: SamplingParams) -> list[GenerationResult]:
        """Render, tokenize, generate and decode a whole batch: all of it off the event loop."""
        results = [GenerationResult() for _ in requests]
        encoded: list[tuple[int, EncodedPrompt]] = []
        for i, item in enumerate(self.prompts.prepare_all(requests)):
            if isinstance(item, InvalidRequest):
                results[i].error = item
            else:
                encoded.append((i, item))
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
        max_new = max(1, min(max(r.max_tokens for r in rows), self.prompts.context_length - width))
        if params.seed is not None:
            torch.manual_seed(engine_seed(params.seed))
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
        text = self.prompts.decode(tokens)
        if row.stop:
            text, stopped = truncate_at_stop(text, row.stop)
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
            torch.manual_seed(engine_seed(params.seed))
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

    # -- the provider interface (runs on the event loop) ----------------------------------------
    async def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[GenerationResult]:
        """One result per prompt, through the batching engine (the provider's interface)."""
        return await self.submit([PromptRequest(p, params.max_tokens, params.n, params.stop) for p in prompts], params)

    async def submit(self, requests: list[PromptRequest], params: SamplingParams) -> list[GenerationResult]:
        """Requests that carry their own max_tokens, n and stop, under one sampling distribution
        (an engine process submits several callers' requests at once)."""
        return await self.engine.submit(await self.prompts.pre_encode(requests), params)

    async def stream(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[StreamDelta]:
        """One completion token by token, on the model's thread beside the batches."""
        item = await self.prompts.prepare_async(PromptRequest(prompt, params.max_tokens, 1, params.stop))
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[list[int] | None] = asyncio.Queue()
        cancel = threading.Event()

        def push(tokens: list[int] | None) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, tokens)

        task = loop.run_in_executor(self.executor, self.stream_thread, item, params, push, cancel)
        tokens: list[int] = []
        sent = ""
        finish = "length"
        eos_seen = False
        try:
            while (chunk := await queue.get()) is not None:
                for token in chunk:
                    if token in self.eos_ids:
                        finish, eos_seen = "stop", True
                        cancel.set()
                        break
                    tokens.append(token)
                text = self.prompts.decode(tokens)
                if text.endswith("\ufffd"):
                    continue  # an incomplete multi-byte character; wait for the rest
                if item.stop:
                    text, stopped = truncate_at_stop(text, item.stop)
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


class TransformersProvider(LocalProvider[LoadedModel | EngineProcess]):
    """``provider: transformers`` — a local Hugging Face model directory (optionally + LoRA adapter).

    ``options.engine`` (default: the ``local_engine`` setting) says where the model runs: ``thread``,
    in this process on an inference thread; ``process``, in an engine process of its own
    (``models/engine_process.py``), so that its Python ``generate`` loop and this process's event
    loop do not share one GIL."""

    name = "transformers"

    def __init__(self, config: ModelConfig, settings: Settings, pool: ModelPool | None = None) -> None:
        super().__init__(config, settings, pool)
        self.engine_mode = engine_mode(config, settings)  # a typo fails at start-up, not at the first call

    def open(self) -> LoadedModel | EngineProcess:
        if self.engine_mode == "process":
            return EngineProcess(self.config, self.settings)
        return LoadedModel(self.config, self.settings)

    async def _running(self) -> LoadedModel | EngineProcess:
        model = await self._model()
        if isinstance(model, EngineProcess) and model.exited is not None:
            log.warning("engine process of %s had exited (%s); starting a new one", self.config.id, model.exited)
            self.pool.evict(self.config.id)
            model = await self._model()
        return model

    async def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[GenerationResult]:
        return await (await self._running()).generate(prompts, params)

    async def stream(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[StreamDelta]:
        async for delta in (await self._running()).stream(prompt, params):
            yield delta


ENGINES = ("thread", "process")


def engine_mode(config: ModelConfig, settings: Settings) -> str:
    mode = str(config.options.get("engine", settings.local_engine))
    if mode not in ENGINES:
        raise ValueError(f"model {config.id!r}: options.engine must be one of {', '.join(ENGINES)}, not {mode!r}")
    return mode

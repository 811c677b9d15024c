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
from dataclasses import replace
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
    TokenLogprob,
    choice_seed,
)
from winnow.models.batching import BatchingEngine
from winnow.models.engine_process import EngineProcess
from winnow.models.gguf import ensure_converted
from winnow.models.pool import ModelPool
from winnow.models.prompts import EncodedPrompt, PromptEncoder, PromptRequest, requests_for, truncate_at_stop
from winnow.models.providers.local import LocalProvider

log = logging.getLogger("winnow.models")


class LoadedModel:
    """A model, its tokenizer, its inference thread and its batching engine."""

    def __init__(self, config: ModelConfig, settings: Settings) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        from winnow.models import sampling

        configure_torch_threads(settings.local_torch_threads)
        ensure_converted(config)
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
            key=lambda _params: (),  # each row samples with its own parameters and seed: any rows batch
        )
        self.vocab = int(self.model.get_output_embeddings().weight.shape[0])
        self._token_texts: dict[int, str] = {}  # token id -> its text (logprobs)
        self._guides: Any = None  # the GuideCompiler, made at the first constrained request
        self._torch = torch
        self._sampling = sampling

    def close(self) -> None:
        self.executor.shutdown(wait=False)

    # -- inference (runs on the model's thread) -------------------------------------------------
    def run_batch(self, requests: list[PromptRequest], _params: SamplingParams) -> list[GenerationResult]:
        """Render, tokenize, generate and decode a whole batch: all of it off the event loop. Each
        row samples with its own request's parameters and seed (``_params`` is the batch's merge)."""
        results = [GenerationResult() for _ in requests]
        encoded: list[tuple[int, EncodedPrompt]] = []
        for i, item in enumerate(self.prompts.prepare_all(requests)):
            try:
                if isinstance(item, InvalidRequest):
                    raise item
                self.compile_guide(item.sampling)
            except InvalidRequest as exc:
                results[i].error = exc
            else:
                encoded.append((i, item))
        if not encoded:
            return results
        rows = [self._row(item, j) for _, item in encoded for j in range(item.n)]
        generated, logprobs = self._generate(rows)
        offset = 0
        for i, item in encoded:
            results[i].input_tokens = len(item.input_ids)
            results[i].completions = [
                self._completion(generated[k], rows[k], item.stop, logprobs[k]) for k in range(offset, offset + item.n)
            ]
            if item.sampling.prompt_logprobs is not None:
                results[i].prompt_logprobs = self.prompt_logprobs(item.input_ids, item.sampling.prompt_logprobs)
            offset += item.n
        return results

    def compile_guide(self, params: SamplingParams) -> None:
        """Compile a request's structured-output grammar (cached), or InvalidRequest naming its field."""
        if params.guide is None:
            return
        if self._guides is None:
            from winnow.models.guided import GuideCompiler

            self._guides = GuideCompiler(self.prompts.tokenizer, self.vocab, self.eos_ids)
        self._guides.compile(params.guide)

    def _row_guides(self, rows: list[Any]) -> Any:
        return None if self._guides is None else self._guides.rows([r.params.guide for r in rows])

    def _row(self, item: EncodedPrompt, choice: int) -> Any:
        return self._sampling.DecodeRow(item.input_ids, item.sampling, choice_seed(item.seed, choice), item.max_tokens)

    def _generate(self, rows: list[Any], **kwargs: Any) -> tuple[list[list[int]], list[Any]]:
        """Every row's new tokens (and recorded log-probabilities), from one padded ``generate``."""
        torch = self._torch
        width = max(len(r.input_ids) for r in rows)
        input_ids = torch.tensor([[self.pad_id] * (width - len(r.input_ids)) + r.input_ids for r in rows])
        attention = torch.tensor([[0] * (width - len(r.input_ids)) + [1] * len(r.input_ids) for r in rows])
        # Left padding aligns every row's end at ``width``: the longest prompt bounds the room.
        max_new = max(1, min(max(r.max_tokens for r in rows), self.prompts.context_length - width))
        sampler = self._sampling.RowSampler(rows, width, self.vocab, self.eos_ids, self._row_guides(rows))
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids.to(self.device),
                attention_mask=attention.to(self.device),
                max_new_tokens=max_new,
                pad_token_id=self.pad_id,
                eos_token_id=None,  # each row stops at its own stop tokens (RowStops)
                do_sample=False,  # RowSampler has chosen each row's token: generate takes the argmax
                logits_processor=[sampler],
                stopping_criteria=[self._sampling.RowStops(sampler)],
                **kwargs,
            )
        generated: list[list[int]] = output[:, width:].tolist()
        return generated, sampler.row_logprobs(generated)

    def _completion(self, tokens: list[int], row: Any, stop: tuple[str, ...], logprobs: Any) -> Completion:
        kept, stopped = self._sampling.finish(tokens, row, self._sampling.stop_ids(row.params, self.eos_ids))
        finish = "stop" if stopped else "length"
        content = kept[:-1] if stopped else kept  # a stop token is counted, but is no part of the text
        text = self.prompts.decode(content)
        if stop:
            text, cut = truncate_at_stop(text, stop)
            if cut:
                finish = "stop"
        return Completion(
            text=text,
            finish_reason=finish,  # type: ignore[arg-type]
            output_tokens=len(kept),
            # a stop token keeps its entry, as in vLLM's answers: lm-eval's loglikelihood drops the last
            # entry of an echo as the generated token, whatever that token is
            logprobs=None if logprobs is None else [self._logprob(entry) for entry in logprobs[: len(kept)]],
        )

    def _logprob(self, entry: tuple[int, float, list[tuple[int, float]]]) -> TokenLogprob:
        token, logprob, top = entry
        return TokenLogprob(self.token_text(token), logprob, [(self.token_text(t), v) for t, v in top])

    def token_text(self, token: int) -> str:
        text = self._token_texts.get(token)
        if text is None:
            text = self._token_texts[token] = str(self.prompts.tokenizer.decode([token]))
        return text

    def prompt_logprobs(self, ids: list[int], top: int) -> list[TokenLogprob]:
        """Each prompt token's log-probability given the tokens before it (the first has none)."""
        torch = self._torch
        with torch.inference_mode():
            logits = self.model(input_ids=torch.tensor([ids], device=self.device)).logits[0, :-1].float()
        logprobs = torch.log_softmax(logits[:, : self.vocab], dim=-1)
        picked = logprobs.gather(1, torch.tensor(ids[1:], device=logprobs.device).unsqueeze(1)).squeeze(1).tolist()
        values, indices = logprobs.topk(top, dim=-1)
        out = [TokenLogprob(self.token_text(ids[0]), None)]
        for k, token in enumerate(ids[1:]):
            pairs = zip(indices[k].tolist(), values[k].tolist(), strict=True)
            out.append(TokenLogprob(self.token_text(token), picked[k], [(self.token_text(t), v) for t, v in pairs]))
        return out

    def stream_thread(self, item: EncodedPrompt, push: Any, cancel: threading.Event) -> None:
        """Generate one row, pushing each new token id list through ``push``; None at the end."""
        from transformers import StoppingCriteria
        from transformers.generation.streamers import BaseStreamer

        class _Push(BaseStreamer):
            first = True

            def put(self, value: Any) -> None:
                if self.first:  # the prompt
                    self.first = False
                    return
                push(value.reshape(-1).tolist())

            def end(self) -> None:
                pass

        torch = self._torch

        class _Cancelled(StoppingCriteria):
            def __call__(self, input_ids: Any, *_: Any, **__: Any) -> Any:
                return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool)

        try:
            self._generate_one(item, _Push(), _Cancelled())
        finally:
            push(None)

    def _generate_one(self, item: EncodedPrompt, streamer: Any, cancelled: Any) -> None:
        torch = self._torch
        row = self._row(item, 0)
        guides = self._row_guides([row])
        sampler = self._sampling.RowSampler([row], len(item.input_ids), self.vocab, self.eos_ids, guides)
        with torch.inference_mode():
            self.model.generate(
                input_ids=torch.tensor([item.input_ids], device=self.device),
                attention_mask=torch.ones((1, len(item.input_ids)), dtype=torch.long, device=self.device),
                max_new_tokens=item.max_tokens,
                pad_token_id=self.pad_id,
                eos_token_id=None,
                do_sample=False,
                logits_processor=[sampler],
                stopping_criteria=[self._sampling.RowStops(sampler), cancelled],
                streamer=streamer,
            )

    # -- the provider interface (runs on the event loop) ----------------------------------------
    async def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[GenerationResult]:
        """One result per prompt, through the batching engine (the provider's interface)."""
        return await self.submit(requests_for(prompts, params), params)

    async def submit(self, requests: list[PromptRequest], params: SamplingParams) -> list[GenerationResult]:
        """Requests that carry their own max_tokens, n, stop, sampling parameters and seeds (an engine
        process submits several callers' requests at once)."""
        return await self.engine.submit(await self.prompts.pre_encode(requests), params)

    async def stream(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[StreamDelta]:
        """One completion token by token, on the model's thread beside the batches."""
        (request,) = requests_for([prompt], replace(params, n=1))
        item = await self.prompts.prepare_async(request)
        stops = self._sampling.stop_ids(params, self.eos_ids)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.executor, self.compile_guide, params)  # a bad schema: a 400, not a stream
        queue: asyncio.Queue[list[int] | None] = asyncio.Queue()
        cancel = threading.Event()

        def push(tokens: list[int] | None) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, tokens)

        task = loop.run_in_executor(self.executor, self.stream_thread, item, push, cancel)
        tokens: list[int] = []
        sent = ""
        finish = "length"
        eos_seen = False
        try:
            while (chunk := await queue.get()) is not None:
                for token in chunk:
                    if token in stops and len(tokens) >= params.min_tokens:
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

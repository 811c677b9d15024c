"""Local models on vLLM (optional extra ``vllm``): paged attention, continuous batching, prefix caching.

``provider: vllm`` serves a local model directory with one vLLM engine per process, loaded lazily
into the shared ``ModelPool``. Prompts are rendered and tokenized by Winnow (``PromptEncoder``, as
for the transformers provider) and handed to vLLM as token ids, so a prompt costs the same tokens
and fails with the same errors on either engine. Each prompt is one vLLM request whose ``n``
samples share the prompt's KV cache.

Two engines, chosen with ``options.engine``:

* ``async`` (default): ``AsyncLLMEngine``. Concurrent requests (HTTP clients, a job's chunks) are
  continuously batched by vLLM itself; ``/v1`` streams token by token.
* ``llm``: the offline ``vllm.LLM``, for worker processes that only run jobs. Its blocking
  ``LLM.generate`` runs on one thread; concurrent calls are gathered into one call by the
  ``BatchingEngine``. Streams are sent whole.

Engine arguments (``gpu_memory_utilization``, ``tensor_parallel_size``, ``max_num_seqs``,
``enforce_eager``, ``kv_cache_memory_bytes`` on CPU builds, ...) go under ``options.engine_args``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from winnow.config import ModelConfig, Settings
from winnow.errors import InvalidRequest, ServiceUnavailable, UnsupportedParameter, WinnowError
from winnow.models.base import Completion, GenerationResult, Prompt, SamplingParams, StreamDelta
from winnow.models.batching import BatchingEngine, BatchStats
from winnow.models.pool import ModelPool
from winnow.models.prompts import EncodedPrompt, PromptEncoder, PromptRequest
from winnow.models.providers.local import LocalProvider, weights_bytes

log = logging.getLogger("winnow.models")

ENGINES = ("async", "llm")
# Prompts per call tokenized on the event loop; larger calls are tokenized in a thread.
_INLINE_PROMPTS = 8


@cache
def vllm_installed() -> bool:
    """Looked up once: /models asks on every listing, and an install does not change under a process."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def engine_mode(config: ModelConfig) -> str:
    mode = str(config.options.get("engine", "async"))
    if mode not in ENGINES:
        raise ValueError(f"model {config.id!r}: options.engine must be one of {', '.join(ENGINES)}, not {mode!r}")
    return mode


def engine_args(config: ModelConfig) -> dict[str, Any]:
    """vLLM engine arguments for a configured model: Winnow's fields, then ``options.engine_args``."""
    source = config.path or config.base_model
    args: dict[str, Any] = {"model": source, "tokenizer": source, "dtype": config.dtype, "seed": 0}
    if config.context_length:
        args["max_model_len"] = config.context_length
    if config.adapter_path:
        adapter = json.loads((Path(config.adapter_path) / "adapter_config.json").read_text())
        args.update(enable_lora=True, max_lora_rank=max(8, int(adapter.get("r", 8))), max_loras=1)
    args.update(config.options.get("engine_args", {}))
    return args


@cache
def _vllm_sampling() -> tuple[Any, Any]:
    """vLLM's SamplingParams and RequestOutputKind, resolved once (``vllm.X`` is a lazy lookup)."""
    from vllm.sampling_params import RequestOutputKind
    from vllm.sampling_params import SamplingParams as VLLMSamplingParams

    return VLLMSamplingParams, RequestOutputKind


def sampling_params(params: SamplingParams, item: EncodedPrompt, seed: int | None, delta: bool = False) -> Any:
    """vLLM SamplingParams for one prompt. Greedy ignores top_p and seed, as the transformers path does."""
    make, kind = _vllm_sampling()
    return make(
        n=1 if params.greedy else item.n,  # vLLM refuses n > 1 when greedy: to_result copies the one
        max_tokens=item.max_tokens,
        temperature=0.0 if params.greedy else params.temperature,
        top_p=1.0 if params.greedy else params.top_p,
        seed=None if params.greedy else seed,
        stop=list(item.stop) or None,
        output_kind=kind.DELTA if delta else kind.FINAL_ONLY,
        # vLLM's own sampling controls, under their own names
        top_k=params.top_k if params.top_k > 0 else -1,
        min_p=params.min_p,
        repetition_penalty=params.repetition_penalty,
        presence_penalty=params.presence_penalty,
        frequency_penalty=params.frequency_penalty,
        min_tokens=min(params.min_tokens, item.max_tokens),
        ignore_eos=params.ignore_eos,
        stop_token_ids=list(params.stop_token_ids) or None,
        logit_bias=dict(params.logit_bias) or None,
    )


def to_result(output: Any, item: EncodedPrompt) -> GenerationResult:
    """A vLLM RequestOutput as Winnow's result: EOS is counted in output_tokens, as everywhere;
    a greedy request asked for ``n`` gets its one completion ``n`` times, as on transformers."""
    completions = [
        Completion(
            text=c.text,
            finish_reason="length" if c.finish_reason == "length" else "stop",
            output_tokens=len(c.token_ids),
        )
        for c in sorted(output.outputs, key=lambda c: c.index)
    ]
    if len(completions) == 1 < item.n:
        completions = [Completion(**vars(completions[0])) for _ in range(item.n)]
    return GenerationResult(completions=completions, input_tokens=len(item.input_ids))


@dataclass(frozen=True)
class _Job:
    """One prompt queued for ``vllm.LLM`` with its call's sampling parameters and its own seed:
    vLLM takes parameters per prompt, so any queued jobs can share one ``LLM.generate``."""

    request: PromptRequest
    params: SamplingParams
    seed: int | None


class _AsyncStats:
    """The /metrics view of an async engine: rows in flight and rows through it."""

    def __init__(self, engine: Any) -> None:
        self.async_engine = engine  # None once closed
        self.stats = BatchStats()

    @property
    def queue_depth(self) -> int:
        return 0 if self.async_engine is None else int(self.async_engine.get_num_unfinished_requests())


class VLLMModel:
    """One vLLM engine (async or offline) with Winnow's prompt encoder."""

    def __init__(self, config: ModelConfig, settings: Settings) -> None:
        source = config.path or config.base_model
        if not source or not Path(source).is_dir():
            raise ServiceUnavailable(f"Model {config.id!r} has no local directory", f"path={source!r}")
        mode = engine_mode(config)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models load from local files only
        import vllm

        self.mode = mode
        self.nbytes = weights_bytes(Path(source))
        args = engine_args(config)
        self.lora: Any = None
        self.async_engine: Any = None
        self.llm: Any = None
        if config.adapter_path:
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest(f"{config.id}-adapter", 1, config.adapter_path)
        self.executor: ThreadPoolExecutor | None = None
        if mode == "async":
            self.async_engine = vllm.AsyncLLMEngine.from_engine_args(vllm.AsyncEngineArgs(**args))
            model_config = self.async_engine.model_config
            self.engine: Any = _AsyncStats(self.async_engine)
        else:
            self.llm = vllm.LLM(**args)
            model_config = self.llm.llm_engine.model_config
            self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"winnow-vllm-{config.id}")
            self.engine = BatchingEngine(
                self.run_batch,
                self.executor,
                rows_of=lambda job: job.request.n,
                max_batch_rows=int(config.options.get("max_batch_rows", 4096)),
                max_wait_ms=float(config.options.get("max_wait_ms", settings.local_batch_wait_ms)),
                key=lambda params: (),
            )
        self.prompts = PromptEncoder(source, config, int(model_config.max_model_len))

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=False)
        try:
            if self.mode == "async":
                self.async_engine.shutdown()
            else:
                self.llm.llm_engine.engine_core.shutdown()
        except Exception:  # closing is best effort: the engine process may already be gone
            log.exception("shutting down vLLM")
        # Drop the engine now, while the interpreter is whole (vLLM's __del__ shuts down again).
        self.async_engine = self.llm = None
        if isinstance(self.engine, _AsyncStats):
            self.engine.async_engine = None

    # -- vllm.LLM (runs on the model's thread) ----------------------------------------------------
    def run_batch(self, jobs: list[_Job], _: SamplingParams) -> list[GenerationResult]:
        results = [GenerationResult() for _ in jobs]
        prepared = self.prompts.prepare_all([job.request for job in jobs])
        ready = [(i, item) for i, item in enumerate(prepared) if isinstance(item, EncodedPrompt)]
        for i, item in enumerate(prepared):
            if isinstance(item, InvalidRequest):
                results[i].error = item
        if ready:
            try:
                outputs = self.llm.generate(
                    [{"prompt_token_ids": item.input_ids} for _, item in ready],
                    [sampling_params(jobs[i].params, item, jobs[i].seed) for i, item in ready],
                    use_tqdm=False,
                    lora_request=self.lora,
                )
            except Exception as exc:  # the engine failed the whole call: every caller hears why
                raise ServiceUnavailable("vLLM could not generate", f"{type(exc).__name__}: {exc}") from exc
            for (i, item), output in zip(ready, outputs, strict=True):
                results[i] = to_result(output, item)
        return results

    # -- AsyncLLMEngine (on the event loop; vLLM's engine runs in its own process) ----------------
    async def generate_async(
        self, prepared: list[EncodedPrompt | InvalidRequest], params: SamplingParams
    ) -> list[GenerationResult]:
        async def one(index: int, item: EncodedPrompt | InvalidRequest) -> GenerationResult:
            if isinstance(item, InvalidRequest):
                return GenerationResult(error=item)
            final = None
            request = {"prompt_token_ids": item.input_ids}
            sp = sampling_params(params, item, params.prompt_seed(index))
            async for output in self.async_engine.generate(request, sp, uuid.uuid4().hex, lora_request=self.lora):
                final = output
            return to_result(final, item)

        outcomes = await asyncio.gather(*(one(i, item) for i, item in enumerate(prepared)), return_exceptions=True)
        results: list[GenerationResult] = []
        for outcome in outcomes:
            if isinstance(outcome, GenerationResult):
                results.append(outcome)
                continue
            if isinstance(outcome, asyncio.CancelledError):
                raise outcome
            self.raise_if_dead(outcome)
            results.append(GenerationResult(error=InvalidRequest("vLLM refused the prompt", str(outcome))))
        self.engine.stats.batches += 1
        self.engine.stats.rows += sum(len(r.completions) for r in results)
        return results

    def raise_if_dead(self, exc: BaseException) -> None:
        if self.async_engine is None or self.async_engine.errored:  # stopped, or closed (evicted)
            raise ServiceUnavailable("The vLLM engine has stopped", f"{type(exc).__name__}: {exc}") from exc


class VLLMProvider(LocalProvider[VLLMModel]):
    """``provider: vllm``: a local Hugging Face model directory served by vLLM."""

    name = "vllm"

    def __init__(self, config: ModelConfig, settings: Settings, pool: ModelPool | None = None) -> None:
        super().__init__(config, settings, pool)
        engine_mode(config)  # a typo in the config fails at start-up, not at the first request

    def open(self) -> VLLMModel:
        return VLLMModel(self.config, self.settings)  # vLLM starts its engine process here

    def missing(self) -> str | None:
        return None if vllm_installed() else "vLLM is not installed: pip install 'winnow[vllm]'"

    def _requests(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[PromptRequest]:
        return [PromptRequest(p, params.max_tokens, params.n, params.stop) for p in prompts]

    async def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[GenerationResult]:
        if params.logprobs is not None or params.prompt_logprobs is not None:  # not mapped back yet
            raise UnsupportedParameter("logprobs", self.config.id, "the vllm provider returns no logprobs yet")
        if params.guide is not None:  # not mapped to vLLM's guided decoding yet
            raise UnsupportedParameter(params.guide.param, self.config.id, "the vllm provider enforces no grammar yet")
        model = await self._model()
        requests = await model.prompts.pre_encode(self._requests(prompts, params))
        if model.mode == "llm":
            jobs = [_Job(request, params, params.prompt_seed(i)) for i, request in enumerate(requests)]
            results: list[GenerationResult] = await model.engine.submit(jobs, params)
            return results
        if len(requests) <= _INLINE_PROMPTS:
            prepared = model.prompts.prepare_all(requests)
        else:
            prepared = await asyncio.to_thread(model.prompts.prepare_all, requests)
        return await model.generate_async(prepared, params)

    async def stream(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[StreamDelta]:
        if params.guide is not None:
            raise UnsupportedParameter(params.guide.param, self.config.id, "the vllm provider enforces no grammar yet")
        model = await self._model()
        if model.mode == "llm":
            async for delta in super().stream(prompt, params):
                yield delta
            return
        item = await model.prompts.prepare_async(PromptRequest(prompt, params.max_tokens, 1, params.stop))
        sp = sampling_params(params, item, params.seed, delta=True)
        outputs = model.async_engine.generate(
            {"prompt_token_ids": item.input_ids}, sp, uuid.uuid4().hex, lora_request=model.lora
        )
        tokens, finish = 0, "length"
        try:
            async for output in outputs:
                piece = output.outputs[0]
                tokens += len(piece.token_ids)
                if piece.finish_reason is not None:
                    finish = "length" if piece.finish_reason == "length" else "stop"
                if piece.text:
                    yield StreamDelta(piece.text)
        except WinnowError:
            raise
        except Exception as exc:
            model.raise_if_dead(exc)
            raise InvalidRequest("vLLM refused the prompt", str(exc)) from exc
        finally:
            await outputs.aclose()  # aborts the vLLM request when the client went away
        yield StreamDelta("", finish, len(item.input_ids), tokens)  # type: ignore[arg-type]

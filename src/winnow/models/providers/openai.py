"""Commercial and remote models through the official ``openai`` SDK: OpenAI itself or any
OpenAI-compatible server (vLLM, Ollama, llama.cpp server, another Winnow).

One pooled ``AsyncOpenAI`` client per model for generation; the SDK retries 408/409/429/5xx and
connection errors with exponential backoff (``max_retries``) inside ``timeout_s``. ``/v1``
requests are forwarded without the SDK, over a raw pooled session with the same retries
(``passthrough.UpstreamHTTP``). What still fails becomes a 502/504 ``ErrorResponse`` (or a
per-item error inside a batch).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import openai

from winnow.config import ModelConfig, Settings
from winnow.errors import UpstreamError, UpstreamTimeout, WinnowError
from winnow.models.base import (
    Completion,
    FinishReason,
    GenerationResult,
    Prompt,
    Provider,
    SamplingParams,
    StreamDelta,
)
from winnow.models.pool import ModelPool
from winnow.models.providers.passthrough import UpstreamHTTP, status_error

_PROBE_TIMEOUT_S = 3.0


def upstream_error(exc: Exception, model_id: str) -> WinnowError:
    """Map an ``openai`` SDK exception to Winnow's error tree."""
    if isinstance(exc, openai.APITimeoutError):
        return UpstreamTimeout(f"Upstream for {model_id!r} timed out", str(exc))
    if isinstance(exc, openai.APIConnectionError):
        return UpstreamError(f"Upstream for {model_id!r} is unreachable", str(exc))
    if isinstance(exc, openai.APIStatusError):  # the upstream's own wait, when it names one
        return status_error(model_id, exc.status_code, exc.message, exc.response.headers.get("retry-after"))
    return UpstreamError(f"Upstream for {model_id!r} failed", f"{type(exc).__name__}: {exc}")


def _finish(reason: str | None) -> FinishReason:
    return "length" if reason == "length" else "stop"


class OpenAIProvider(Provider):
    """``provider: openai`` — chat completions against ``base_url`` (default: api.openai.com)."""

    name = "openai"

    def __init__(self, config: ModelConfig, settings: Settings, pool: ModelPool | None = None) -> None:
        super().__init__(config, settings, pool)
        api_key = None
        if config.api_key_env:
            api_key = os.environ.get(config.api_key_env)
        elif settings.openai_api_key is not None:
            api_key = settings.openai_api_key.get_secret_value()
        self.client = openai.AsyncOpenAI(
            base_url=config.base_url,
            api_key=api_key or "not-set",
            timeout=config.timeout_s,
            max_retries=config.max_retries,
        )
        self.upstream_model = config.upstream_model or config.id
        # /v1 forwarding: raw JSON over a pooled keep-alive session (``forward``, ``forward_stream``).
        self.http = UpstreamHTTP(
            config.id, self.upstream_model, config.base_url, api_key or "not-set", config.timeout_s, config.max_retries
        )
        self.use_completions = config.options.get("api") == "completions"
        self._probe: tuple[float, bool] | None = None

    def _request(self, prompt: Prompt, params: SamplingParams) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": self.upstream_model,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.n != 1:
            request["n"] = params.n
        if params.stop:
            request["stop"] = list(params.stop)
        if params.seed is not None:
            request["seed"] = params.seed
        if self.use_completions:
            request["prompt"] = prompt if isinstance(prompt, str) else "\n".join(m.content for m in prompt)
        elif isinstance(prompt, str):
            request["messages"] = [{"role": "user", "content": prompt}]
        else:
            request["messages"] = [{"role": m.role, "content": m.content} for m in prompt]
        return request

    async def _one(self, prompt: Prompt, params: SamplingParams) -> GenerationResult:
        request = self._request(prompt, params)
        started = time.perf_counter()
        try:
            if self.use_completions:
                response: Any = await self.client.completions.create(**request)
                texts = [(c.text, c.finish_reason) for c in response.choices]
            else:
                response = await self.client.chat.completions.create(**request)
                texts = [(c.message.content or "", c.finish_reason) for c in response.choices]
        except openai.OpenAIError as exc:
            self._probe = (time.monotonic(), not isinstance(exc, openai.APIConnectionError))
            return GenerationResult(error=upstream_error(exc, self.config.id))
        self._probe = (time.monotonic(), True)
        usage = response.usage
        output_total = usage.completion_tokens if usage else 0
        per_choice = output_total // max(len(texts), 1)
        completions = [Completion(text, _finish(reason), per_choice) for text, reason in texts]
        if completions:  # keep the upstream's total exact
            completions[0].output_tokens += output_total - per_choice * len(completions)
        return GenerationResult(
            completions,
            input_tokens=usage.prompt_tokens if usage else 0,
            latency_ms=(time.perf_counter() - started) * 1000,
        )

    async def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[GenerationResult]:
        return list(await asyncio.gather(*(self._one(p, params) for p in prompts)))

    async def stream(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[StreamDelta]:
        request = self._request(prompt, params)
        request.pop("n", None)
        try:
            if self.use_completions:
                chunks: Any = await self.client.completions.create(
                    **request, stream=True, stream_options={"include_usage": True}
                )
            else:
                chunks = await self.client.chat.completions.create(
                    **request, stream=True, stream_options={"include_usage": True}
                )
            finish: FinishReason | None = None
            async for chunk in chunks:
                for choice in chunk.choices:
                    text = choice.text if self.use_completions else (choice.delta.content or "")
                    if choice.finish_reason:
                        finish = _finish(choice.finish_reason)
                    if text:
                        yield StreamDelta(text)
                if chunk.usage:
                    yield StreamDelta("", finish or "stop", chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                    return
            yield StreamDelta("", finish or "stop")
        except openai.OpenAIError as exc:
            raise upstream_error(exc, self.config.id) from exc

    async def available(self) -> bool:
        """The upstream answered a cheap ``GET /models`` within the probe TTL."""
        now = time.monotonic()
        if self._probe and now - self._probe[0] < self.settings.model_probe_ttl_s:
            return self._probe[1]
        try:
            await self.client.with_options(timeout=_PROBE_TIMEOUT_S, max_retries=0).models.list()
            ok = True
        except openai.APIStatusError as exc:
            ok = exc.status_code not in (401, 403) and exc.status_code < 500
        except openai.OpenAIError:
            ok = False
        self._probe = (time.monotonic(), ok)
        return ok

    async def close(self) -> None:
        await self.client.close()
        await self.http.close()

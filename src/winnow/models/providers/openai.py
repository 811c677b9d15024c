"""Commercial and remote models through the official ``openai`` SDK: OpenAI itself or any
OpenAI-compatible server (vLLM, Ollama, llama.cpp server, another Winnow).

A model has one deployment or several, each with a pooled ``AsyncOpenAI`` client for generation
and a raw pooled session for ``/v1`` forwarding (``passthrough.UpstreamHTTP``); neither retries on
its own: the model's ``Router`` picks the deployment, retries, fails over, cools down and falls
back (``winnow.models.router``). What still fails becomes a 4xx/5xx ``ErrorResponse`` (or a
per-item error inside a batch). Both clients bound a call by ``timeout_s`` as a whole and an
answer by ``max_upstream_response_bytes``; a base_url's userinfo is sent as HTTP basic auth and
never shown (the deployment's id and URL are without it).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx2
import openai

from winnow.config import DeploymentConfig, ModelConfig, Settings
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
from winnow.models.cache import ResponseCache
from winnow.models.pool import ModelPool
from winnow.models.providers.passthrough import (
    UpstreamFailure,
    UpstreamHTTP,
    authorization,
    idle_bounded,
    prepend,
    retry_after_s,
    retryable_status,
    status_error,
    timed_out,
    too_large,
)
from winnow.models.router import Deployment, Router, deployment_id
from winnow.redact import redact, remember, split_userinfo

_PROBE_TIMEOUT_S = 3.0


def upstream_error(exc: Exception, model_id: str) -> WinnowError:
    """Map an ``openai`` SDK exception to Winnow's error tree."""
    if isinstance(exc, openai.APITimeoutError):
        return UpstreamTimeout(f"Upstream for {model_id!r} timed out", str(exc))
    if isinstance(exc, openai.APIConnectionError):
        return UpstreamError(f"Upstream for {model_id!r} is unreachable", redact(str(exc)))
    if isinstance(exc, openai.APIStatusError):  # the upstream's own wait, when it names one
        return status_error(model_id, exc.status_code, exc.message, exc.response.headers.get("retry-after"))
    return UpstreamError(f"Upstream for {model_id!r} failed", redact(f"{type(exc).__name__}: {exc}"))


class ResponseTooLarge(Exception):
    """An upstream answer past ``max_upstream_response_bytes``, raised while the SDK reads it."""


class _CappedStream(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, max_bytes: int) -> None:
        self.inner, self.max_bytes = inner, max_bytes

    async def __aiter__(self) -> AsyncIterator[bytes]:
        left = self.max_bytes
        async for piece in self.inner:
            left -= len(piece)
            if left < 0:
                raise ResponseTooLarge(self.max_bytes)
            yield piece

    async def aclose(self) -> None:
        await self.inner.aclose()


class CappedTransport(httpx2.AsyncHTTPTransport):
    """The SDK's transport, with each response's body cut off past ``max_bytes`` (read in pieces,
    never held whole beyond it)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(limits=openai.DEFAULT_CONNECTION_LIMITS)
        self.max_bytes = max_bytes

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await super().handle_async_request(request)
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        response.stream = _CappedStream(response.stream, self.max_bytes)
        return response


def _too_large_in(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ResponseTooLarge):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def sdk_failure(exc: Exception, deployment: Deployment) -> UpstreamFailure:
    """Any exception of an SDK call as the router's ``UpstreamFailure`` (never a 500)."""
    model_id = deployment.model_id
    if _too_large_in(exc):
        return UpstreamFailure(too_large(model_id, deployment.http.max_bytes), retryable=True)
    if isinstance(exc, TimeoutError):
        return UpstreamFailure(timed_out(model_id, deployment.timeout_s), retryable=True)
    error = upstream_error(exc, model_id)
    if isinstance(exc, openai.APIStatusError):
        headers = exc.response.headers
        retryable = retryable_status(exc.status_code, headers)
        code = exc.code if isinstance(exc.code, str) else None
        return UpstreamFailure(error, exc.status_code, retry_after_s(headers), retryable=retryable, code=code)
    connect = isinstance(exc, openai.APIConnectionError) and not isinstance(exc, openai.APITimeoutError)
    return UpstreamFailure(error, retryable=True, connect=connect)


def _api_key(env: str | None, settings: Settings) -> str:
    if env:
        return os.environ.get(env) or "not-set"
    return settings.openai_api_key.get_secret_value() if settings.openai_api_key is not None else "not-set"


def _deployments(config: ModelConfig, settings: Settings) -> list[Deployment]:
    """The model's deployments as configured; none listed: its own base_url is the one. A
    base_url's userinfo becomes HTTP basic auth; the URL kept, shown and logged is without it."""
    deployments: list[Deployment] = []
    max_bytes = settings.max_upstream_response_bytes
    for spec in config.deployments or [DeploymentConfig()]:
        configured = spec.base_url or config.base_url
        base_url, basic = split_userinfo(configured) if configured else (None, None)
        api_key = _api_key(spec.api_key_env or config.api_key_env, settings)
        remember(api_key)
        remember(basic and basic[1])
        upstream_model = spec.upstream_model or config.upstream_model or config.id
        timeout_s = spec.timeout_s or config.timeout_s
        sdk = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=api_key,
            timeout=timeout_s,
            max_retries=0,
            default_headers={"Authorization": authorization(api_key, basic)} if basic else None,
            http_client=openai.DefaultAsyncHttpxClient(transport=CappedTransport(max_bytes)),
        )
        deployments.append(
            Deployment(
                id=spec.id or deployment_id(base_url, {d.id for d in deployments}),
                model_id=config.id,
                upstream_model=upstream_model,
                http=UpstreamHTTP(
                    config.id, upstream_model, base_url, api_key, timeout_s, basic=basic, max_bytes=max_bytes
                ),
                sdk=sdk,
                weight=spec.weight,
                rpm=spec.rpm,
                tpm=spec.tpm,
                timeout_s=timeout_s,
            )
        )
    return deployments


def _finish(reason: str | None) -> FinishReason:
    return "length" if reason == "length" else "stop"


class OpenAIProvider(Provider):
    """``provider: openai`` — chat completions against ``base_url`` (default: api.openai.com)."""

    name = "openai"

    def __init__(self, config: ModelConfig, settings: Settings, pool: ModelPool | None = None) -> None:
        super().__init__(config, settings, pool)
        self.router = Router(config, _deployments(config, settings))
        self.cache = ResponseCache(config.cache, settings.redis_url, config.id) if config.cache else None
        self.use_completions = config.options.get("api") == "completions"
        self._probe: tuple[float, bool] | None = None

    def _request(self, prompt: Prompt, params: SamplingParams) -> dict[str, Any]:
        request: dict[str, Any] = {
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
        if params.guide is not None:
            request |= params.guide.upstream_fields()
        if self.use_completions:
            request["prompt"] = prompt if isinstance(prompt, str) else "\n".join(m.content for m in prompt)
        elif isinstance(prompt, str):
            request["messages"] = [{"role": "user", "content": prompt}]
        else:
            request["messages"] = [{"role": m.role, "content": m.content} for m in prompt]
        return request

    async def _create(self, deployment: Deployment, request: dict[str, Any], **stream: Any) -> Any:
        """One call of one deployment through the SDK, within its ``timeout_s`` (a stream: to its
        first chunk, then each chunk within it of the last); a failure raises ``UpstreamFailure``."""
        resource: Any = deployment.sdk.completions if self.use_completions else deployment.sdk.chat.completions
        try:
            async with asyncio.timeout(deployment.timeout_s):
                answer = await resource.create(**request, model=deployment.upstream_model, **stream)
                if not stream:
                    return answer
                chunks = idle_bounded(
                    aiter(answer), deployment.timeout_s, lambda: timed_out(deployment.model_id, deployment.timeout_s)
                )
                try:
                    first = await anext(chunks)
                except StopAsyncIteration:
                    return chunks
                return prepend(first, chunks)
        except Exception as exc:
            raise sdk_failure(exc, deployment) from exc

    async def _one(self, prompt: Prompt, params: SamplingParams) -> GenerationResult:
        request = self._request(prompt, params)
        started = time.perf_counter()
        try:
            routed = await self.router.call(lambda d: self._create(d, request))
        except WinnowError as exc:
            self._probe = (time.monotonic(), exc.status_code < 500)
            return GenerationResult(error=exc)
        self._probe = (time.monotonic(), True)
        response = routed.value
        if self.use_completions:
            texts = [(c.text, c.finish_reason) for c in response.choices]
        else:
            texts = [(c.message.content or "", c.finish_reason) for c in response.choices]
        usage = response.usage
        output_total = usage.completion_tokens if usage else 0
        routed.deployment.count_tokens(usage.total_tokens if usage else 0)
        per_choice = output_total // max(len(texts), 1)
        completions = [Completion(text, _finish(reason), per_choice) for text, reason in texts]
        if completions:  # keep the upstream's total exact
            completions[0].output_tokens += output_total - per_choice * len(completions)
        return GenerationResult(
            completions,
            input_tokens=usage.prompt_tokens if usage else 0,
            latency_ms=(time.perf_counter() - started) * 1000,
            model=routed.deployment.model_id,
            deployment=routed.deployment.id,
            attempts=routed.attempts,
        )

    async def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[GenerationResult]:
        return list(await asyncio.gather(*(self._one(p, params) for p in prompts)))

    async def stream(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[StreamDelta]:
        request = self._request(prompt, params)
        request.pop("n", None)
        options = {"stream": True, "stream_options": {"include_usage": True}}
        routed = await self.router.call(lambda d: self._create(d, request, **options))
        try:
            finish: FinishReason | None = None
            async for chunk in routed.value:
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
        except WinnowError:
            raise
        except Exception as exc:  # after the first chunk: the SDK's, or its transport's (the size cap)
            raise sdk_failure(exc, routed.deployment).error from exc

    async def available(self) -> bool:
        """Some deployment answered a cheap ``GET /models`` within the probe TTL."""
        now = time.monotonic()
        if self._probe and now - self._probe[0] < self.settings.model_probe_ttl_s:
            return self._probe[1]
        ok = any(await asyncio.gather(*(_answers(d) for d in self.router.deployments)))
        self._probe = (time.monotonic(), ok)
        return ok

    async def close(self) -> None:
        for deployment in self.router.deployments:
            await deployment.sdk.close()
            await deployment.http.close()
        if self.cache is not None:
            await self.cache.close()


async def _answers(deployment: Deployment) -> bool:
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT_S):
            await deployment.sdk.with_options(timeout=_PROBE_TIMEOUT_S, max_retries=0).models.list()
    except openai.APIStatusError as exc:
        return exc.status_code not in (401, 403) and exc.status_code < 500
    except Exception:
        return False
    return True

"""Generation as the platform spec describes it (/generate, /generate/batch), over any provider.

The HTTP routes, the OpenAI-compatible surface and the CLI all call this one service, so that
later concerns (usage, cost, budgets, metrics) hook in at one place.
"""

from __future__ import annotations

import time

from winnow.ids import hex_id
from winnow.metrics import Metrics
from winnow.models.base import GenerationResult, Prompt, SamplingParams
from winnow.models.embedding import refuse_generation
from winnow.models.registry import ModelRegistry
from winnow.schemas.platform import (
    BatchGenerateRequest,
    BatchGenerateResponse,
    BatchMetrics,
    BatchResult,
    GenerateRequest,
    GenerateResponse,
    GenerationMetrics,
    GenerationParameters,
)
from winnow.usage import UsageService


def generation_id() -> str:
    return f"gen-{hex_id()}"


class GenerationService:
    def __init__(
        self, registry: ModelRegistry, metrics: Metrics | None = None, usage: UsageService | None = None
    ) -> None:
        self.registry = registry
        self.metrics = metrics
        self.usage = usage

    async def run(
        self,
        model_id: str,
        prompts: list[Prompt],
        params: SamplingParams,
        key_id: int | None = None,
        source: str = "api",
        request_id: str | None = None,
    ) -> tuple[list[GenerationResult], float]:
        """Results for ``prompts`` and the wall time in ms. Raises ModelNotFound / backend errors, and
        BudgetExceeded before any model call when ``key_id``'s budget is spent. Each result gets a
        generation id (``request_id`` when given) and one usage row."""
        provider = self.registry.provider(model_id)
        refuse_generation(self.registry.config(model_id))
        if self.usage is not None:
            self.usage.check(key_id, model_id, prompts)
        started = time.perf_counter()
        results = await provider.generate(prompts, params)
        elapsed = (time.perf_counter() - started) * 1000
        if self.metrics is not None:
            self.record_tokens(model_id, sum(r.input_tokens for r in results), sum(r.output_tokens for r in results))
        for prompt, result in zip(prompts, results, strict=True):
            result.generation_id = request_id or generation_id()
            if self.usage is not None and result.error is None:
                self.usage.record(
                    key_id,
                    result.model or model_id,
                    source,
                    result.input_tokens,
                    result.output_tokens,
                    result.latency_ms if result.latency_ms is not None else elapsed,
                    generation_id=result.generation_id,
                    prompt=prompt,
                    responses=[c.text for c in result.completions],
                    deployment=result.deployment,
                    attempts=result.attempts,
                )
        return results, elapsed

    def record_tokens(self, model_id: str, input_tokens: int, output_tokens: int) -> None:
        if self.metrics is not None:
            self.metrics.tokens.labels(model_id, "input").inc(input_tokens)
            self.metrics.tokens.labels(model_id, "output").inc(output_tokens)

    async def generate(
        self, request: GenerateRequest, key_id: int | None = None, messages: Prompt | None = None
    ) -> GenerateResponse:
        """``messages``: what the model is sent instead of the prompt's text (a registered prompt's chat)."""
        params = SamplingParams(request.max_tokens, request.temperature, request.top_p)
        sent = request.text() if messages is None else messages
        (result,), latency = await self.run(request.model_id, [sent], params, key_id)
        if result.error is not None:
            raise result.error
        completion = result.completions[0]
        return GenerateResponse(
            text=completion.text,
            model_id=request.model_id,
            prompt=request.text(),
            parameters=GenerationParameters(
                max_tokens=request.max_tokens, temperature=request.temperature, top_p=request.top_p
            ),
            metrics=GenerationMetrics(
                latency_ms=round(latency),
                input_tokens=result.input_tokens,
                output_tokens=completion.output_tokens,
                total_tokens=result.input_tokens + completion.output_tokens,
            ),
            metadata=self._metadata(request.model_id, result, 0),
        )

    async def generate_batch(self, request: BatchGenerateRequest, key_id: int | None = None) -> BatchGenerateResponse:
        params = SamplingParams(request.max_tokens, request.temperature, request.top_p)
        prompts: list[Prompt] = list(request.prompts)
        results, latency = await self.run(request.model_id, prompts, params, key_id)
        items: list[BatchResult] = []
        latencies: list[float] = []
        for index, (prompt, result) in enumerate(zip(request.prompts, results, strict=True)):
            if result.error is not None:
                message = getattr(result.error, "message", str(result.error))
                details = getattr(result.error, "details", None)
                items.append(
                    BatchResult(
                        index=index,
                        prompt=prompt,
                        success=False,
                        error=f"{message}: {details}" if details else message,
                    )
                )
                continue
            latencies.append(result.latency_ms if result.latency_ms is not None else latency)
            items.append(
                BatchResult(
                    index=index,
                    prompt=prompt,
                    text=result.completions[0].text,
                    success=True,
                    metadata=self._metadata(request.model_id, result, 0),
                )
            )
        ok = sum(item.success for item in items)
        return BatchGenerateResponse(
            results=items,
            model_id=request.model_id,
            parameters=GenerationParameters(
                max_tokens=request.max_tokens, temperature=request.temperature, top_p=request.top_p
            ),
            metrics=BatchMetrics(
                total_latency_ms=round(latency),
                successful_generations=ok,
                failed_generations=len(items) - ok,
                average_latency_ms=round(sum(latencies) / len(latencies)) if latencies else 0,
            ),
        )

    def _metadata(self, model_id: str, result: GenerationResult, choice: int) -> dict[str, object]:
        completion = result.completions[choice]
        config = self.registry.config(model_id)
        metadata: dict[str, object] = {
            "generation_id": result.generation_id or generation_id(),
            "finish_reason": completion.finish_reason,
            "provider": config.provider,
            "input_tokens": result.input_tokens,
            "output_tokens": completion.output_tokens,
        }
        if result.deployment is not None:  # a routed model: who answered, in how many calls
            metadata.update(model=result.model or model_id, deployment=result.deployment, attempts=result.attempts)
        return metadata

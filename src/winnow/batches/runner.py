"""Answering a batch: its lines, chunk by chunk, each through the same code as the live /v1 route
(``winnow.models.openai_bodies``, ``winnow.models.embedding_service``): a local model gets a chunk's
lines in one generate (or embed) call (as SDG does), an upstream model gets them through its router, ``batch_upstream_concurrency`` at a time.
Each chunk's answers are appended to the output (or error) file, then checkpointed with its usage
rows in one transaction: after a crash the files are cut back to the checkpoint and the chunk is
answered again, so every ``custom_id`` is answered once and billed once."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from winnow.errors import WinnowError
from winnow.finetune.data import file_lines
from winnow.ids import hex_id
from winnow.models.base import Completion, GenerationResult, Prompt, SamplingParams
from winnow.models.embedding import Embedded, EmbedInput
from winnow.models.embedding_service import embedding_answer, input_texts, local_embedder
from winnow.models.openai_bodies import chat_request, chat_response, completion_request, completion_response
from winnow.models.providers.openai import OpenAIProvider
from winnow.models.registry import ModelRegistry
from winnow.schemas.openai import ChatCompletionRequest, CompletionRequest
from winnow.schemas.openai_embeddings import EmbeddingRequest
from winnow.usage.recorder import UsageEvent
from winnow.usage.service import UsageMeter


@dataclass
class Line:
    """One request of the batch and, once answered, its status code and body."""

    custom_id: str
    url: str
    body: dict[str, Any]
    status: int = 0
    answer: dict[str, Any] = field(default_factory=dict)

    def answered(self, status: int, body: dict[str, Any]) -> None:
        self.status, self.answer = status, body

    def record(self) -> bytes:
        """The line in OpenAI's batch output format."""
        response = {"status_code": self.status, "request_id": f"req_{hex_id()}", "body": self.answer}
        return orjson.dumps(
            {"id": f"batch_req_{hex_id()}", "custom_id": self.custom_id, "response": response, "error": None}
        )


def expired_record(line: Line) -> bytes:
    """A line the completion window ended before it was answered, as OpenAI's error file has it."""
    error = {
        "code": "batch_expired",
        "message": "This request could not be executed before the completion window expired.",
    }
    return orjson.dumps({"id": f"batch_req_{hex_id()}", "custom_id": line.custom_id, "response": None, "error": error})


def error_body(exc: WinnowError) -> dict[str, Any]:
    """OpenAI's error object for a line that failed (as the live route's error body reads)."""
    message = f"{exc.message}: {exc.details}" if exc.details else exc.message
    kind = "server_error" if exc.status_code >= 500 else "invalid_request_error"
    return {"error": {"message": message, "type": kind, "param": exc.param, "code": exc.openai_code or exc.code}}


def read_lines(path: Path, skip: int, max_line_bytes: int) -> Iterator[Line]:
    """The batch's requests after the first ``skip`` (the file was checked at create)."""
    for _, data in islice(file_lines(path, max_line_bytes), skip, None):
        assert isinstance(data, dict)
        yield Line(data["custom_id"], data["url"], data["body"])


class Meters:
    """One usage meter per model a batch calls (rows held until the chunk's checkpoint)."""

    def __init__(self, make: Any) -> None:
        self.make = make
        self.by_model: dict[str, UsageMeter] = {}

    def __call__(self, model: str) -> UsageMeter:
        if model not in self.by_model:
            self.by_model[model] = self.make(model)
        return self.by_model[model]

    def close(self) -> None:
        for meter in self.by_model.values():
            meter.close()


class ChunkAnswerer:
    """Answers one chunk of lines; returns the usage rows to write with its checkpoint."""

    def __init__(self, models: ModelRegistry, meters: Meters, concurrency: int) -> None:
        self.models, self.meters = models, meters
        self.gate = asyncio.Semaphore(concurrency)

    async def answer(self, lines: Sequence[Line]) -> list[UsageEvent]:
        usage: list[UsageEvent] = []
        local: dict[tuple[str, str, str], list[tuple[Line, Any, list[Prompt], SamplingParams]]] = {}
        embeds: dict[str, list[tuple[Line, EmbeddingRequest, list[EmbedInput]]]] = {}
        upstream: list[Line] = []
        for line in lines:
            try:
                provider = self.models.provider(str(line.body["model"]))
                if isinstance(provider, OpenAIProvider):
                    upstream.append(line)
                    continue
                if line.url == "/v1/embeddings":
                    embedding = EmbeddingRequest.model_validate(line.body)
                    local_embedder(self.models, embedding)  # a 400 for a model that does not embed
                    embeds.setdefault(embedding.model, []).append((line, embedding, embedding.inputs()))
                    continue
                request, prompts, params = _prepare(line)
            except WinnowError as exc:
                line.answered(exc.status_code, error_body(exc))
                continue
            local.setdefault((request.model, line.url, repr(params)), []).append((line, request, prompts, params))
        calls = [self._local(group) for group in local.values()] + [self._upstream(line) for line in upstream]
        calls += [self._embed(group) for group in embeds.values()]
        for events in await asyncio.gather(*calls):
            usage.extend(events)
        return usage

    async def _local(self, group: list[tuple[Line, Any, list[Prompt], SamplingParams]]) -> list[UsageEvent]:
        """Lines for one local model with the same parameters: all their prompts in one generate call."""
        model, params = group[0][1].model, group[0][3]
        prompts = [p for _, _, line_prompts, _ in group for p in line_prompts]
        meter = self.meters(model)
        meter.check(prompts)  # BudgetExceeded: the job pauses, this chunk unanswered
        started = time.perf_counter()
        try:
            results = await self.models.provider(model).generate(prompts, params)
        except WinnowError as exc:  # the whole call (a model that cannot load): each line says so
            for line, *_ in group:
                line.answered(exc.status_code, error_body(exc))
            return []
        events = meter.record(prompts, results, (time.perf_counter() - started) * 1000)
        at = 0
        for line, request, line_prompts, _ in group:
            mine, at = results[at : at + len(line_prompts)], at + len(line_prompts)
            failed = next((r.error for r in mine if r.error is not None), None)
            if failed is not None:
                error = failed if isinstance(failed, WinnowError) else WinnowError(str(failed))
                line.answered(error.status_code, error_body(error))
            elif isinstance(request, ChatCompletionRequest):
                line.answered(200, chat_response(f"chatcmpl-{hex_id()}", model, mine[0], request.tool_use()))
            else:
                line.answered(200, completion_response(f"cmpl-{hex_id()}", request, line_prompts, mine, params))
        return events

    async def _embed(self, group: list[tuple[Line, EmbeddingRequest, list[EmbedInput]]]) -> list[UsageEvent]:
        """Embedding lines for one local model: all their inputs in one embed call, each line's
        answer made as the live route makes it (a call refused for one line's input: each line alone)."""
        embedder, options = local_embedder(self.models, group[0][1])
        meter = self.meters(group[0][1].model)
        meter.check([text for _, _, inputs in group for text in input_texts(inputs)])
        started = time.perf_counter()
        try:
            embedded = await embedder.embed([x for _, _, inputs in group for x in inputs])
        except WinnowError as exc:
            if len(group) > 1 and exc.status_code < 500:
                return [event for item in group for event in await self._embed([item])]
            for line, *_ in group:
                line.answered(exc.status_code, error_body(exc))
            return []
        billed: list[dict[str, Any]] = []
        results: list[GenerationResult] = []
        at = 0
        for line, request, inputs in group:
            part = Embedded(embedded.vectors[at : at + len(inputs)], embedded.tokens[at : at + len(inputs)])
            at += len(inputs)
            try:
                line.answered(200, embedding_answer(request, options, part))
            except WinnowError as exc:
                line.answered(exc.status_code, error_body(exc))
                continue
            billed.append(line.body)
            results.append(GenerationResult([], sum(part.tokens)))
        return meter.record(billed, results, (time.perf_counter() - started) * 1000)

    async def _upstream(self, line: Line) -> list[UsageEvent]:
        """A line for an upstream model, forwarded as written through the model's router."""
        model = str(line.body["model"])
        provider = self.models.provider(model)
        assert isinstance(provider, OpenAIProvider)
        path = line.url.removeprefix("/v1")
        meter = self.meters(model)
        async with self.gate:
            meter.check([line.body.get("messages") or line.body.get("prompt") or line.body.get("input")])
            started = time.perf_counter()
            try:
                routed = await provider.router.call(lambda d: d.http.forward(path, line.body))
            except WinnowError as exc:
                line.answered(exc.status_code, {"error": exc.upstream} if exc.upstream else error_body(exc))
                return []
        answer: dict[str, Any] = routed.value
        line.answered(200, answer)
        tokens = answer.get("usage") or {}
        completion = Completion("", "stop", int(tokens.get("completion_tokens") or 0))
        result = GenerationResult([completion], int(tokens.get("prompt_tokens") or 0))
        return meter.record([line.body], [result], (time.perf_counter() - started) * 1000)


def _prepare(line: Line) -> tuple[Any, list[Prompt], SamplingParams]:
    """A local line's request, prompts and parameters, as the live route makes them."""
    if line.url == "/v1/chat/completions":
        chat = ChatCompletionRequest.model_validate(line.body)
        prompt, params, _ = chat_request(chat)
        return chat, [prompt], params
    completion = CompletionRequest.model_validate(line.body)
    prompts, params = completion_request(completion)
    return completion, prompts, params


def append(handle: BinaryIO, records: list[bytes]) -> int:
    """Append records (one a line) durably; the file's new size."""
    if records:
        handle.write(b"".join(record + b"\n" for record in records))
        handle.flush()
        os.fsync(handle.fileno())
    return handle.tell()


def cut_to(path: Path, size: int) -> BinaryIO:
    """``path`` opened for appending, cut back to ``size`` bytes (what the last checkpoint saw)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("ab")
    handle.truncate(size)
    handle.seek(size)
    return handle

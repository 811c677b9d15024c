"""The local side of /v1/chat/completions and /v1/completions, outside the HTTP layer: a request
body to its prompts and sampling parameters, and a model's results to OpenAI's response body. The
live routes (``winnow.api.routes.openai``) and batches (``winnow.batches``) both answer through
these, so a batch line is answered exactly as the route would answer it."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any

from winnow.errors import InvalidRequest
from winnow.models.base import ChatMessage, GenerationResult, Prompt, SamplingParams, ToolChat
from winnow.schemas.openai import (
    ChatCompletionRequest,
    CompletionRequest,
    chat_logprobs,
    completion_logprobs,
    usage,
)
from winnow.schemas.tool_calls import ToolUse, chat_message, with_tools

# With no max_tokens, a local model may generate up to the rest of its context (as vLLM does).
_UNBOUNDED = 1 << 30


def prompt_of(body: ChatCompletionRequest | CompletionRequest) -> list[ChatMessage] | str:
    """What the request bills and stores as its prompt."""
    if isinstance(body, ChatCompletionRequest):
        return [
            ChatMessage("system" if m.role == "developer" else m.role, m.text(), *m.tool_fields())
            for m in body.messages
        ]
    return "\n".join(p if p.token_ids is None else " ".join(map(str, p.token_ids)) for p in body.prompts())


def sampling_params(
    body: ChatCompletionRequest | CompletionRequest,
    max_tokens: int | None,
    logprobs: int | None = None,
    prompt_logprobs: int | None = None,
) -> SamplingParams:
    params = SamplingParams(
        max_tokens=max_tokens or _UNBOUNDED,
        temperature=body.temperature,
        top_p=body.top_p,
        n=body.n,
        stop=body.stop_list(),
        seed=body.seed,
        top_k=max(body.top_k or 0, 0),
        min_p=body.min_p or 0.0,
        repetition_penalty=body.repetition_penalty or 1.0,
        presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0,
        min_tokens=body.min_tokens or 0,
        ignore_eos=bool(body.ignore_eos),
        stop_token_ids=tuple(body.stop_token_ids or ()),
        logit_bias=body.bias(),
        logprobs=logprobs,
        prompt_logprobs=prompt_logprobs,
        guide=body.guide(),
    )
    if params.min_tokens > params.max_tokens:
        raise InvalidRequest(
            "min_tokens must not exceed max_tokens", f"{params.min_tokens} > {params.max_tokens}", param="min_tokens"
        )
    return params


def chat_request(body: ChatCompletionRequest) -> tuple[Prompt, SamplingParams, ToolUse | None]:
    """A local chat completion's prompt, parameters and tools (InvalidRequest for what the model
    cannot honour). With tools, the prompt renders them and a ``tool_choice`` that asks for a call
    is enforced by a grammar."""
    body.refuse_unsupported()
    tools = body.tool_use()
    messages = prompt_of(body)
    assert not isinstance(messages, str)  # a chat's prompt is its messages
    prompt: Prompt = messages
    params = sampling_params(body, body.max_completion_tokens or body.max_tokens, body.logprobs_wanted())
    if tools is not None:
        prompt = ToolChat(messages, json.dumps(tools.tools))
        params = replace(params, guide=with_tools(params.guide, tools))
    return prompt, params, tools


def completion_request(body: CompletionRequest) -> tuple[list[Prompt], SamplingParams]:
    """A local text completion's prompts (as written: no chat template) and parameters."""
    body.refuse_unsupported()
    prompts: list[Prompt] = list(body.prompts())
    # echo: the prompt's tokens (and their log-probabilities, with logprobs) come back before each choice
    echo = None if not body.echo else (body.logprobs or 0)
    return prompts, sampling_params(body, body.max_tokens or 16, body.logprobs, echo)  # 16: OpenAI's default


def chat_response(ident: str, model: str, result: GenerationResult, tools: ToolUse | None = None) -> dict[str, Any]:
    """A chat.completion body for one prompt's result (which has no error); with tools, each
    choice's tool calls are read from its text."""
    choices: list[dict[str, Any]] = []
    for i, completion in enumerate(result.completions):
        message, finish = chat_message(completion.text, completion.finish_reason, tools)
        choices.append(
            {"index": i, "message": message, "logprobs": chat_logprobs(completion.logprobs), "finish_reason": finish}
        )
    return {
        "id": ident,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage(result.input_tokens, result.output_tokens),
    }


def completion_response(
    ident: str,
    body: CompletionRequest,
    prompts: list[Prompt],
    results: list[GenerationResult],
    params: SamplingParams,
) -> dict[str, Any]:
    """A text_completion body for the prompts' results (none of which has an error)."""
    choices: list[dict[str, Any]] = []
    prompt_tokens = completion_tokens = 0
    for prompt, result in zip(prompts, results, strict=True):
        prompt_tokens += result.input_tokens
        completion_tokens += result.output_tokens
        echoed = result.prompt_logprobs or []
        # the prompt as written (token ids: their texts)
        prefix = "" if not body.echo else (str(prompt) or "".join(t.token for t in echoed))
        for c in result.completions:
            logprobs = None if params.logprobs is None else completion_logprobs([*echoed, *(c.logprobs or [])])
            choices.append(
                {"index": len(choices), "text": prefix + c.text, "logprobs": logprobs, "finish_reason": c.finish_reason}
            )
    return {
        "id": ident,
        "object": "text_completion",
        "created": int(time.time()),
        "model": body.model,
        "choices": choices,
        "usage": usage(prompt_tokens, completion_tokens),
    }

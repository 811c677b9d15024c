"""The local side of /v1/chat/completions and /v1/completions, outside the HTTP layer: a request
body to its prompts and sampling parameters, and a model's results to OpenAI's response body. The
live routes (``winnow.api.routes.openai``) and batches (``winnow.batches``) both answer through
these, so a batch line is answered exactly as the route would answer it."""

from __future__ import annotations

import time
from typing import Any

from winnow.errors import InvalidRequest
from winnow.models.base import ChatMessage, GenerationResult, Prompt, SamplingParams
from winnow.schemas.openai import (
    ChatCompletionRequest,
    CompletionRequest,
    chat_logprobs,
    completion_logprobs,
    usage,
)

# With no max_tokens, a local model may generate up to the rest of its context (as vLLM does).
_UNBOUNDED = 1 << 30


def prompt_of(body: ChatCompletionRequest | CompletionRequest) -> list[ChatMessage] | str:
    """What the request bills and stores as its prompt."""
    if isinstance(body, ChatCompletionRequest):
        return [ChatMessage("system" if m.role == "developer" else m.role, m.text()) for m in body.messages]
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
    )
    if params.min_tokens > params.max_tokens:
        raise InvalidRequest(
            "min_tokens must not exceed max_tokens", f"{params.min_tokens} > {params.max_tokens}", param="min_tokens"
        )
    return params


def chat_request(body: ChatCompletionRequest) -> tuple[list[ChatMessage], SamplingParams]:
    """A local chat completion's prompt and parameters (InvalidRequest for what the model cannot honour)."""
    body.refuse_unsupported()
    prompt = prompt_of(body)
    assert not isinstance(prompt, str)  # a chat's prompt is its messages
    return prompt, sampling_params(body, body.max_completion_tokens or body.max_tokens, body.logprobs_wanted())


def completion_request(body: CompletionRequest) -> tuple[list[Prompt], SamplingParams]:
    """A local text completion's prompts (as written: no chat template) and parameters."""
    body.refuse_unsupported()
    prompts: list[Prompt] = list(body.prompts())
    # echo: the prompt's tokens (and their log-probabilities, with logprobs) come back before each choice
    echo = None if not body.echo else (body.logprobs or 0)
    return prompts, sampling_params(body, body.max_tokens or 16, body.logprobs, echo)  # 16: OpenAI's default


def chat_response(ident: str, model: str, result: GenerationResult) -> dict[str, Any]:
    """A chat.completion body for one prompt's result (which has no error)."""
    return {
        "id": ident,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": c.text, "refusal": None},
                "logprobs": chat_logprobs(c.logprobs),
                "finish_reason": c.finish_reason,
            }
            for i, c in enumerate(result.completions)
        ],
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

"""A registered prompt used by a generation request: ``/api/v1/generate``'s ``prompt`` object and
``/v1``'s ``prompt_ref``. The version is rendered with the request's variables; its system message
applies unless the request has its own, and its sampling parameters unless the request set them."""

from __future__ import annotations

from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool

from winnow.errors import InvalidRequest
from winnow.models.base import Prompt
from winnow.prompts.render import RenderedPrompt
from winnow.prompts.service import PromptRegistry
from winnow.schemas.openai import ChatCompletionRequest, CompletionRequest
from winnow.schemas.platform import MAX_PROMPT_CHARS, GenerateRequest
from winnow.schemas.prompts import PromptRef

OpenAIRequest = TypeVar("OpenAIRequest", ChatCompletionRequest, CompletionRequest)
_SYSTEM_ROLES = ("system", "developer")


async def render(registry: PromptRegistry, key_id: int, ref: PromptRef) -> RenderedPrompt:
    return await run_in_threadpool(registry.resolve, key_id, ref)


async def for_generate(
    registry: PromptRegistry, key_id: int, body: GenerateRequest
) -> tuple[GenerateRequest, Prompt, RenderedPrompt]:
    """``body`` with its prompt reference rendered: the request (prompt text, sampling filled in),
    what the model is sent (the chat, when the version has a system message) and the rendering."""
    assert isinstance(body.prompt, PromptRef)
    rendered = await render(registry, key_id, body.prompt)
    if len(rendered.text) > MAX_PROMPT_CHARS:
        raise InvalidRequest(
            "The rendered prompt is too long",
            f"{len(rendered.text)} characters; /generate takes at most {MAX_PROMPT_CHARS}",
            param="prompt",
        )
    chosen = body.model_fields_set
    params = rendered.params
    update: dict[str, Any] = {"prompt": rendered.text}
    for name in ("max_tokens", "temperature", "top_p"):
        value = getattr(params, name)
        if name not in chosen and value is not None:
            update[name] = value
    request = body.model_copy(update=update)
    sent: Prompt = rendered.messages() if rendered.system else rendered.text
    return request, sent, rendered


def _flat(sent: dict[str, Any]) -> dict[str, Any]:
    """The body with an ``extra_body`` object's fields at the top level (as the schema reads it)."""
    extra = sent.get("extra_body")
    if not isinstance(extra, dict):
        return dict(sent)
    return {**extra, **{k: v for k, v in sent.items() if k != "extra_body"}}


async def for_openai(
    registry: PromptRegistry, key_id: int, body: OpenAIRequest, sent: dict[str, Any]
) -> tuple[OpenAIRequest, dict[str, Any]]:
    """``body`` (and the body as sent, which an upstream model is forwarded) with ``prompt_ref``
    rendered into its messages (chat) or its prompt (completions), and taken out."""
    assert body.prompt_ref is not None
    rendered = await render(registry, key_id, body.prompt_ref)
    out = _flat(sent)
    out.pop("prompt_ref", None)
    if isinstance(body, ChatCompletionRequest):
        given: list[Any] = list(out.get("messages") or [])
        own_system: list[Any] = [m for m in given if isinstance(m, dict) and m.get("role") in _SYSTEM_ROLES]
        rest: list[Any] = [m for m in given if m not in own_system]
        head: list[Any] = own_system or ([{"role": "system", "content": rendered.system}] if rendered.system else [])
        out["messages"] = [*head, {"role": "user", "content": rendered.text}, *rest]
        limits = ("max_tokens", "max_completion_tokens")
    else:
        out["prompt"] = rendered.raw()
        limits = ("max_tokens",)
    params = rendered.params
    if params.max_tokens is not None and not any(out.get(name) is not None for name in limits):
        out["max_tokens"] = params.max_tokens
    for name in ("temperature", "top_p", "stop"):
        value = getattr(params, name)
        if value is not None and out.get(name) is None:
            out[name] = value
    return type(body).model_validate(out), out

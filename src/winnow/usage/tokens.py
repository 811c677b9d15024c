"""A prompt's input tokens: one definition for job counts, usage rows and dry-run estimates.

A prompt's input tokens are counted once per prompt per call: the ``n`` generations of one prompt
share them, as every engine computes them and as OpenAI bills them.

* Local models (providers ``transformers`` and ``vllm``): the model's own count. The prompt is
  rendered with the model's chat template and tokenized by its tokenizer through ``PromptEncoder``,
  exactly as the provider does, and refused for the same reasons (longer than the context). Only the
  tokenizer and config files are loaded here, never the weights, once per process and model.
* Any other provider (``openai`` upstreams, plugins): there is no tokenizer at hand, so a prompt is
  estimated from above, ``upstream_estimate``: one token per UTF-8 byte of each message's content,
  plus 4 per message and 3 for the reply (OpenAI documents 3 and 3). A byte-level BPE token is never
  shorter than one byte, so the estimate is at least what such an upstream counts and bills; a dry
  run's ``fits_budget`` is never wrong in the user's favour. The same estimate is checked against
  the model's ``context_length`` when one is configured (an upstream without one decides for itself).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from functools import lru_cache
from typing import Protocol

from winnow.config import ModelConfig
from winnow.errors import ContextLengthExceeded, InvalidRequest
from winnow.models.base import Prompt

log = logging.getLogger("winnow.usage")

LOCAL_PROVIDERS = ("transformers", "vllm")  # the providers that encode prompts with PromptEncoder
PER_MESSAGE = 4
PER_REPLY = 3


def upstream_estimate(prompt: Prompt) -> int:
    """An upper bound of an upstream's input tokens for ``prompt`` (see the module docstring)."""
    if isinstance(prompt, str):
        return len(prompt.encode()) + PER_MESSAGE + PER_REPLY
    return sum(len(m.content.encode()) + PER_MESSAGE for m in prompt) + PER_REPLY


class PromptTokens(Protocol):
    """Counts prompts' input tokens for one model."""

    def measure(self, prompts: Sequence[Prompt]) -> list[int | InvalidRequest]:
        """Each prompt's input tokens, or why the model cannot take it (longer than its context)."""


class Tokenizer:
    """A local model's prompt encoder without its weights (one lock: tokenizers are not re-entrant)."""

    def __init__(self, config: ModelConfig) -> None:
        from transformers import AutoConfig

        from winnow.models.gguf import ensure_converted
        from winnow.models.prompts import PromptEncoder

        ensure_converted(config)
        source = str(config.path or config.base_model)
        hf_config = AutoConfig.from_pretrained(source, local_files_only=True)
        # The transformers provider's context (vLLM's is the same when context_length is configured).
        context = config.context_length or int(getattr(hf_config, "max_position_embeddings", 0) or 2048)
        self.encoder = PromptEncoder(source, config, context)
        self._lock = threading.Lock()

    def measure(self, prompts: Sequence[Prompt]) -> list[int | InvalidRequest]:
        from winnow.models.prompts import PromptRequest

        with self._lock:
            prepared = self.encoder.prepare_all([PromptRequest(p, 1, 1, ()) for p in prompts])
        return [item if isinstance(item, InvalidRequest) else len(item.input_ids) for item in prepared]


class Estimate:
    """``upstream_estimate`` for every prompt, refused above ``context_length`` when there is one."""

    def __init__(self, context_length: int | None) -> None:
        self.context_length = context_length

    def measure(self, prompts: Sequence[Prompt]) -> list[int | InvalidRequest]:
        out: list[int | InvalidRequest] = []
        for prompt in prompts:
            tokens = upstream_estimate(prompt)
            if self.context_length is not None and tokens >= self.context_length:
                out.append(
                    ContextLengthExceeded(
                        "Prompt exceeds the model's context length",
                        f"estimated {tokens} prompt tokens (UTF-8 bytes + chat overhead); "
                        f"context length is {self.context_length}",
                    )
                )
            else:
                out.append(tokens)
        return out


def prompt_tokens(config: ModelConfig) -> PromptTokens:
    """How ``config``'s model counts input tokens: its own tokenizer (local models) or the estimate.
    A local model whose tokenizer cannot be loaded in this process (no ``transformers``, no files on
    this host) is estimated, without a context check."""
    if config.provider not in LOCAL_PROVIDERS:
        return Estimate(config.context_length)
    try:
        return _tokenizer(config.model_dump_json())
    except (ImportError, OSError, ValueError) as exc:
        log.warning("cannot load the tokenizer of %s here (%s); estimating its prompts' tokens", config.id, exc)
        return Estimate(None)


@lru_cache(maxsize=16)
def _tokenizer(config_json: str) -> Tokenizer:
    return Tokenizer(ModelConfig.model_validate_json(config_json))

"""Structured outputs on local transformers models: a grammar (a JSON schema, any JSON object, a regex,
a choice among strings, an EBNF grammar) enforced while decoding, row by row, with xgrammar.

``GuideCompiler`` compiles a request's ``Guide`` against a model's vocabulary once (cached);
``RowGuides`` holds one matcher per constrained row of a batch and, inside ``RowSampler``'s step,
masks each constrained row's logits to the tokens its grammar allows and advances it by the token the
row drew. Free rows in the same batch are untouched. xgrammar was chosen over llguidance and
outlines-core by the figures in the README (bench/constrained.py).
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from typing import Any

import torch

from winnow.errors import InvalidRequest
from winnow.models.base import Guide

_NEG_INF = float("-inf")
_CACHE_SIZE = 256  # compiled grammars kept per model


def _choice_regex(spec: str) -> str:
    return "|".join(re.escape(choice) for choice in json.loads(spec))


class GuideCompiler:
    """One model's vocabulary as xgrammar sees it, and the grammars compiled for it."""

    def __init__(self, tokenizer: Any, vocab: int, eos_ids: set[int]) -> None:
        import xgrammar

        info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab, stop_token_ids=sorted(eos_ids))
        special = set(tokenizer.all_special_ids) - set(info.special_token_ids)
        if special:  # tokens a raw vocabulary would let a string spell out (<pad>, <|user|>, ...)
            encoded = [*tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))][:vocab]
            encoded += [""] * (vocab - len(encoded))
            for token in special:
                if token < vocab:
                    encoded[token] = ""
            info = xgrammar.TokenizerInfo(
                encoded, info.vocab_type, vocab_size=vocab, stop_token_ids=sorted(eos_ids),
                add_prefix_space=info.add_prefix_space,
            )  # fmt: skip
        self._xgrammar = xgrammar
        self.vocab = vocab
        self.eos_ids = eos_ids
        self.compiler = xgrammar.GrammarCompiler(info, cache_enabled=False)
        self._compiled: OrderedDict[Guide, Any] = OrderedDict()

    def compile(self, guide: Guide) -> Any:
        """The compiled grammar, or InvalidRequest naming the field for a schema or regex that cannot be one."""
        compiled = self._compiled.get(guide)
        if compiled is not None:
            self._compiled.move_to_end(guide)
            return compiled
        try:
            compiled = self._compile(guide)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise InvalidRequest(
                f"{guide.param} cannot be enforced", str(exc).strip()[:500], param=guide.param
            ) from exc
        self._compiled[guide] = compiled
        if len(self._compiled) > _CACHE_SIZE:
            self._compiled.popitem(last=False)
        return compiled

    def _compile(self, guide: Guide) -> Any:
        compiler = self.compiler
        if guide.kind in ("json_schema", "json_object"):  # compact: no runs of whitespace to wander into
            return compiler.compile_json_schema(guide.spec or '{"type": "object"}', any_whitespace=False)
        if guide.kind == "regex":
            return compiler.compile_regex(guide.spec)
        if guide.kind == "choice":
            return compiler.compile_regex(_choice_regex(guide.spec))
        if guide.kind == "tool_call":  # Hermes' block: <tool_call>{"name": ..., "arguments": {...}}</tool_call>
            grammar = self._xgrammar.Grammar
            call = grammar.from_json_schema(guide.spec, any_whitespace=False)
            opened, closed = grammar.from_ebnf('root ::= "<tool_call>"'), grammar.from_ebnf('root ::= "</tool_call>"')
            return compiler.compile_grammar(grammar.concat(opened, call, closed))
        return compiler.compile_grammar(guide.spec)

    def rows(self, guides: list[Guide | None]) -> RowGuides | None:
        """Matchers for a batch's rows (None where no row is constrained)."""
        if not any(guides):
            return None
        return RowGuides(self, [None if g is None else self.compile(g) for g in guides])


class RowGuides:
    """The matchers of one batch's constrained rows, stepped inside ``RowSampler`` with xgrammar's
    batched calls (one call a step for all rows, not one per row)."""

    def __init__(self, compiler: GuideCompiler, grammars: list[Any]) -> None:
        xgrammar = compiler._xgrammar
        self._apply = xgrammar.apply_token_bitmask_inplace
        self._batch = xgrammar.BatchGrammarMatcher(max_threads=1)  # torch has the other core
        self._accept = xgrammar.BatchGrammarMatcher.batch_accept_token
        self.vocab = compiler.vocab
        self.stops = compiler.eos_ids
        self.index = [i for i, g in enumerate(grammars) if g is not None]
        self.rows = torch.tensor(self.index)
        self.matchers = [xgrammar.GrammarMatcher(grammars[i]) for i in self.index]
        self.bitmask = xgrammar.allocate_token_bitmask(len(grammars), compiler.vocab)
        self.live = list(range(len(self.index)))  # positions in ``index`` whose grammar has not ended

    def mask(self, logits: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
        """``logits`` with each constrained row's disallowed tokens at -inf. A row left with nothing
        (min_tokens or a bias against the only token its grammar allows, its end) takes its grammar's
        tokens over ``fallback``, the row's logits before those adjustments. A row whose grammar has
        ended keeps its last mask (its stop tokens)."""
        if self.live:
            live = [self.matchers[k] for k in self.live]
            self._batch.batch_fill_next_token_bitmask(live, self.bitmask, [self.index[k] for k in self.live])
        logits = logits.clone(memory_format=torch.contiguous_format)
        bitmask = self.bitmask.to(logits.device, non_blocking=True)
        self._apply(logits, bitmask, vocab_size=self.vocab, indices=self.index)
        rows = self.rows.to(logits.device)
        empty = rows[~torch.isfinite(logits[rows]).any(dim=1)]
        if len(empty):
            rescue = fallback[empty].clone(memory_format=torch.contiguous_format)
            self._apply(rescue, bitmask[empty], vocab_size=self.vocab)
            logits[empty] = rescue
        return logits

    def advance(self, chosen: torch.Tensor) -> None:
        """Each constrained row's grammar moves past the token the row drew."""
        if not self.live:
            return
        drawn = chosen.tolist()
        tokens = [drawn[self.index[k]] for k in self.live]
        accepted = self._accept([self.matchers[k] for k in self.live], tokens)
        self.live = [k for k, ok, t in zip(self.live, accepted, tokens, strict=True) if ok and t not in self.stops]

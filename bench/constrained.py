"""Structured outputs on a local model: constrained / unconstrained tokens/s, batched and alone, and the
constrained-decoding libraries compared on the same model.

Winnow's path: ``LoadedModel.run_batch`` on the same prompts at temperature 1, a JSON schema against
free text, every row making ``--max-tokens`` tokens (the schema never closes that early; free rows
ignore EOS), the best of ``--repeat`` interleaved runs at batch 1 and ``--batch``.

``--compare``: each of xgrammar, llguidance and outlines-core that is importable, as a bare logits
processor around demo-lm's ``generate``: the median time to compile a few schemas, and tokens/s with
its masks ÷ without, at batch 1 and ``--batch`` (the per-step cost of computing and applying masks).

    python bench/constrained.py                   # demo-lm, batch 1 and 32, 32 new tokens
    python bench/constrained.py --compare         # the libraries side by side
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

# At least 64 items: no row can close it within the bench's tokens, so every row runs to the limit.
LONG = {
    "type": "object",
    "properties": {"values": {"type": "array", "items": {"type": "integer"}, "minItems": 64}},
    "required": ["values"],
}
SCHEMAS: list[dict[str, Any]] = [
    {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer"}}, "required": ["name", "age"]},
    {"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]}, "n": {"type": "number"}}, "required": ["color", "n"]},
    {"type": "object", "properties": {"items": {"type": "array", "items": {"type": "integer"}, "maxItems": 4}, "ok": {"type": "boolean"}}},
    {"type": "object", "properties": {"user": {"type": "object", "properties": {"id": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}}}, "required": ["id", "tags"]}}, "required": ["user"]},
    LONG,
]  # fmt: skip


def winnow_path(args: argparse.Namespace) -> None:
    from winnow.config import ModelConfig, Settings
    from winnow.models.base import Guide, SamplingParams
    from winnow.models.prompts import requests_for
    from winnow.models.providers.transformers import LoadedModel

    rows = [json.loads(line) for line in args.prompt_file.read_text().splitlines() if line.strip()]
    model = LoadedModel(ModelConfig(id="bench", path=str(args.model)), Settings(local_torch_threads=args.threads))
    free = SamplingParams(max_tokens=args.max_tokens, temperature=1.0, ignore_eos=True)
    constrained = replace(free, ignore_eos=False, guide=Guide.json_schema(LONG))
    started = time.perf_counter()
    model.compile_guide(constrained)  # and the model's vocabulary for xgrammar, once
    first = (time.perf_counter() - started) * 1000
    times = []
    for schema in SCHEMAS[:-1]:
        started = time.perf_counter()
        model.compile_guide(replace(free, guide=Guide.json_schema(schema)))
        times.append((time.perf_counter() - started) * 1000)
    print(
        f"# {args.model.name}: first schema {first:.1f} ms (with the vocabulary), then {statistics.median(times):.2f} ms"
    )
    for batch in (1, args.batch):
        prompts = [r["prompt"] for r in rows][:batch]
        best: dict[str, float] = {}
        model.run_batch(requests_for(prompts, constrained), constrained)  # warm-up
        for _ in range(args.repeat):
            for name, params in (("free", free), ("constrained", constrained)):
                started = time.perf_counter()
                results = model.run_batch(requests_for(prompts, params), params)
                elapsed = time.perf_counter() - started
                best[name] = max(best.get(name, 0.0), sum(r.output_tokens for r in results) / elapsed)
        ratio = best["constrained"] / best["free"]
        print(
            f"batch {batch:>3}: constrained {best['constrained']:8.1f} tok/s, free {best['free']:8.1f} tok/s, = {ratio:.3f}"
        )


# -- --compare: the libraries as bare logits processors -------------------------------------------------
Library = tuple[Callable[[str], Any], Callable[[Any], Any], Callable[[list[Any], Any], None], Callable[[Any, int], Any]]


def _texts(tokenizer: Any, vocab: int) -> list[str]:
    special = set(tokenizer.all_special_ids)
    return ["" if i in special else tokenizer.decode([i]) for i in range(vocab)]


def _xgrammar(tokenizer: Any, vocab: int, eos: int) -> Library:
    import xgrammar as x

    info = x.TokenizerInfo(_texts(tokenizer, vocab), x.VocabType.RAW, vocab_size=vocab, stop_token_ids=[eos])
    compiler = x.GrammarCompiler(info, cache_enabled=False)

    def fill(matchers: list[Any], bitmask: Any) -> None:
        for i, m in enumerate(matchers):
            m.fill_next_token_bitmask(bitmask, i)

    return (
        lambda s: compiler.compile_json_schema(s, any_whitespace=False),
        x.GrammarMatcher,
        fill,
        lambda m, t: m.accept_token(t),
    )


def _llguidance(tokenizer: Any, vocab: int, eos: int) -> Library:
    import llguidance
    import llguidance.torch as lt
    from llguidance._tokenizer import TokenizerWrapper

    class Vocabulary:  # llguidance.hf cannot read a tokenizer whose decoder is "Fuse" (demo-lm's)
        eos_token_id, bos_token_id = eos, None
        tokens = [t.encode() for t in _texts(tokenizer, vocab)]
        special_token_ids = sorted(tokenizer.all_special_ids)

        def __call__(self, text: bytes) -> list[int]:
            return list(tokenizer(text.decode(), add_special_tokens=False)["input_ids"])

    lltokenizer = llguidance.LLTokenizer(TokenizerWrapper(Vocabulary()), n_vocab=vocab)
    compact = {"whitespace_flexible": False}

    def fill(matchers: list[Any], bitmask: Any) -> None:
        for i, m in enumerate(matchers):
            lt.fill_next_token_bitmask(m, bitmask, i)

    def compile(text: str) -> Any:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(text, defaults=compact)  # type: ignore[arg-type]
        return llguidance.LLMatcher(lltokenizer, grammar)

    return (
        compile,
        lambda matcher: matcher.deep_copy(),
        fill,
        lambda m, t: m.consume_token(t),
    )


def _outlines_core(tokenizer: Any, vocab: int, eos: int) -> Library:
    import outlines_core as oc

    tokens: dict[str, list[int]] = {}
    for i, text in enumerate(_texts(tokenizer, vocab)):
        if text:
            tokens.setdefault(text, []).append(i)
    vocabulary = oc.Vocabulary(eos, tokens)

    def fill(guides: list[Any], bitmask: Any) -> None:
        for i, g in enumerate(guides):
            g.write_mask_into(bitmask[i].data_ptr(), bitmask[i].numel(), 4)

    return (
        lambda s: oc.Index(oc.json_schema.build_regex_from_schema(s), vocabulary),
        oc.Guide,
        fill,
        lambda g, t: g.advance(t),
    )


def compare(args: argparse.Namespace) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor

    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model).eval()
    vocab, eos = int(model.get_output_embeddings().weight.shape[0]), int(tokenizer.eos_token_id)
    bits = torch.arange(32, dtype=torch.int32)

    class Masks(LogitsProcessor):
        def __init__(self, library: Library | None, grammars: list[Any], batch: int) -> None:
            self.library, self.step = library, 0
            self.matchers = [library[1](grammars[i % len(grammars)]) for i in range(batch)] if library else []
            self.bitmask = torch.full((batch, (vocab + 31) // 32), -1, dtype=torch.int32)

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            if self.library is None:
                return scores
            if self.step:
                for i, m in enumerate(self.matchers):
                    self.library[3](m, int(input_ids[i, -1]))
            self.step += 1
            self.library[2](self.matchers, self.bitmask)
            allowed = ((self.bitmask.unsqueeze(-1) >> bits) & 1).reshape(len(self.matchers), -1)[:, :vocab].bool()
            return scores[:, :vocab].masked_fill(~allowed, float("-inf"))

    def rate(processor: Masks, batch: int) -> float:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "JSON?"}], add_generation_prompt=True, tokenize=False
        )
        inputs = tokenizer([text] * batch, return_tensors="pt", add_special_tokens=False)
        started = time.perf_counter()
        with torch.inference_mode():
            model.generate(**inputs, max_new_tokens=args.max_tokens, do_sample=False, eos_token_id=None,
                           pad_token_id=tokenizer.pad_token_id, logits_processor=[processor])  # fmt: skip
        return args.max_tokens * batch / (time.perf_counter() - started)

    print(
        f"# {args.model.name}: compile median of {len(SCHEMAS)} schemas; tokens/s with masks / without, best of {args.repeat}"
    )
    for name, make in (("xgrammar", _xgrammar), ("llguidance", _llguidance), ("outlines-core", _outlines_core)):
        try:
            library = make(tokenizer, vocab, eos)
        except ImportError as exc:
            print(f"{name:<14} not installed ({exc})")
            continue
        times = []
        for schema in SCHEMAS:
            started = time.perf_counter()
            library[0](json.dumps(schema))
            times.append(time.perf_counter() - started)
        grammars = [library[0](json.dumps(LONG))]  # no row can end: each step computes a mask for every row
        line = f"{name:<14} compile {statistics.median(times) * 1000:6.2f} ms"
        for batch in (1, args.batch):
            pairs = [
                (rate(Masks(library, grammars, batch), batch), rate(Masks(None, [], batch), batch))
                for _ in range(args.repeat)
            ]
            masked, free = max(p[0] for p in pairs), max(p[1] for p in pairs)
            line += f" | batch {batch}: {masked:7.0f} / {free:7.0f} tok/s = {masked / free:.3f}"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "examples/models/demo-lm")
    parser.add_argument("--prompt-file", type=Path, default=ROOT / "examples/prompts/arithmetic.jsonl")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--compare", action="store_true", help="compare xgrammar, llguidance and outlines-core")
    args = parser.parse_args()
    compare(args) if args.compare else winnow_path(args)


if __name__ == "__main__":
    main()

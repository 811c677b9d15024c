#!/usr/bin/env python
"""Train the tiny demo models and prompt sets that ship with Winnow.

Produces (relative to ``--out``, default: the directory of this script)::

    models/demo-lm/    tiny Llama causal LM that answers "What is A+B?"   (+ tokenizer)
    models/demo-rm/    tiny Llama reward model (1 logit, higher = correct) (+ tokenizer)
    prompts/arithmetic.jsonl        500 held-out prompts {"id","prompt","answer"}
    prompts/arithmetic_small.jsonl  the first 20 of them
    prompts/arithmetic_chat.jsonl   20 held-out prompts in messages form (with a system message)

Everything is built from scratch (no downloads): a character-level BPE tokenizer
(digits are always single tokens; only "What" and "is" are merged) wrapped in
``PreTrainedTokenizerFast``, and Llama models built from small ``LlamaConfig`` objects.

Task and prompt format
----------------------
Addition of two integers 0..99 (10,000 pairs).  500 pairs are held out (never used to
train either model) and written to ``prompts/arithmetic.jsonl``.  The chat template
renders::

    <bos>[<|system|>SYSTEM]<|user|>What is 17+25?<|assistant|>42<eos>

``apply_chat_template(..., add_generation_prompt=True)`` ends with ``<|assistant|>`` and
the model answers with the number followed by ``<eos>``.  System messages are rendered
and ~10% of the training batches carry one of a few system prompts, so they are handled.

Why sampling is imperfect (on purpose)
--------------------------------------
To give reward scoring / best-of-n filtering real work to do, the LM is trained with
*label noise*: with probability ``--label-noise`` (0.25) a training target is replaced by a
plausible near-miss (off by 1, 2 or 10, reversed digits, one digit changed), re-drawn
every time the example is seen.  The model therefore learns a distribution whose mode is
the correct sum (greedy decoding is accurate) but which puts roughly 25-30% of its mass
on near-miss answers (sampling at temperature 1.0 is not).

The reward model (same 2-layer architecture, ``LlamaForSequenceClassification``,
``num_labels=1``) is initialised from the LM's weights plus a zero score head and trained
on (a) 38,000 responses sampled at T=1.0 from demo-lm itself on *training* prompts,
labelled by exact match against the true sum, and (b) synthetic correct answers and
near-miss / random / malformed wrong answers (each batch: 1/4 of each kind).  Losses: a
logistic loss on the pooled logit (last token = ``<eos>``), the same logistic loss on every
answer token ("is the response so far a prefix of the correct answer"), and an auxiliary
cross-entropy that predicts, at each answer token, the correct token for that position
(through the input embedding matrix; this training-only head is not saved).  In tuning
runs without the auxiliary loss the verifier learned much more slowly (after the same
1500 steps: AUC 0.90 with the pooled loss only, 0.97 with the per-token loss added;
best-of-8 82% / 92%).

Measured results (reference run: ``--threads 2``, torch 2.13 CPU, transformers 5.24)
-----------------------------------------------------------------------------------
    demo-lm: 89,024 parameters (2 layers, hidden 64, 4 heads, vocab 106), 360 KB on disk
    demo-rm: 89,088 parameters (same backbone + 64->1 score head),       360 KB on disk
    held-out prompts (prompts/arithmetic.jsonl, 500):
        greedy accuracy                              99.8%
        greedy accuracy, chat file (system message) 100.0%  (20 prompts)
        sampled accuracy, T=1.0, top_p=1.0, top_k=0  70.2%  (500 x 4 samples)
    first 200 held-out prompts x 8 samples at T=1.0:
        per-sample accuracy                          73.1%
        best-of-8 picked by demo-rm                 100.0%
        pass@8 (oracle) / majority vote             100.0% / 99.0%
        demo-rm ROC AUC on those 1600 samples       0.9999
        demo-rm ROC AUC, 500 correct vs 500 synthetic near misses: 0.9999
    wall clock: 5-6 min in total on 2 CPU cores shared with other work (reference runs:
    310 s and 368 s; LM ~170-220 s, RM incl. sampling ~140 s, evaluation ~2 s; 686 s in a
    run while the same 2 cores were busy with other jobs).  Each training step takes
    ~0.08-0.1 s when the cores are free; ``--threads 1`` takes about as long (the
    matrices are tiny) and gave identical losses and metrics.

Usage::

    python examples/train_demo_models.py                 # train + write + evaluate
    python examples/train_demo_models.py --eval-only     # evaluate the saved artefacts
    python examples/train_demo_models.py --out /tmp/demo --threads 1

Determinism: all randomness comes from fixed seeds (python, numpy, torch) and
``torch.use_deterministic_algorithms(True)`` is on; re-running gives identical weights
for a given torch version (1 and 2 threads gave identical losses and metrics here;
other thread counts / CPUs may differ in the last float bits).

Serving notes: use ``padding_side="left"`` (saved in the tokenizer config) with an
attention mask; ``<pad>`` (id 0) is distinct from ``<eos>`` (id 2); answers need at most 4
new tokens (3 digits + ``<eos>``); ``generation_config.json`` is greedy by default
(``do_sample=false``, ``max_new_tokens=8``).  The tokenizer adds no special tokens by
itself (the chat template writes ``<bos>``), so ``add_special_tokens`` has no effect.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import string
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

SEED = 1234
MAX_OPERAND = 99
N_HELDOUT = 500
N_SMALL = 20
N_CHAT = 20
CHAT_SYSTEM_PROMPT = "You are a calculator."

# Special tokens (ids are fixed by their order here).
PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SYSTEM_TAG, USER_TAG, ASSISTANT_TAG = "<|system|>", "<|user|>", "<|assistant|>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK, SYSTEM_TAG, USER_TAG, ASSISTANT_TAG]

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}<|system|>{{ message['content'] }}"
    "{% elif message['role'] == 'user' %}<|user|>{{ message['content'] }}"
    "{% elif message['role'] == 'assistant' %}<|assistant|>{{ message['content'] }}{{ eos_token }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

# System prompts seen in training (the chat prompt file uses CHAT_SYSTEM_PROMPT).
TRAIN_SYSTEM_PROMPTS = [
    CHAT_SYSTEM_PROMPT,
    "You are a helpful assistant.",
    "Answer with a number only.",
    "You are a math tutor. Be concise.",
    "You are a precise arithmetic engine. Reply with the result.",
    "Be brief.",
    "",
]

MAX_POSITIONS = 512  # RoPE: no parameters depend on it; training sequences are < 50 tokens
MAX_NEW_TOKENS = 8  # answers are at most 3 digits + <eos>


# ----------------------------------------------------------------------------- utils


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prompt_text(a: int, b: int) -> str:
    return f"What is {a}+{b}?"


def make_splits(seed: int = SEED):
    """All pairs (a, b) with 0 <= a, b <= 99, shuffled; first N_HELDOUT are held out."""
    pairs = [(a, b) for a in range(MAX_OPERAND + 1) for b in range(MAX_OPERAND + 1)]
    random.Random(seed).shuffle(pairs)
    return pairs[:N_HELDOUT], pairs[N_HELDOUT:]


def near_miss(a: int, b: int, rng: np.random.Generator) -> int:
    """A plausible wrong answer for a+b (never equal to a+b, never negative)."""
    s = a + b
    r = rng.random()
    if r < 0.30:
        w = s + (1 if rng.random() < 0.5 else -1)
    elif r < 0.60:
        w = s + (10 if rng.random() < 0.5 else -10)  # forgotten / spurious carry
    elif r < 0.70:
        w = s + (2 if rng.random() < 0.5 else -2)
    elif r < 0.80:
        w = int(str(s)[::-1])  # reversed digits
    else:  # change one digit
        d = list(str(s))
        i = int(rng.integers(len(d)))
        d[i] = str((int(d[i]) + int(rng.integers(1, 10))) % 10)
        w = int("".join(d))
    if w < 0 or w == s:
        w = s + 1
    return w


def rm_wrong_answer(a: int, b: int, rng: np.random.Generator) -> str:
    """Wrong responses used as synthetic negatives for the reward model."""
    s = a + b
    r = rng.random()
    if r < 0.70:
        return str(near_miss(a, b, rng))
    if r < 0.85:
        w = int(rng.integers(0, 2 * MAX_OPERAND + 1))
        return str(w if w != s else s + 3)
    # malformed: truncated, extra digit, empty, leading zero, operand echoed
    kind = int(rng.integers(5))
    if kind == 0 and s >= 10:
        return str(s)[:-1]
    if kind == 1:
        return str(s) + str(int(rng.integers(10)))
    if kind == 2:
        return ""
    if kind == 3:
        return "0" + str(s)
    return str(a) if a != s else str(s + 1)


def auc(scores, labels) -> float:
    """ROC AUC via the rank statistic (ties get average rank)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


# ------------------------------------------------------------------------- tokenizer


def build_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = [c for c in string.printable if c not in "\t\n\r\x0b\x0c"]
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS + chars)}
    merges = [("W", "h"), ("Wh", "a"), ("Wha", "t"), ("i", "s")]
    for left, right in merges:
        vocab[left + right] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=UNK))
    # every whitespace char and every digit is its own pre-token; other runs are words
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"\s|\d|[^\s\d]+"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(SPECIAL_TOKENS)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        padding_side="left",
        model_max_length=MAX_POSITIONS,
        model_input_names=["input_ids", "attention_mask"],
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    return hf_tok


class FastEncoder:
    """Builds token ids of chat-template renderings without going through Jinja.

    Checked against ``tokenizer.apply_chat_template`` + ``tokenizer(...)`` in ``check``.
    """

    def __init__(self, tok):
        self.tok = tok
        ids = tok.convert_tokens_to_ids
        self.bos, self.eos, self.pad = ids(BOS), ids(EOS), ids(PAD)
        self.sys_tag, self.user_tag, self.asst_tag = ids(SYSTEM_TAG), ids(USER_TAG), ids(ASSISTANT_TAG)
        self._cache: dict[str, list[int]] = {}

    def text(self, s: str) -> list[int]:
        if s not in self._cache:
            self._cache[s] = self.tok(s, add_special_tokens=False)["input_ids"]
        return self._cache[s]

    def prompt(self, a: int, b: int, system: str | None = None) -> list[int]:
        out = [self.bos]
        if system is not None:
            out += [self.sys_tag, *self.text(system)]
        return [*out, self.user_tag, *self.text(prompt_text(a, b)), self.asst_tag]

    def answer(self, ans: str) -> list[int]:
        return [*self.text(ans), self.eos]

    def check(self, a: int, b: int, ans: str, system: str | None = None) -> None:
        msgs = ([{"role": "system", "content": system}] if system is not None else []) + [
            {"role": "user", "content": prompt_text(a, b)}
        ]
        gen = self.tok(
            self.tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False), add_special_tokens=False
        )["input_ids"]
        assert gen == self.prompt(a, b, system), (gen, self.prompt(a, b, system))
        full = self.tok(
            self.tok.apply_chat_template([*msgs, {"role": "assistant", "content": ans}], tokenize=False),
            add_special_tokens=False,
        )["input_ids"]
        assert full == self.prompt(a, b, system) + self.answer(ans), full


def left_pad(seqs: list[list[int]], pad_id: int):
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, n - len(s) :] = torch.tensor(s, dtype=torch.long)
        mask[i, n - len(s) :] = 1
    return ids, mask


def make_batch(enc: FastEncoder, items, rng: np.random.Generator, sys_frac: float):
    """items: list of (a, b, answer_str) -> left-padded ids, attention mask, labels (-100 outside the answer)."""
    use_sys = rng.random() < sys_frac  # whole batch with / without system prompt
    seqs, starts = [], []
    for a, b, ans in items:
        system = TRAIN_SYSTEM_PROMPTS[int(rng.integers(len(TRAIN_SYSTEM_PROMPTS)))] if use_sys else None
        p = enc.prompt(a, b, system)
        seqs.append(p + enc.answer(ans))
        starts.append(len(p))
    ids, mask = left_pad(seqs, enc.pad)
    n = ids.shape[1]
    labels = torch.full_like(ids, -100)
    for i, (s, st) in enumerate(zip(seqs, starts, strict=False)):
        off = n - len(s)
        labels[i, off + st :] = ids[i, off + st :]
    return ids, mask, labels


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p)))


# ----------------------------------------------------------------------------- models


def llama_config(tok, args, **extra):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tok),
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 2,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        max_position_embeddings=MAX_POSITIONS,
        rms_norm_eps=1e-5,
        initializer_range=0.02,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **extra,
    )


def train_lm(tok, enc, train_pairs, args):
    from transformers import LlamaForCausalLM

    seed_everything(SEED + 1)
    cfg = llama_config(tok, args, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"[lm] params={n_params:,}  steps={args.lm_steps}  batch={args.batch}  noise={args.label_noise}")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lm_lr, betas=(0.9, 0.98), weight_decay=0.01)
    rng = np.random.default_rng(SEED + 2)
    model.train()
    t0 = time.time()
    ema = None
    for step in range(args.lm_steps):
        idx = rng.integers(len(train_pairs), size=args.batch)
        items = []
        for i in idx:
            a, b = train_pairs[i]
            ans = near_miss(a, b, rng) if rng.random() < args.label_noise else a + b
            items.append((a, b, str(ans)))
        ids, mask, labels = make_batch(enc, items, rng, args.sys_frac)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.lm_steps, args.lm_lr, args.warmup)
        logits = model(input_ids=ids, attention_mask=mask).logits
        loss = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if (step + 1) % args.log_every == 0 or step == args.lm_steps - 1:
            print(
                f"[lm] step {step + 1:5d}  loss {ema:.4f}  lr {opt.param_groups[0]['lr']:.2e}  {time.time() - t0:.0f}s",
                flush=True,
            )
    model.eval()
    return model


@torch.no_grad()
def generate_answers(
    model, tok, conversations, *, do_sample: bool, batch_size: int = 500, temperature: float = 1.0
) -> list[str]:
    """Batched, left-padded generation exactly as a server would call it."""
    out = []
    for i in range(0, len(conversations), batch_size):
        texts = [
            tok.apply_chat_template(c, add_generation_prompt=True, tokenize=False)
            for c in conversations[i : i + batch_size]
        ]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        kw = dict(do_sample=True, temperature=temperature, top_p=1.0, top_k=0) if do_sample else dict(do_sample=False)
        gen = model.generate(**enc, max_new_tokens=MAX_NEW_TOKENS, **kw)
        new = gen[:, enc["input_ids"].shape[1] :]
        out += [s.strip() for s in tok.batch_decode(new, skip_special_tokens=True)]
    return out


@torch.no_grad()
def rm_scores(rm, tok, conversations, batch_size: int = 500) -> np.ndarray:
    out = []
    for i in range(0, len(conversations), batch_size):
        texts = [tok.apply_chat_template(c, tokenize=False) for c in conversations[i : i + batch_size]]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        out.append(rm(**enc).logits[:, 0].float().numpy())
    return np.concatenate(out)


def user_conv(a: int, b: int):
    return [{"role": "user", "content": prompt_text(a, b)}]


def train_rm(tok, enc, lm, train_pairs, args):
    from transformers import LlamaForSequenceClassification

    # (a) responses sampled from demo-lm on training prompts, labelled by exact match
    seed_everything(SEED + 3)
    rng = np.random.default_rng(SEED + 4)
    idx = rng.choice(len(train_pairs), size=args.rm_sample_prompts, replace=False)
    sample_pairs = [train_pairs[i] for i in idx for _ in range(args.rm_samples_per_prompt)]
    t0 = time.time()
    responses = generate_answers(lm, tok, [user_conv(a, b) for a, b in sample_pairs], do_sample=True)
    pool = [(a, b, r, r == str(a + b)) for (a, b), r in zip(sample_pairs, responses, strict=False)]
    n_ok = sum(p[3] for p in pool)
    print(f"[rm] sampled {len(pool)} responses from demo-lm in {time.time() - t0:.0f}s; {n_ok / len(pool):.1%} correct")
    pool_pos = [p for p in pool if p[3]]
    pool_neg = [p for p in pool if not p[3]]

    seed_everything(SEED + 5)
    cfg = llama_config(
        tok, args, num_labels=1, tie_word_embeddings=False, id2label={0: "correct"}, label2id={"correct": 0}
    )
    rm = LlamaForSequenceClassification(cfg)
    # backbone (embeddings, layers, final norm) initialised from demo-lm; fresh zero score head
    missing, unexpected = rm.load_state_dict(lm.state_dict(), strict=False)
    assert missing == ["score.weight"] and set(unexpected) <= {"lm_head.weight"}, (missing, unexpected)
    torch.nn.init.zeros_(rm.score.weight)
    opt = torch.optim.AdamW(rm.parameters(), lr=args.rm_lr, betas=(0.9, 0.98), weight_decay=0.01)
    rm.train()
    t0 = time.time()
    ema = None
    q = args.batch // 4
    for step in range(args.rm_steps):
        items = []
        # quarter: sampled correct, quarter: sampled wrong, quarter: synthetic correct, quarter: synthetic wrong
        for src in (pool_pos, pool_neg):
            for j in rng.integers(len(src), size=q):
                a, b, r, ok = src[j]
                items.append((a, b, r, float(ok)))
        for j in rng.integers(len(train_pairs), size=q):
            a, b = train_pairs[j]
            items.append((a, b, str(a + b), 1.0))
        for j in rng.integers(len(train_pairs), size=q):
            a, b = train_pairs[j]
            items.append((a, b, rm_wrong_answer(a, b, rng), 0.0))
        ids, mask, _ = make_batch(enc, [(a, b, r) for a, b, r, _ in items], rng, args.sys_frac)
        # Dense targets: at every answer token (digits and <eos>) the target says whether the
        # response so far is still a prefix of the correct "sum<eos>"; at <eos> (the pooled,
        # last position) that is exactly "the answer is correct".
        # Auxiliary targets: at the j-th answer token, the j-th token of the correct answer,
        # predicted through the input embedding matrix (a training-only head, not saved).  This
        # dense 10-way signal is what makes the verifier learn addition quickly.
        dense = torch.full(ids.shape, -1.0)
        aux = torch.full(ids.shape, -100, dtype=torch.long)
        for i, (a, b, r, ok) in enumerate(items):
            got, want = enc.answer(r), enc.answer(str(a + b))
            n = len(got)
            for j in range(n):
                dense[i, ids.shape[1] - n + j] = float(got[: j + 1] == want[: j + 1])
                if j < len(want):
                    aux[i, ids.shape[1] - n + j] = want[j]
            assert dense[i, -1].item() == ok
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.rm_steps, args.rm_lr, args.warmup)
        hidden = rm.model(input_ids=ids, attention_mask=mask).last_hidden_state
        logits = rm.score(hidden)[..., 0]
        sel = dense >= 0
        loss = F.binary_cross_entropy_with_logits(logits[:, -1], dense[:, -1]) + args.rm_dense_weight * (
            F.binary_cross_entropy_with_logits(logits[sel], dense[sel])
        )
        if args.rm_aux_weight > 0:
            aux_logits = hidden @ rm.model.embed_tokens.weight.T  # last_hidden_state is already normed
            loss = loss + args.rm_aux_weight * F.cross_entropy(
                aux_logits.reshape(-1, aux_logits.shape[-1]), aux.reshape(-1), ignore_index=-100
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(rm.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if (step + 1) % args.log_every == 0 or step == args.rm_steps - 1:
            print(
                f"[rm] step {step + 1:5d}  loss {ema:.4f}  lr {opt.param_groups[0]['lr']:.2e}  {time.time() - t0:.0f}s",
                flush=True,
            )
    rm.eval()
    return rm


# ------------------------------------------------------------------------- artefacts


def write_prompts(out: Path, heldout) -> None:
    pdir = out / "prompts"
    pdir.mkdir(parents=True, exist_ok=True)
    rows = [
        {"id": f"add-{i + 1:04d}", "prompt": prompt_text(a, b), "answer": str(a + b)}
        for i, (a, b) in enumerate(heldout)
    ]
    with open(pdir / "arithmetic.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    with open(pdir / "arithmetic_small.jsonl", "w") as f:
        for r in rows[:N_SMALL]:
            f.write(json.dumps(r) + "\n")
    with open(pdir / "arithmetic_chat.jsonl", "w") as f:
        for r in rows[:N_CHAT]:
            msgs = [{"role": "system", "content": CHAT_SYSTEM_PROMPT}, {"role": "user", "content": r["prompt"]}]
            f.write(json.dumps({"id": r["id"], "messages": msgs, "answer": r["answer"]}) + "\n")


def save_model(model, tok, path: Path, generation: bool) -> None:
    from transformers import GenerationConfig

    path.mkdir(parents=True, exist_ok=True)
    if generation:
        model.generation_config = GenerationConfig(
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            do_sample=False,
            max_new_tokens=MAX_NEW_TOKENS,
        )
    model.save_pretrained(path, safe_serialization=True)
    save_tokenizer(tok, path)


def save_tokenizer(tok, path: Path) -> None:
    tok.save_pretrained(path)
    # Also loadable by transformers 4.x: a class name it knows, the template inline
    # (transformers 5 writes chat_template.jinja, which is kept; both hold the same template)
    # and no token_type_ids (4.x would return them by default and generate() rejects them).
    cfg_path = path / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg["model_input_names"] = ["input_ids", "attention_mask"]
    cfg["chat_template"] = CHAT_TEMPLATE
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")


def load_jsonl(path: Path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


# ------------------------------------------------------------------------ evaluation


@torch.no_grad()
def evaluate(out: Path, n_sampled_reps: int = 4, n_bo8_prompts: int = 200, k: int = 8) -> dict:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    lm_dir, rm_dir = out / "models" / "demo-lm", out / "models" / "demo-rm"
    tok = AutoTokenizer.from_pretrained(lm_dir)
    rm_tok = AutoTokenizer.from_pretrained(rm_dir)
    lm = AutoModelForCausalLM.from_pretrained(lm_dir).eval()
    rm = AutoModelForSequenceClassification.from_pretrained(rm_dir).eval()
    assert tok.padding_side == "left" and rm_tok.padding_side == "left"
    probe = [{"role": "user", "content": "What is 17+25?"}]
    assert (
        tok.apply_chat_template(probe, add_generation_prompt=True, tokenize=False)
        == f"{BOS}{USER_TAG}What is 17+25?{ASSISTANT_TAG}"
    )
    assert rm_tok.apply_chat_template(probe, tokenize=False) == tok.apply_chat_template(probe, tokenize=False)

    rows = load_jsonl(out / "prompts" / "arithmetic.jsonl")
    convs = [[{"role": "user", "content": r["prompt"]}] for r in rows]
    answers = [r["answer"] for r in rows]
    m: dict = {}
    t0 = time.time()

    greedy = generate_answers(lm, tok, convs, do_sample=False)
    m["greedy_acc"] = float(np.mean([g == a for g, a in zip(greedy, answers, strict=False)]))

    # left padding must not change greedy results: compare with unpadded one-by-one generation
    mixed = [convs[i] for i in range(40)]
    mixed += [
        [{"role": "system", "content": s}] + convs[i]
        for i, s in zip(range(40, 60), TRAIN_SYSTEM_PROMPTS * 3, strict=False)
    ]
    batched = generate_answers(lm, tok, mixed, do_sample=False)
    single = [generate_answers(lm, tok, [c], do_sample=False)[0] for c in mixed]
    m["left_pad_consistent"] = batched == single

    chat = load_jsonl(out / "prompts" / "arithmetic_chat.jsonl")
    chat_out = generate_answers(lm, tok, [r["messages"] for r in chat], do_sample=False)
    m["chat_greedy_acc"] = float(np.mean([g == r["answer"] for g, r in zip(chat_out, chat, strict=False)]))

    torch.manual_seed(SEED + 100)
    sampled = generate_answers(lm, tok, convs * n_sampled_reps, do_sample=True)
    m["sampled_acc_T1"] = float(np.mean([s == a for s, a in zip(sampled, answers * n_sampled_reps, strict=False)]))

    # best-of-k with the reward model on the first n_bo8_prompts held-out prompts
    torch.manual_seed(SEED + 200)
    sub = list(range(n_bo8_prompts))
    rep_convs = [convs[i] for i in sub for _ in range(k)]
    rep_answers = [answers[i] for i in sub for _ in range(k)]
    samples = generate_answers(lm, tok, rep_convs, do_sample=True)
    correct = np.array([s == a for s, a in zip(samples, rep_answers, strict=False)])
    scores = rm_scores(
        rm, rm_tok, [[*c, {"role": "assistant", "content": s}] for c, s in zip(rep_convs, samples, strict=False)]
    )
    correct_k, scores_k = correct.reshape(-1, k), scores.reshape(-1, k)
    m["bo8_sample_acc"] = float(correct.mean())
    m["bo8_rm_acc"] = float(correct_k[np.arange(len(sub)), scores_k.argmax(1)].mean())
    m["bo8_oracle_pass_at_8"] = float(correct_k.any(1).mean())
    maj = []
    for i in range(len(sub)):
        vals, counts = np.unique(np.array(samples[i * k : (i + 1) * k], dtype=object), return_counts=True)
        maj.append(vals[counts.argmax()] == answers[i])
    m["bo8_majority_acc"] = float(np.mean(maj))
    m["rm_auc"] = auc(scores, correct)
    # RM on the full held-out set with synthetic near misses (harder than LM samples)
    rng = np.random.default_rng(SEED + 300)
    pairs = [tuple(int(x) for x in r["prompt"][len("What is ") : -1].split("+")) for r in rows]
    syn = [str(a + b) for a, b in pairs] + [str(near_miss(a, b, rng)) for a, b in pairs]
    syn_scores = rm_scores(
        rm, rm_tok, [[*c, {"role": "assistant", "content": s}] for c, s in zip(convs * 2, syn, strict=False)]
    )
    m["rm_auc_synthetic_near_miss"] = auc(syn_scores, [True] * len(rows) + [False] * len(rows))
    m["eval_seconds"] = round(time.time() - t0, 1)
    return m


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="output root (models/ and prompts/ are created inside); default: examples/",
    )
    ap.add_argument("--eval-only", action="store_true", help="only evaluate the saved artefacts")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lm-steps", type=int, default=1500)
    ap.add_argument("--lm-lr", type=float, default=3e-3)
    ap.add_argument("--label-noise", type=float, default=0.25)
    ap.add_argument("--sys-frac", type=float, default=0.1, help="fraction of batches with a system prompt")
    ap.add_argument("--rm-steps", type=int, default=1500)
    ap.add_argument("--rm-lr", type=float, default=3e-3)
    ap.add_argument("--rm-dense-weight", type=float, default=1.0)
    ap.add_argument("--rm-aux-weight", type=float, default=1.0)
    ap.add_argument("--rm-sample-prompts", type=int, default=9500)
    ap.add_argument("--rm-samples-per-prompt", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--log-every", type=int, default=100)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.use_deterministic_algorithms(True)
    out: Path = args.out
    t_start = time.time()

    if not args.eval_only:
        heldout, train_pairs = make_splits()
        assert not set(heldout) & set(train_pairs)
        write_prompts(out, heldout)
        tok = build_tokenizer()
        enc = FastEncoder(tok)
        for (a, b), system in zip(heldout[:8], [None, *TRAIN_SYSTEM_PROMPTS], strict=False):
            enc.check(a, b, str(a + b), system)
            enc.check(a, b, rm_wrong_answer(a, b, np.random.default_rng(a)), system)

        t0 = time.time()
        lm = train_lm(tok, enc, train_pairs, args)
        t_lm = time.time() - t0
        save_model(lm, tok, out / "models" / "demo-lm", generation=True)

        t0 = time.time()
        rm = train_rm(tok, enc, lm, train_pairs, args)
        t_rm = time.time() - t0
        save_model(rm, tok, out / "models" / "demo-rm", generation=False)
        print(
            f"[time] lm {t_lm:.0f}s  rm (incl. sampling) {t_rm:.0f}s  total {time.time() - t_start:.0f}s "
            f"(threads={args.threads})"
        )

    metrics = evaluate(out)
    for name in ("demo-lm", "demo-rm"):
        metrics[f"size_{name}_bytes"] = dir_size(out / "models" / name)
    metrics["total_seconds"] = round(time.time() - t_start, 1)
    print(json.dumps(metrics, indent=2))
    print(
        f"greedy acc {metrics['greedy_acc']:.1%} | sampled acc (T=1) {metrics['sampled_acc_T1']:.1%} | "
        f"best-of-8 with RM {metrics['bo8_rm_acc']:.1%} | RM AUC {metrics['rm_auc']:.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training data for fine-tuning: TRL's formats, read and checked line by line before anything queues.

Accepted lines (one format a file):

* ``sft``: ``{"messages": [...]}`` (the last message is the assistant's answer, the rest its prompt),
  ``{"prompt": str | messages, "completion": str | messages}``, Winnow's own PromptResponseScore rows
  (``{"prompt": messages, "response": {"content": ...}}``), or ``{"text": str}`` (plain language modeling).
* ``dpo``: ``{"prompt": str | messages, "chosen": str | messages, "rejected": str | messages}``.

Rows are written out normalized the way the model is served: when its tokenizer has a chat template,
every prompt becomes messages (a string is one user message, as ``/generate`` sends it) and every
answer one assistant message, so TRL applies the same template at training as serving does; without
a template, prompts and answers are plain text. Loss is on the answer only (prompt-completion).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from winnow.errors import InvalidRequest

MAX_REPORTED_ERRORS = 10
_ROLES = {"system", "user", "assistant", "tool", "developer"}


@dataclass(frozen=True)
class TrainingSet:
    path: Path
    rows: int
    sha256: str
    kind: str  # prompt-completion | text | preference


def _messages(raw: Any, what: str) -> list[dict[str, str]]:
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{what} must be a string or a non-empty list of messages")
    out = []
    for m in raw:
        if not isinstance(m, dict) or m.get("role") not in _ROLES or not isinstance(m.get("content"), str):
            raise ValueError(f"{what}: bad message {m!r} (needs role among {sorted(_ROLES)} and text content)")
        out.append({"role": "system" if m["role"] == "developer" else m["role"], "content": m["content"]})
    return out


def _turn(raw: Any, what: str) -> str | list[dict[str, str]]:
    if isinstance(raw, str):
        if not raw.strip():
            raise ValueError(f"{what} is empty")
        return raw
    return _messages(raw, what)


class Normalizer:
    """Turns accepted lines into the normalized rows of one method, chat-templated or plain."""

    def __init__(self, method: str, chat: bool) -> None:
        self.method = method
        self.chat = chat
        self.kind: str | None = None

    def _prompt(self, raw: Any) -> Any:
        turn = _turn(raw, "prompt")
        if self.chat:
            return [{"role": "user", "content": turn}] if isinstance(turn, str) else turn
        return turn if isinstance(turn, str) else "\n".join(m["content"] for m in turn)

    def _answer(self, raw: Any, what: str) -> Any:
        turn = _turn(raw, what)
        if isinstance(turn, list):
            if len(turn) != 1 or turn[0]["role"] != "assistant":
                raise ValueError(f"{what} must be one assistant message")
            text = turn[0]["content"]
        else:
            text = turn
        return [{"role": "assistant", "content": text}] if self.chat else text

    def _same_kind(self, kind: str) -> None:
        if self.kind is None:
            self.kind = kind
        elif self.kind != kind:
            raise ValueError(f"a {kind} row in a file of {self.kind} rows: use one format a file")

    def row(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise ValueError("a line must be a JSON object")
        if self.method == "dpo":
            missing = [k for k in ("prompt", "chosen", "rejected") if k not in data]
            if missing:
                raise ValueError(f"a preference row needs prompt, chosen and rejected (missing {', '.join(missing)})")
            self._same_kind("preference")
            row = {
                "prompt": self._prompt(data["prompt"]),
                "chosen": self._answer(data["chosen"], "chosen"),
                "rejected": self._answer(data["rejected"], "rejected"),
            }
            if row["chosen"] == row["rejected"]:
                raise ValueError("chosen and rejected are the same")
            return row
        if "chosen" in data or "rejected" in data:
            raise ValueError("a preference row (chosen/rejected) in an sft file: use method dpo")
        if "text" in data and not ({"messages", "prompt"} & data.keys()):
            text = data["text"]
            if not isinstance(text, str) or not text.strip():
                raise ValueError("text must be a non-empty string")
            self._same_kind("text")
            return {"text": text}
        self._same_kind("prompt-completion")
        if "messages" in data:
            messages = _messages(data["messages"], "messages")
            if messages[-1]["role"] != "assistant" or len(messages) < 2:
                raise ValueError("messages must end with the assistant's answer, after at least one prompt message")
            return {"prompt": self._prompt(messages[:-1]), "completion": self._answer(messages[-1:], "answer")}
        if "prompt" not in data:
            raise ValueError("an sft row needs messages, prompt + completion, or text")
        if "completion" in data:
            answer = data["completion"]
        elif isinstance(data.get("response"), dict) and isinstance(data["response"].get("content"), str):
            answer = data["response"]["content"]  # a PromptResponseScore row (an SDG job's output)
        else:
            raise ValueError("a prompt row needs a completion")
        return {"prompt": self._prompt(data["prompt"]), "completion": self._answer(answer, "completion")}


def _lines(source: Path | Iterable[dict[str, Any]]) -> Iterator[tuple[int, Any]]:
    if isinstance(source, Path):
        with source.open("rb") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    yield number, orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    yield number, ValueError(f"invalid JSON ({exc.msg})")
    else:
        yield from enumerate(source, 1)


def normalize(
    source: Path | Iterable[dict[str, Any]],
    method: str,
    chat: bool,
    out: Path,
    field: str,
    split: float = 0.0,
    seed: int = 0,
    split_out: Path | None = None,
) -> tuple[TrainingSet, TrainingSet | None]:
    """Check every line of ``source`` and write the normalized rows to ``out`` (and, with ``split``,
    that fraction of them, picked by ``seed``, to ``split_out``). InvalidRequest naming the first bad
    lines (nothing is written then), or when no row is left."""
    normalizer = Normalizer(method, chat)
    rows: list[bytes] = []
    errors: list[str] = []
    bad = 0
    for number, data in _lines(source):
        try:
            if isinstance(data, ValueError):
                raise data
            rows.append(orjson.dumps(normalizer.row(data)))
        except ValueError as exc:
            bad += 1
            if len(errors) < MAX_REPORTED_ERRORS:
                errors.append(f"line {number}: {exc}")
    if bad:
        raise InvalidRequest(f"{field} has {bad} invalid line(s)", "; ".join(errors))
    if not rows:
        raise InvalidRequest(f"{field} has no training rows", "the file is empty")
    held: list[bytes] = []
    if split:
        order = list(range(len(rows)))
        random.Random(seed).shuffle(order)
        take = set(order[: max(1, round(len(rows) * split))])
        if len(take) >= len(rows):
            raise InvalidRequest("validation_split leaves no training rows", f"{len(rows)} row(s)")
        held = [r for i, r in enumerate(rows) if i in take]
        rows = [r for i, r in enumerate(rows) if i not in take]
    kind = normalizer.kind or "prompt-completion"
    train = _write(rows, out, kind)
    validation = _write(held, split_out, kind) if held and split_out is not None else None
    return train, validation


def _write(rows: list[bytes], path: Path, kind: str) -> TrainingSet:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = b"".join(r + b"\n" for r in rows)
    path.write_bytes(body)
    return TrainingSet(path, len(rows), hashlib.sha256(body).hexdigest(), kind)


def check_training_file(path: Path) -> int:
    """How many rows an uploaded training file holds, or InvalidRequest naming its first bad lines:
    one format a file, sft's or dpo's (which one is said when a job uses it)."""
    found: dict[str, list[str]] = {}
    rows = 0
    for method in ("sft", "dpo"):
        normalizer = Normalizer(method, chat=False)
        errors = found.setdefault(method, [])
        rows = 0
        for number, data in _lines(path):
            try:
                if isinstance(data, ValueError):
                    raise data
                normalizer.row(data)
                rows += 1
            except ValueError as exc:
                errors.append(f"line {number}: {exc}")
        if not errors:
            break
    else:
        best = min(found.values(), key=len)
        raise InvalidRequest(f"Not a training file: {len(best)} invalid line(s)", "; ".join(best[:MAX_REPORTED_ERRORS]))
    if not rows:
        raise InvalidRequest("The training file has no rows", "the file is empty")
    return rows


def read_rows(path: Path) -> list[dict[str, Any]]:
    with path.open("rb") as handle:
        return [orjson.loads(line) for line in handle if line.strip()]

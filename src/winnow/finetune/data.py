"""Training data for fine-tuning: TRL's formats, read, checked and written line by line (one line in
memory at a time, each at most ``fine_tuning_max_line_bytes``).

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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from winnow.errors import InvalidRequest

MAX_REPORTED_ERRORS = 10
DEFAULT_MAX_LINE_BYTES = 8 << 20  # the setting fine_tuning_max_line_bytes
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

    def _preference(self, data: dict[str, Any]) -> dict[str, Any]:
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

    def row(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise ValueError("a line must be a JSON object")
        if self.method == "dpo":
            return self._preference(data)
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


class LineErrors:
    """The bad lines of a file: how many, and the first few named (a file of bad lines costs no memory)."""

    def __init__(self) -> None:
        self.count = 0
        self.shown: list[str] = []

    def add(self, number: int, exc: ValueError) -> None:
        self.count += 1
        if len(self.shown) < MAX_REPORTED_ERRORS:
            self.shown.append(f"line {number}: {exc}")

    def details(self) -> str:
        more = self.count - len(self.shown)
        return "; ".join(self.shown) + (f" (and {more} more)" if more > 0 else "")


def file_lines(path: Path, max_line_bytes: int) -> Iterator[tuple[int, Any]]:
    """A file's lines as parsed JSON (or the ValueError saying what is wrong), never holding more
    than ``max_line_bytes`` of one line: a longer line is skipped unread and named."""
    with path.open("rb") as handle:
        number = 0
        while line := handle.readline(max_line_bytes + 1):
            number += 1
            if len(line) > max_line_bytes and not line.endswith(b"\n"):
                while (rest := handle.readline(1 << 20)) and not rest.endswith(b"\n"):
                    pass
                yield number, ValueError(f"longer than {max_line_bytes} bytes (setting fine_tuning_max_line_bytes)")
                continue
            if not line.strip():
                continue
            try:
                yield number, orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                yield number, ValueError(f"invalid JSON ({exc.msg})")


def _lines(source: Path | Iterable[dict[str, Any]], max_line_bytes: int) -> Iterator[tuple[int, Any]]:
    if isinstance(source, Path):
        yield from file_lines(source, max_line_bytes)
    else:
        yield from enumerate(source, 1)


class _Writer:
    """Normalized rows appended to a file as they come, hashed and counted on the way."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.handle = path.open("wb")
        self.digest = hashlib.sha256()
        self.rows = 0

    def write(self, line: bytes) -> None:
        self.handle.write(line)
        self.digest.update(line)
        self.rows += 1

    def close(self, kind: str) -> TrainingSet:
        self.handle.close()
        return TrainingSet(self.path, self.rows, self.digest.hexdigest(), kind)


@dataclass(frozen=True)
class Holdout:
    """The fraction of the rows held out for validation, picked by ``seed``, and where they go."""

    fraction: float
    seed: int
    out: Path


def normalize(
    source: Path | Iterable[dict[str, Any]],
    method: str,
    chat: bool,
    out: Path,
    field: str,
    holdout: Holdout | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    tick: Callable[[int], None] | None = None,
) -> tuple[TrainingSet, TrainingSet | None]:
    """Check every line of ``source`` and write the normalized rows to ``out`` (and, with a
    ``holdout``, that fraction of them to its file), streaming: one line in memory at a
    time. InvalidRequest naming the first bad lines and their count (nothing is written then), or
    when no row is left. ``tick`` is called with each line's number (it may raise to stop the work:
    a cancelled job; keep it cheap)."""
    normalizer = Normalizer(method, chat)
    errors = LineErrors()
    checked = _Writer(out.with_name(out.name + ".checked"))
    try:
        for number, data in _lines(source, max_line_bytes):
            if tick is not None:
                tick(number)
            try:
                if isinstance(data, ValueError):
                    raise data
                row = orjson.dumps(normalizer.row(data)) + b"\n"
            except ValueError as exc:
                errors.add(number, exc)
                continue
            if not errors.count:
                checked.write(row)
        whole = checked.close(normalizer.kind or "prompt-completion")
        if errors.count:
            raise InvalidRequest(f"{field} has {errors.count} invalid line(s)", errors.details())
        if not whole.rows:
            raise InvalidRequest(f"{field} has no training rows", "the file is empty")
        if holdout is None or not holdout.fraction:
            whole.path.replace(out)
            return TrainingSet(out, whole.rows, whole.sha256, whole.kind), None
        return _split(whole, out, holdout, tick)
    finally:
        checked.handle.close()
        checked.path.unlink(missing_ok=True)


def _split(
    whole: TrainingSet, out: Path, holdout: Holdout, tick: Callable[[int], None] | None
) -> tuple[TrainingSet, TrainingSet]:
    """Hold out ``holdout.fraction`` of the rows, chosen by its seed, in one more streaming pass:
    selection sampling (Knuth's algorithm S) picks exactly that many without a list of the rows."""
    held = max(1, round(whole.rows * holdout.fraction))
    if held >= whole.rows:
        raise InvalidRequest("validation_split leaves no training rows", f"{whole.rows} row(s)")
    rng = random.Random(holdout.seed)
    train, validation = _Writer(out), _Writer(holdout.out)
    try:
        with whole.path.open("rb") as rows:
            for index, line in enumerate(rows):
                if tick is not None:
                    tick(index)
                if rng.random() * (whole.rows - index) < held - validation.rows:
                    validation.write(line)
                else:
                    train.write(line)
    finally:
        train.handle.close()
        validation.handle.close()
    return train.close(whole.kind), validation.close(whole.kind)


def check_training_file(path: Path, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> int:
    """How many rows an uploaded training file holds, or InvalidRequest naming its first bad lines:
    one format a file, sft's or dpo's (which one is said when a job uses it). Streams: one line in
    memory at a time."""
    found: list[LineErrors] = []
    rows = 0
    for method in ("sft", "dpo"):
        normalizer = Normalizer(method, chat=False)
        errors = LineErrors()
        rows = 0
        for number, data in file_lines(path, max_line_bytes):
            try:
                if isinstance(data, ValueError):
                    raise data
                normalizer.row(data)
                rows += 1
            except ValueError as exc:
                errors.add(number, exc)
        if not errors.count:
            break
        found.append(errors)
    else:
        best = min(found, key=lambda e: e.count)
        raise InvalidRequest(f"Not a training file: {best.count} invalid line(s)", best.details())
    if not rows:
        raise InvalidRequest("The training file has no rows", "the file is empty")
    return rows


def read_rows(path: Path) -> list[dict[str, Any]]:
    with path.open("rb") as handle:
        return [orjson.loads(line) for line in handle if line.strip()]

"""Prompt files: where they may live, how their lines read, and a streaming validation pass.

A line is ``{"id": ..., "prompt": "text"}``, ``{"id": ..., "messages": [Message, ...]}``, or an
OpenAI batch line ``{"custom_id": ..., "body": {"messages": [...]}}``. Every other field (e.g.
``answer``) is carried along for scoring functions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from winnow.errors import InvalidRequest
from winnow.sdg.rows import PromptRow, user_prompt
from winnow.usage.tokens import PromptTokens

MAX_REPORTED_ERRORS = 10
TOKEN_BATCH = 256  # prompts per tokenizer call while validating
_ROLES = {"system", "user", "assistant", "ipython", "tool", "developer"}


def resolve_inside(path: str, roots: list[Path], field: str = "prompts_path") -> Path:
    """``path`` (relative to the first root, or absolute) resolved with symlinks, if inside a root."""
    if "\x00" in path:  # the OS refuses such a name; say so instead of failing on it
        raise InvalidRequest(f"{field} contains a NUL character", repr(path))
    candidate = Path(path).expanduser()
    if not candidate.is_absolute():
        candidate = roots[0] / candidate
    resolved = candidate.resolve()
    for root in roots:
        if resolved.is_relative_to(root.resolve()):
            return resolved
    raise InvalidRequest(
        f"{field} is outside the allowed data directories",
        f"{path!r} resolves outside {', '.join(str(r) for r in roots)}",
    )


def _messages(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise ValueError("messages must be a non-empty list")
    out = []
    for m in raw:
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            raise ValueError(f"bad message {m!r}: needs a role among {sorted(_ROLES)}")
        content = m.get("content")
        if isinstance(content, list):  # OpenAI content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise ValueError(f"message content must be text, got {type(content).__name__}")
        role = "system" if m["role"] == "developer" else m["role"]
        out.append({**m, "role": role, "content": content})
    if not any(m["content"].strip() for m in out if m["role"] == "user"):
        raise ValueError("empty prompt: no user message with text")
    return out


def parse_line(text: str, line: int, system_prompt: str | None = None) -> PromptRow:
    """One JSONL line as a PromptRow, or ValueError saying what is wrong with it."""
    try:  # orjson, as for request bodies: lone surrogates ("\ud800") are invalid JSON, not a failed job later
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise ValueError("a line must be a JSON object")
    fields = dict(data)
    ident = fields.pop("id", None)
    if ident is None and "custom_id" in fields:  # OpenAI batch file line
        ident = fields.pop("custom_id")
        body = fields.pop("body", None)
        if not isinstance(body, dict) or "messages" not in body:
            raise ValueError("OpenAI batch line without body.messages")
        fields.pop("method", None)
        fields.pop("url", None)
        return PromptRow(str(ident), _messages(body["messages"]), fields, line)
    if ident is None or (isinstance(ident, str) and not ident.strip()):
        raise ValueError("missing id")
    if not isinstance(ident, (str, int)):
        raise ValueError("id must be a string or an integer")
    if "messages" in fields:
        messages = _messages(fields.pop("messages"))
        if system_prompt and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": system_prompt}, *messages]
        return PromptRow(str(ident), messages, fields, line)
    prompt = fields.pop("prompt", None)
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("empty or missing prompt")
    return PromptRow(str(ident), user_prompt(prompt, system_prompt), fields, line)


def read_rows(path: Path, system_prompt: str | None = None, skip: int = 0) -> Iterator[PromptRow]:
    """The file's prompt rows in order (blank lines ignored), after the first ``skip`` rows."""
    seen = 0
    with path.open(encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            seen += 1
            if seen <= skip:
                continue
            yield parse_line(text, number, system_prompt)


@dataclass(frozen=True)
class PromptFile:
    path: Path
    rows: int
    size: int
    sha256: str
    input_tokens: int | None = None  # every prompt's input tokens, when checked against a model


def validate_file(path: Path, tokens: PromptTokens | None = None, system_prompt: str | None = None) -> PromptFile:
    """One streaming pass: every line parses, ids are present and unique, and, given the model's
    token counter, every prompt (with ``system_prompt``) fits the model's context; the prompts are
    tokenized ``TOKEN_BATCH`` at a time. InvalidRequest lists the first errors with line numbers.
    Memory: one set of ids and one batch of prompts."""
    if not path.is_file():
        raise InvalidRequest("prompts_path does not exist", str(path))
    errors: list[tuple[int, str]] = []
    ids: set[str] = set()
    rows = 0
    input_tokens = 0
    batch: list[PromptRow] = []
    digest = hashlib.sha256()

    def measure(counter: PromptTokens) -> None:
        nonlocal input_tokens
        for row, counted in zip(batch, counter.measure([r.chat() for r in batch]), strict=True):
            if isinstance(counted, InvalidRequest):
                reason = f"{counted.message} ({counted.details})" if counted.details else counted.message
                errors.append((row.line, reason[:1].lower() + reason[1:]))
            else:
                input_tokens += counted
        batch.clear()

    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            digest.update(raw)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                errors.append((number, "not UTF-8"))
                continue
            if not text.strip():
                continue
            try:
                row = parse_line(text, number, system_prompt)
            except ValueError as exc:
                errors.append((number, str(exc)))
                continue
            if row.id in ids:
                errors.append((number, f"duplicate id {row.id!r}"))
            ids.add(row.id)
            rows += 1
            if tokens is not None:
                batch.append(row)
                if len(batch) == TOKEN_BATCH:
                    measure(tokens)
    if tokens is not None and batch:
        measure(tokens)
    if errors:
        errors.sort(key=lambda error: error[0])
        shown = "; ".join(f"line {number}: {reason}" for number, reason in errors[:MAX_REPORTED_ERRORS])
        more = f" (and {len(errors) - MAX_REPORTED_ERRORS} more)" if len(errors) > MAX_REPORTED_ERRORS else ""
        raise InvalidRequest(f"prompts file has {len(errors)} invalid line(s)", shown + more)
    if rows == 0:
        raise InvalidRequest("prompts file has no prompts", str(path))
    counted = input_tokens if tokens is not None else None
    return PromptFile(path, rows, path.stat().st_size, digest.hexdigest(), counted)

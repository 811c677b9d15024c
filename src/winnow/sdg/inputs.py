"""Prompt files: how their lines read, a streaming validation pass, and a worker's cache of the
files it has checked. (Where they may live: ``winnow.auth.paths``.)

A line is ``{"id": ..., "prompt": "text"}``, ``{"id": ..., "messages": [Message, ...]}``, or an
OpenAI batch line ``{"custom_id": ..., "body": {"messages": [...]}}``. Every other field (e.g.
``answer``) is carried along for scoring functions.
"""

from __future__ import annotations

import asyncio
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


def _parsed(raw: bytes, number: int, system_prompt: str | None, errors: list[tuple[int, str]]) -> PromptRow | None:
    """Line ``number`` as a prompt row; None for a blank line, or a bad one (then its error is in ``errors``)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        errors.append((number, "not UTF-8"))
        return None
    if not text.strip():
        return None
    try:
        return parse_line(text, number, system_prompt)
    except ValueError as exc:
        errors.append((number, str(exc)))
        return None


def _measure(batch: list[PromptRow], counter: PromptTokens, errors: list[tuple[int, str]]) -> int:
    """The input tokens of a batch of prompts (emptied); a prompt that does not fit goes to ``errors``."""
    total = 0
    for row, counted in zip(batch, counter.measure([r.chat() for r in batch]), strict=True):
        if isinstance(counted, InvalidRequest):
            reason = f"{counted.message} ({counted.details})" if counted.details else counted.message
            errors.append((row.line, reason[:1].lower() + reason[1:]))
        else:
            total += counted
    batch.clear()
    return total


def _invalid_lines(errors: list[tuple[int, str]]) -> InvalidRequest:
    errors.sort(key=lambda error: error[0])
    shown = "; ".join(f"line {number}: {reason}" for number, reason in errors[:MAX_REPORTED_ERRORS])
    more = f" (and {len(errors) - MAX_REPORTED_ERRORS} more)" if len(errors) > MAX_REPORTED_ERRORS else ""
    return InvalidRequest(f"prompts file has {len(errors)} invalid line(s)", shown + more)


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

    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            digest.update(raw)
            row = _parsed(raw, number, system_prompt, errors)
            if row is None:
                continue
            if row.id in ids:
                errors.append((number, f"duplicate id {row.id!r}"))
            ids.add(row.id)
            rows += 1
            if tokens is not None:
                batch.append(row)
                if len(batch) == TOKEN_BATCH:
                    input_tokens += _measure(batch, tokens, errors)
    if tokens is not None and batch:
        input_tokens += _measure(batch, tokens, errors)
    if errors:
        raise _invalid_lines(errors)
    if rows == 0:
        raise InvalidRequest("prompts file has no prompts", str(path))
    counted = input_tokens if tokens is not None else None
    return PromptFile(path, rows, path.stat().st_size, digest.hexdigest(), counted)


class CheckedFiles:
    """The input files a worker has checked against the hash taken at submit: in full the first time
    the worker meets a file, then only while its size and mtime stay the same (a worker runs many
    shards of one job; re-hashing the whole file for each would cost shards x file)."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[tuple[int, int], PromptFile]] = {}  # sha256 -> (size, mtime), file

    async def check(self, path: Path, sha256: str, what: tuple[str, str]) -> PromptFile:
        """The file at ``path``, which must still hash to ``sha256``; ``what`` names the file and the
        job in the error ("the dataset", "evaluation")."""
        stat = path.stat()
        seen = self._seen.get(sha256)
        if seen is not None and seen[0] == (stat.st_size, stat.st_mtime_ns):
            return seen[1]
        prompts = await asyncio.to_thread(validate_file, path)
        if prompts.sha256 != sha256:
            raise ValueError(f"{what[0]} changed since the {what[1]} was submitted")
        self._seen[sha256] = ((stat.st_size, stat.st_mtime_ns), prompts)
        return prompts

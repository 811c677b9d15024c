"""Prompt files: where they may live, how their lines read, and a streaming validation pass.

A line is ``{"id": ..., "prompt": "text"}``, ``{"id": ..., "messages": [Message, ...]}``, or an
OpenAI batch line ``{"custom_id": ..., "body": {"messages": [...]}}``. Every other field (e.g.
``answer``) is carried along for scoring functions.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from winnow.errors import InvalidRequest
from winnow.sdg.rows import PromptRow, user_prompt

MAX_REPORTED_ERRORS = 10
_ROLES = {"system", "user", "assistant", "ipython", "tool", "developer"}


def resolve_inside(path: str, roots: list[Path], field: str = "prompts_path") -> Path:
    """``path`` (relative to the first root, or absolute) resolved with symlinks, if inside a root."""
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
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
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


def validate_file(path: Path) -> PromptFile:
    """One streaming pass: every line parses, ids are present and unique. InvalidRequest lists the
    first errors with line numbers. Memory: one set of ids, never the prompts."""
    if not path.is_file():
        raise InvalidRequest("prompts_path does not exist", str(path))
    errors: list[str] = []
    ids: set[str] = set()
    rows = 0
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            digest.update(raw)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                errors.append(f"line {number}: not UTF-8")
                continue
            if not text.strip():
                continue
            try:
                row = parse_line(text, number)
            except ValueError as exc:
                errors.append(f"line {number}: {exc}")
                continue
            if row.id in ids:
                errors.append(f"line {number}: duplicate id {row.id!r}")
            ids.add(row.id)
            rows += 1
    if errors:
        shown = "; ".join(errors[:MAX_REPORTED_ERRORS])
        more = f" (and {len(errors) - MAX_REPORTED_ERRORS} more)" if len(errors) > MAX_REPORTED_ERRORS else ""
        raise InvalidRequest(f"prompts file has {len(errors)} invalid line(s)", shown + more)
    if rows == 0:
        raise InvalidRequest("prompts file has no prompts", str(path))
    return PromptFile(path, rows, path.stat().st_size, digest.hexdigest())

"""Pages of a job's output JSONL, read by byte offset: a page costs its own bytes, whatever the
file's size, so a 100k-row output pages as fast as a 10-row one. Rows come in the order the job
wrote them; nothing here sorts the whole file (that would read all of it per page)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from winnow.errors import InvalidRequest
from winnow.sdg.inputs import parse_line

MAX_PAGE_BYTES = 8 << 20  # one page never reads more than this, however long its rows


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    offset: int
    next_offset: int | None  # None: the page ends at the end of the file
    size_bytes: int


def read_page(path: Path, offset: int, limit: int) -> Page:
    """Up to ``limit`` rows starting at byte ``offset``, which must be 0 or just after a newline
    (a ``next_offset`` this function returned)."""
    with path.open("rb") as f:
        size = f.seek(0, 2)
        if offset > size:
            raise InvalidRequest("offset is past the end of the output", f"offset={offset}, size={size}")
        if offset > 0:
            f.seek(offset - 1)
            if f.read(1) != b"\n":
                raise InvalidRequest("offset is not the start of a row", "use 0 or a next_offset from a previous page")
        f.seek(offset)
        rows: list[dict[str, Any]] = []
        read = 0
        while len(rows) < limit and read < MAX_PAGE_BYTES:
            line = f.readline()
            if not line:
                break
            read += len(line)
            if line.strip():
                rows.append(orjson.loads(line))
        end = offset + read
    return Page(rows=rows, offset=offset, next_offset=end if end < size else None, size_bytes=size)


def references(prompts: Path, ids: set[str]) -> dict[str, dict[str, Any]]:
    """The other fields (e.g. ``answer``) of the prompts with these ids, read from the job's prompts
    file until all are found: what a reviewer compares a response with. A file gone since the job ran
    gives none."""
    found: dict[str, dict[str, Any]] = {}
    if not ids or not prompts.is_file():
        return found
    with prompts.open(encoding="utf-8", errors="replace") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                row = parse_line(text, number)
            except ValueError:
                continue  # (the file was checked at submit; a line changed since is skipped)
            if row.id in ids:
                found[row.id] = row.fields
                if len(found) == len(ids):
                    break
    return found

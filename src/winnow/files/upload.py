"""Receive a multipart upload straight to disk, counting as it goes: past ``cap`` bytes of file data
the upload stops (413) and the partial file is removed, so a huge upload never fills the disk. It
runs after the key is known, unlike a form parameter, which FastAPI reads in full beforehand."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from winnow.errors import InvalidRequest, PayloadTooLarge
from winnow.files.service import FileService, quota_exceeded

FILE_FIELD = "file"
_MAX_FIELD_BYTES = 1024
_MAX_PARTS = 16


@dataclass
class ReceivedUpload:
    filename: str
    size: int
    fields: dict[str, str] = field(default_factory=dict)


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    data: bytearray = field(default_factory=bytearray)


class _Collector:
    """python-multipart's callbacks: the file part's data queued for writing, small fields kept."""

    def __init__(self, cap: int, over_cap: Callable[[int], PayloadTooLarge]) -> None:
        self.cap = cap
        self.over_cap = over_cap
        self.part = _Part()
        self.parts = 0
        self.header_name = b""
        self.header_value = b""
        self.disposition = b""
        self.pending: list[bytes] = []
        self.size = 0
        self.filename: str | None = None
        self.fields: dict[str, str] = {}

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > _MAX_PARTS:
            raise InvalidRequest("Invalid multipart body", f"more than {_MAX_PARTS} parts")
        self.part = _Part()
        self.disposition = b""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        if self.header_name.lower() == b"content-disposition":
            self.disposition = self.header_value
        self.header_name = self.header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        if b"name" not in options:
            raise InvalidRequest("Invalid multipart body", 'a part without a Content-Disposition "name"')
        self.part.name = options[b"name"].decode("utf-8", "replace")
        if b"filename" in options:
            if self.part.name != FILE_FIELD or self.filename is not None:
                raise InvalidRequest("Invalid multipart body", f"one file, in the {FILE_FIELD!r} field")
            self.part.filename = self.filename = options[b"filename"].decode("utf-8", "replace")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.part.filename is not None:
            self.size += end - start
            if self.size > self.cap:
                raise self.over_cap(self.size)
            self.pending.append(data[start:end])
        else:
            self.part.data += data[start:end]
            if len(self.part.data) > _MAX_FIELD_BYTES:
                raise InvalidRequest(
                    "Invalid multipart body", f"{self.part.name}: longer than {_MAX_FIELD_BYTES} bytes"
                )

    def on_part_end(self) -> None:
        if self.part.filename is None:
            self.fields[self.part.name] = self.part.data.decode("utf-8", "replace")


async def receive_upload(
    request: Request, target: Path, cap: int, over_cap: Callable[[int], PayloadTooLarge]
) -> ReceivedUpload:
    """Write the body's ``file`` part to ``target`` (its folder made) and return it with the other
    fields; ``over_cap(bytes so far)`` is raised once the file passes ``cap`` bytes, and on any error
    ``target`` is removed."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or not params.get(b"boundary"):
        raise InvalidRequest("Invalid request body", "expected multipart/form-data with a file field")
    collector = _Collector(cap, over_cap)
    parser = MultipartParser(
        params[b"boundary"],
        {
            "on_part_begin": collector.on_part_begin,
            "on_part_data": collector.on_part_data,
            "on_part_end": collector.on_part_end,
            "on_header_field": collector.on_header_field,
            "on_header_value": collector.on_header_value,
            "on_header_end": collector.on_header_end,
            "on_headers_finished": collector.on_headers_finished,
        },
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    out: BinaryIO = await run_in_threadpool(target.open, "wb")
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            if collector.pending:
                await run_in_threadpool(out.writelines, collector.pending)
                collector.pending = []
        parser.finalize()
        await run_in_threadpool(_sync, out)
    except FormParserError as exc:
        await run_in_threadpool(_discard, out, target)
        raise InvalidRequest("Invalid multipart body", str(exc)) from exc
    except BaseException:
        await run_in_threadpool(_discard, out, target)
        raise
    if collector.filename is None:
        target.unlink(missing_ok=True)
        raise InvalidRequest("Invalid request parameters", f"{FILE_FIELD}: Field required")
    return ReceivedUpload(collector.filename, collector.size, collector.fields)


def upload_form(purpose: dict[str, Any], required: tuple[str, ...] = (FILE_FIELD,)) -> dict[str, Any]:
    """The OpenAPI request body of a route that reads its upload with ``receive_upload`` (FastAPI
    cannot describe it: it would read a Form/UploadFile body in full before the route runs)."""
    file = {"type": "string", "format": "binary", "description": "A JSONL file"}
    schema = {"type": "object", "required": list(required), "properties": {FILE_FIELD: file, "purpose": purpose}}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


@dataclass
class StagedUpload:
    """An upload received under a new file id, as ``<id>.jsonl.part``, for ``FileService.add``."""

    file_id: str
    part: Path
    received: ReceivedUpload


async def stage_upload(request: Request, files: FileService, key_id: int) -> StagedUpload:
    """Receive ``request``'s upload for the key under a new file id, stopping at the key's quota."""
    used, quota = await run_in_threadpool(files.usage, key_id)
    file_id, target = files.new_file(key_id)
    part = target.with_name(target.name + ".part")
    received = await receive_upload(request, part, quota - used, lambda _: quota_exceeded(used, quota))
    return StagedUpload(file_id, part, received)


def _sync(out: BinaryIO) -> None:
    out.flush()
    os.fsync(out.fileno())
    out.close()


def _discard(out: BinaryIO, target: Path) -> None:
    out.close()
    target.unlink(missing_ok=True)

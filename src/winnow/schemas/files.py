"""Wire models of ``/api/v1/files``: a key's uploaded files (prompts, training data), whose
``path`` a job names, listed a page at a time as OpenAI's lists are."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from winnow.schemas.common import Timestamp, WireModel

FilePurpose = Literal["prompts", "fine-tune"]


class FileInfo(WireModel):
    id: str
    object: Literal["file"] = "file"
    filename: str
    purpose: str = Field(description="prompts, fine-tune, or unknown for an upload made before uploads were recorded")
    bytes: int
    rows: int
    path: str
    created_at: Timestamp


class FileList(WireModel):
    """The key's files, newest first; ``after`` the last id of a page gives the next one."""

    object: Literal["list"] = "list"
    data: list[FileInfo]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None
    used_bytes: int = Field(description="Bytes of all the key's files")
    quota_bytes: int = Field(description="Bytes the key may keep; an upload past it is a 413")


class FileDeleted(WireModel):
    id: str
    object: Literal["file"] = "file"
    deleted: Literal[True] = True

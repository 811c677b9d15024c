"""Wire models of ``/v1/files``: a key's files in OpenAI's shapes (``OpenAIFile``, its list and its
deletion), over the same store as ``/api/v1/files``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from winnow.schemas.common import WireModel
from winnow.schemas.files import FileInfo


class OpenAIFile(WireModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int = Field(description="Unix seconds")
    filename: str
    purpose: str = Field(description="batch, fine-tune, batch_output, user_data (prompts: uploaded on /api/v1)")
    status: Literal["processed"] = Field("processed", description="Every stored file was checked at upload")

    @classmethod
    def of(cls, info: FileInfo) -> OpenAIFile:
        return cls(
            id=info.id,
            bytes=info.bytes,
            created_at=int(info.created_at.timestamp()),
            filename=info.filename,
            purpose=info.purpose,
        )


class OpenAIFileList(WireModel):
    object: Literal["list"] = "list"
    data: list[OpenAIFile]
    first_id: str | None
    last_id: str | None
    has_more: bool


class OpenAIFileDeleted(WireModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True

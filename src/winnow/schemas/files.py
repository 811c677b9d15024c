"""Wire model of ``POST /api/v1/files``: an uploaded prompts file, whose ``path`` a job names."""

from __future__ import annotations

from winnow.schemas.common import Timestamp, WireModel


class FileInfo(WireModel):
    id: str
    filename: str
    bytes: int
    rows: int
    path: str
    created_at: Timestamp

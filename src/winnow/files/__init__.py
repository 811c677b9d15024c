"""A key's uploaded files: where they are kept, what they cost against the key's quota, listing and
deleting them. The HTTP routes, the CLI and the console share it (and, later, OpenAI's /v1/files)."""

from winnow.files.service import FileService
from winnow.files.upload import StagedUpload, receive_upload, stage_upload

__all__ = ["FileService", "StagedUpload", "receive_upload", "stage_upload"]

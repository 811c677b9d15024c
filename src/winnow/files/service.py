"""``FileService``: uploads kept under ``<data dir>/files/<key id>/<file id>.jsonl``, one row each in
the ``files`` table, counted against the key's storage quota until their owner deletes them."""

from __future__ import annotations

import logging
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from winnow.config import Settings
from winnow.db import ApiKey, Database, StoredFile
from winnow.db.paging import Cursor, keyset_page
from winnow.errors import InvalidRequest, NotFound, PayloadTooLarge
from winnow.files.batch import check_batch_file
from winnow.finetune.data import check_training_file
from winnow.schemas.files import FileDeleted, FileInfo, FileList
from winnow.sdg.inputs import validate_file

log = logging.getLogger(__name__)

PURPOSES = ("prompts", "fine-tune")  # /api/v1/files
OPENAI_PURPOSES = ("batch", "fine-tune", "batch_output", "user_data")  # /v1/files


def _info(row: StoredFile) -> FileInfo:
    return FileInfo(
        id=row.id,
        filename=row.filename,
        purpose=row.purpose,
        bytes=row.bytes,
        rows=row.rows,
        path=row.path,
        created_at=row.created_at,
    )


def quota_exceeded(used: int, quota: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        "Storage quota exceeded",
        f"the key keeps {used} of its {quota} bytes of files and this upload needs more than the "
        f"{max(quota - used, 0)} left: delete files it no longer needs (DELETE /api/v1/files/{{id}}) "
        "or ask an admin to raise its quota",
    )


class FileService:
    """Record, count, list and delete a key's uploads."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self._adopted: set[int] = set()
        self._lock = threading.Lock()

    def folder(self, key_id: int) -> Path:
        return self.settings.data_dir / "files" / str(key_id)

    def new_file(self, key_id: int) -> tuple[str, Path]:
        """A fresh file id and where its upload goes."""
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        return file_id, self.folder(key_id) / f"{file_id}.jsonl"

    def usage(self, key_id: int) -> tuple[int, int]:
        """(bytes the key's files take, the key's quota)."""
        self._adopt(key_id)
        with self.db.session() as session:
            return self._used(session, key_id), self._quota(session, key_id)

    def add(
        self,
        key_id: int,
        file_id: str,
        part: Path,
        filename: str,
        purpose: str,
        purposes: tuple[str, ...] = PURPOSES,
    ) -> FileInfo:
        """Check the received ``part`` as a ``purpose`` file (one of ``purposes``), give it its final
        name and record it, or remove it and raise (InvalidRequest for its content, PayloadTooLarge
        past the quota)."""
        target = part.with_name(f"{file_id}.jsonl")
        try:
            if purpose not in purposes:
                raise InvalidRequest(
                    "Invalid purpose", f"purpose: {purpose!r}; expected one of {', '.join(purposes)}", param="purpose"
                )
            size = part.stat().st_size
            rows = self._rows(part, purpose)
            part.replace(target)
            with self.db.session() as session:
                # The key's row is locked (PostgreSQL), so two uploads cannot both take the last bytes.
                session.scalars(select(ApiKey.id).where(ApiKey.id == key_id).with_for_update()).first()
                used, quota = self._used(session, key_id), self._quota(session, key_id)
                if used + size > quota:
                    raise quota_exceeded(used, quota)
                row = StoredFile(
                    id=file_id,
                    key_id=key_id,
                    filename=filename[:255],
                    purpose=purpose,
                    bytes=size,
                    rows=rows,
                    path=str(target),
                    created_at=datetime.now(UTC),
                )
                session.add(row)
                session.flush()
                return _info(row)
        except BaseException:
            part.unlink(missing_ok=True)
            target.unlink(missing_ok=True)
            raise

    def _rows(self, part: Path, purpose: str) -> int:
        """The rows of a ``purpose`` file, checked as that purpose wants (InvalidRequest otherwise)."""
        limit = self.settings.fine_tuning_max_line_bytes
        if purpose == "fine-tune":
            return check_training_file(part, limit)
        if purpose == "batch":
            return check_batch_file(part, limit)
        if purpose == "prompts":
            return validate_file(part).rows
        with part.open("rb") as handle:  # user_data, batch_output: kept as they are
            return sum(1 for line in handle if line.strip())

    def list(
        self,
        key_id: int,
        *,
        limit: int = 100,
        after: str | None = None,
        purpose: str | None = None,
        ascending: bool = False,
    ) -> FileList:
        """The key's files, newest first (oldest first if ``ascending``), ``limit`` a page, only
        ``purpose``'s if given; ``after``: the page after that file."""
        self._adopt(key_id)
        filters = [] if purpose is None else [StoredFile.purpose == purpose]
        cursor = Cursor(limit=limit, after=after)
        with self.db.session() as session:
            scope = [StoredFile.key_id == key_id]
            page = keyset_page(session, StoredFile, scope=scope, filters=filters, cursor=cursor, ascending=ascending)
            return FileList(
                data=[_info(row) for row in page.rows],
                **page.cursor(),
                used_bytes=self._used(session, key_id),
                quota_bytes=self._quota(session, key_id),
            )

    def get(self, key_id: int, file_id: str) -> FileInfo:
        """The key's file; another key's file is NotFound, as is one that never was."""
        with self.db.session() as session:
            row = session.get(StoredFile, file_id)
            if row is None or row.key_id != key_id:
                raise NotFound("No file with this id", f"id={file_id!r}", param="file_id")
            return _info(row)

    def delete(self, key_id: int, file_id: str) -> FileDeleted:
        """Forget the key's file and remove it from disk (a job that has yet to read it fails then)."""
        with self.db.session() as session:
            row = session.get(StoredFile, file_id)
            if row is None or row.key_id != key_id:
                raise NotFound("No file with this id", f"id={file_id!r}", param="file_id")
            path = Path(row.path)
            session.delete(row)
        path.unlink(missing_ok=True)
        return FileDeleted(id=file_id)

    def _used(self, session: Session, key_id: int) -> int:
        total = session.scalar(select(func.coalesce(func.sum(StoredFile.bytes), 0)).where(StoredFile.key_id == key_id))
        return int(total or 0)

    def _quota(self, session: Session, key_id: int) -> int:
        own = session.scalar(select(ApiKey.storage_quota_bytes).where(ApiKey.id == key_id))
        return self.settings.storage_quota_bytes if own is None else int(own)

    def _adopt(self, key_id: int) -> None:
        """Record the key's uploads made before uploads were recorded (purpose ``unknown``), once per
        process, so they count against its quota and can be listed and deleted."""
        with self._lock:
            if key_id in self._adopted:
                return
            self._adopted.add(key_id)
        folder = self.folder(key_id)
        if not folder.is_dir():
            return
        with self.db.session() as session:
            known = set(session.scalars(select(StoredFile.id).where(StoredFile.key_id == key_id)))
        for path in sorted(folder.glob("file-*.jsonl")):
            if path.stem in known or not path.is_file():
                continue
            stat = path.stat()
            with path.open("rb") as handle:
                rows = sum(1 for line in handle if line.strip())
            try:
                with self.db.session() as session:
                    session.add(
                        StoredFile(
                            id=path.stem,
                            key_id=key_id,
                            filename=path.name,
                            purpose="unknown",
                            bytes=stat.st_size,
                            rows=rows,
                            path=str(path),
                            created_at=datetime.fromtimestamp(stat.st_mtime, UTC),
                        )
                    )
            except IntegrityError:
                continue  # another process adopted it first
            log.info("adopted an upload made before uploads were recorded: %s (%d bytes)", path, stat.st_size)

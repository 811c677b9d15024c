"""Reading the request log: a key's own calls (an admin's: everyone's), filtered, a page at a time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select

from winnow.auth import Principal
from winnow.db import ApiKey, Database
from winnow.db.paging import Cursor, keyset_page
from winnow.errors import InvalidRequest, NotFound
from winnow.requests.log import RequestLog
from winnow.requests.table import RequestRecord
from winnow.schemas.requests import RequestDetail, RequestList, RequestSummary


@dataclass(frozen=True)
class RequestFilter:
    key: str | None = None  # a key's name (admin only)
    model: str | None = None
    status: str | None = None  # ok (< 400), error (>= 400), or one status code
    since: datetime | None = None
    until: datetime | None = None
    text: str | None = None  # in the stored bodies


def _status(value: str) -> Any:
    column = RequestRecord.status
    if value == "ok":
        return column < 400
    if value == "error":
        return column >= 400
    if value.isdigit() and len(value) == 3:
        return column == int(value)
    raise InvalidRequest("status is ok, error or an HTTP status code", f"status={value!r}", param="status")


class RequestQuery:
    def __init__(self, db: Database, log: RequestLog) -> None:
        self.db = db
        self.log = log

    def _names(self, key_ids: set[int | None]) -> dict[int | None, str]:
        ids = [i for i in key_ids if i is not None]
        if not ids:
            return {}
        with self.db.session() as session:
            return dict(session.execute(select(ApiKey.id, ApiKey.name).where(ApiKey.id.in_(ids))).tuples().all())

    def _key_id(self, name: str) -> int:
        with self.db.session() as session:
            found = session.scalar(
                select(ApiKey.id).where(ApiKey.name == name).order_by(ApiKey.revoked_at.is_not(None), ApiKey.id.desc())
            )
        if found is None:
            raise NotFound("No key with this name", f"key={name!r}")
        return int(found)

    def list(self, principal: Principal, where: RequestFilter, cursor: Cursor) -> RequestList:
        self.log.flush()  # this process's buffered calls count at once
        if where.key is not None and not principal.is_admin and where.key != principal.name:
            raise InvalidRequest("A key sees only its own requests", "drop key= or use an admin key", param="key")
        scope = [] if principal.is_admin else [RequestRecord.key_id == principal.id]
        filters: list[Any] = []
        if where.key is not None and principal.is_admin:
            filters.append(RequestRecord.key_id == self._key_id(where.key))
        if where.model is not None:
            filters.append(RequestRecord.model == where.model)
        if where.status is not None:
            filters.append(_status(where.status))
        if where.since is not None:
            filters.append(RequestRecord.created_at >= where.since)
        if where.until is not None:
            filters.append(RequestRecord.created_at < where.until)
        if where.text:
            pattern = "%" + where.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            filters.append(
                or_(
                    RequestRecord.request_body.ilike(pattern, escape="\\"),
                    RequestRecord.response_body.ilike(pattern, escape="\\"),
                )
            )
        with self.db.session() as session:
            page = keyset_page(session, RequestRecord, scope=scope, filters=filters, cursor=cursor)
            rows = [_fields(r) for r in page.rows]
        names = self._names({r["key_id"] for r in rows})
        data = [RequestSummary.model_validate({**r, "key": names.get(r["key_id"])}) for r in rows]
        return RequestList(data=data, **page.cursor())

    def get(self, principal: Principal, request_id: str) -> RequestDetail:
        self.log.flush()
        with self.db.session() as session:
            row = session.get(RequestRecord, request_id)
            if row is None or not (principal.is_admin or row.key_id == principal.id):
                raise NotFound("No request of this key has this id", f"id={request_id!r}")
            fields = _fields(row)
            fields.update(
                attempt_log=row.attempt_log or [], request_body=row.request_body, response_body=row.response_body
            )
        return RequestDetail.model_validate({**fields, "key": self._names({row.key_id}).get(row.key_id)})


_SUMMARY = tuple(name for name in RequestSummary.model_fields if name not in ("object", "key", "bodies_stored"))


def _fields(row: RequestRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {name: getattr(row, name) for name in _SUMMARY}
    fields["key_id"] = row.key_id
    fields["bodies_stored"] = row.request_body is not None or row.response_body is not None
    return fields

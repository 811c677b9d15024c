"""Cursor pages over a table, newest first, as OpenAI's lists page: ``limit`` rows after the row
whose id is ``after``, and whether more follow. Rows are ordered by (created_at, id), both
descending, so a page never repeats or skips a row when rows are added meanwhile (new rows land
before the first page, not inside a later one). Every list of the API pages through this one
function."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.sql import ColumnElement

from winnow.errors import InvalidRequest

Row = TypeVar("Row")
Out = TypeVar("Out")


@dataclass(frozen=True)
class Cursor:
    """Which page a list asks for: ``limit`` rows after the row whose id is ``after`` (None: the newest)."""

    limit: int = 100
    after: str | None = None


@dataclass
class Page(Generic[Row]):
    """One page of rows, whether rows follow it, and the ids of its first and last row."""

    rows: list[Row]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None

    def map(self, render: Callable[[Row], Out]) -> Page[Out]:
        """The same page with each row rendered (to a wire model)."""
        return Page([render(row) for row in self.rows], self.has_more, self.first_id, self.last_id)

    def cursor(self) -> dict[str, Any]:
        """The fields every list response carries besides its items (``CursorPage``)."""
        return {"has_more": self.has_more, "first_id": self.first_id, "last_id": self.last_id}


def keyset_page(
    session: Session,
    table: Any,
    *,
    scope: Sequence[ColumnElement[bool]],
    filters: Sequence[ColumnElement[bool]] = (),
    cursor: Cursor,
    keep: Callable[[Any], bool] | None = None,
    ascending: bool = False,
) -> Page[Any]:
    """``cursor.limit`` rows of ``table`` within ``scope`` (what the caller may see) and ``filters``,
    newest first, after the row with id ``cursor.after`` (which must be within ``scope``; a 400
    otherwise).

    ``ascending``: oldest first instead (OpenAI's ``order=asc``).

    ``keep`` filters rows in Python where SQL cannot portably (labels in a JSON list): rows are read
    in batches until ``limit`` + 1 are kept."""
    created: InstrumentedAttribute[Any] = table.created_at
    ident: InstrumentedAttribute[Any] = table.id
    after, limit = cursor.after, cursor.limit
    query = select(table).where(*scope, *filters)
    if after is not None:
        at = session.scalar(select(created).where(*scope, ident == after))
        if at is None:
            raise InvalidRequest(
                "Unknown cursor", f"after={after!r} is not the id of a row of this list", param="after"
            )
        newer = or_(created > at, and_(created == at, ident > after))
        older = or_(created < at, and_(created == at, ident < after))
        query = query.where(newer if ascending else older)
    order = (created.asc(), ident.asc()) if ascending else (created.desc(), ident.desc())
    query = query.order_by(*order)
    if keep is None:
        found = list(session.scalars(query.limit(limit + 1)))
    else:
        found = []
        for row in session.scalars(query.execution_options(yield_per=500)):
            if keep(row):
                found.append(row)
                if len(found) > limit:
                    break
    rows = found[:limit]
    return Page(rows, len(found) > limit, rows[0].id if rows else None, rows[-1].id if rows else None)

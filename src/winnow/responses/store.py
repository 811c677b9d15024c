"""``ResponseStore``: the Responses a key asked to keep (``store: true``), one row each, readable and
deletable by that key only (another key's id is not found)."""

from __future__ import annotations

from typing import Any

from winnow.db import Database, StoredResponse
from winnow.errors import NotFound


def not_found(ident: str, param: str | None = None) -> NotFound:
    return NotFound(f"Response with id {ident!r} not found.", param=param)


class ResponseStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def save(
        self,
        key_id: int,
        response: dict[str, Any],
        input_items: list[dict[str, Any]],
        conversation: list[dict[str, Any]],
    ) -> None:
        with self.db.session() as session:
            session.add(
                StoredResponse(
                    id=response["id"],
                    key_id=key_id,
                    model=response["model"],
                    response=response,
                    input_items=input_items,
                    conversation=conversation,
                )
            )

    def _row(self, key_id: int, ident: str, param: str | None) -> StoredResponse:
        with self.db.session() as session:
            row = session.get(StoredResponse, ident)
            if row is None or row.key_id != key_id:
                raise not_found(ident, param)
            session.expunge(row)
            return row

    def response(self, key_id: int, ident: str) -> dict[str, Any]:
        return self._row(key_id, ident, None).response

    def input_items(self, key_id: int, ident: str) -> list[dict[str, Any]]:
        return self._row(key_id, ident, None).input_items

    def conversation(self, key_id: int, ident: str) -> list[dict[str, Any]]:
        """The chat messages a continuation of ``ident`` starts from (raises NotFound naming
        ``previous_response_id``)."""
        return self._row(key_id, ident, "previous_response_id").conversation

    def delete(self, key_id: int, ident: str) -> None:
        with self.db.session() as session:
            row = session.get(StoredResponse, ident)
            if row is None or row.key_id != key_id:
                raise not_found(ident)
            session.delete(row)

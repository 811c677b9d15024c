"""``PromptRegistry``: a key's named prompts, their immutable numbered versions and the labels that
point at one version each; and a ``PromptRef`` rendered through the version it names."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from winnow.db import Database, PromptLabelRecord, PromptRecord, PromptVersionRecord
from winnow.db.paging import Cursor, keyset_page
from winnow.errors import Conflict, InvalidRequest, NotFound
from winnow.ids import hex_id
from winnow.prompts.render import RenderedPrompt
from winnow.prompts.template import line_diff, render_messages, template_fields
from winnow.schemas.prompts import (
    DiffLine,
    FieldDiff,
    PromptCreate,
    PromptDeleted,
    PromptDiff,
    PromptInfo,
    PromptList,
    PromptParams,
    PromptRef,
    PromptVersionCreate,
    PromptVersionInfo,
    PromptVersionList,
)

LATEST = "latest"  # a label every prompt has: its newest version (never stored, never moved)
Source = Literal["manual", "optimization"]


def _version_info(row: PromptVersionRecord, name: str, labels: list[str]) -> PromptVersionInfo:
    return PromptVersionInfo(
        id=row.id,
        prompt=name,
        version=row.version,
        template=row.template,
        system=row.system,
        params=PromptParams.model_validate(row.params),
        model=row.model,
        fields=sorted(template_fields(row.template)),
        labels=sorted(labels),
        source="optimization" if row.source == "optimization" else "manual",
        message=row.message,
        metadata=row.meta,
        created_at=row.created_at,
    )


def _check_labels(labels: list[str]) -> None:
    if LATEST in labels:
        raise InvalidRequest(f"The label {LATEST!r} is reserved", "it always means the newest version", param="label")


class PromptRegistry:
    """Create, version, label, list, diff, delete and render a key's prompts. Another key's
    prompt is NotFound, as is one that never was."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, key_id: int, spec: PromptCreate) -> PromptInfo:
        """A new prompt with ``spec`` as its version 1 (409 when the key has a prompt of that name)."""
        version = PromptVersionCreate.model_validate(spec.model_dump(exclude={"name", "description"}))
        self._check(version)
        now = datetime.now(UTC)
        try:
            with self.db.session() as session:
                row = PromptRecord(
                    id=f"prompt-{hex_id()[:24]}",
                    key_id=key_id,
                    name=spec.name,
                    description=spec.description,
                    latest_version=0,
                    created_at=now,
                    updated_at=now,
                )
                session.add(row)
                session.flush()
                self._write_version(session, row, version, "manual")
        except IntegrityError:
            raise Conflict("A prompt of this name exists", f"name={spec.name!r}: add a version to it") from None
        return self.get(key_id, spec.name)

    def add_version(
        self, key_id: int, name: str, spec: PromptVersionCreate, *, source: Source = "manual"
    ) -> PromptVersionInfo:
        """Version ``latest_version + 1`` of the key's prompt ``name`` (an optimization job passes
        ``source="optimization"`` and its scores in ``spec.metadata``); its ``labels`` move to it."""
        self._check(spec)
        with self.db.session() as session:
            prompt = self._prompt(session, key_id, name, lock=True)
            row = self._write_version(session, prompt, spec, source)
            return _version_info(row, prompt.name, spec.labels)

    def _check(self, spec: PromptVersionCreate) -> None:
        template_fields(spec.template)
        if spec.system is not None:
            template_fields(spec.system, param="system")
        _check_labels(spec.labels)

    def _write_version(
        self, session: Session, prompt: PromptRecord, spec: PromptVersionCreate, source: Source
    ) -> PromptVersionRecord:
        number = prompt.latest_version + 1
        now = datetime.now(UTC)
        row = PromptVersionRecord(
            id=f"{prompt.id}.v{number:06d}",
            prompt_id=prompt.id,
            version=number,
            template=spec.template,
            system=spec.system,
            params=spec.params.model_dump(exclude_none=True),
            model=spec.model,
            source=source,
            message=spec.message,
            meta=spec.metadata,
            created_at=now,
        )
        session.add(row)
        prompt.latest_version, prompt.updated_at = number, now
        for label in spec.labels:
            self._point(session, prompt.id, label, number)
        session.flush()
        return row

    def _point(self, session: Session, prompt_id: str, label: str, version: int) -> None:
        row = session.get(PromptLabelRecord, (prompt_id, label))
        if row is None:
            session.add(PromptLabelRecord(prompt_id=prompt_id, label=label, version=version))
        else:
            row.version, row.updated_at = version, datetime.now(UTC)

    def _prompt(self, session: Session, key_id: int, name: str, lock: bool = False) -> PromptRecord:
        query = select(PromptRecord).where(PromptRecord.key_id == key_id, PromptRecord.name == name)
        row = session.scalars(query.with_for_update() if lock else query).first()
        if row is None:
            raise NotFound("No prompt of this name", f"name={name!r}", param="name")
        return row

    def _labels(self, session: Session, prompt_id: str) -> dict[str, int]:
        rows = session.scalars(select(PromptLabelRecord).where(PromptLabelRecord.prompt_id == prompt_id))
        return {row.label: row.version for row in sorted(rows, key=lambda r: r.label)}

    def _version_row(self, session: Session, prompt: PromptRecord, number: int) -> PromptVersionRecord:
        row = session.scalars(
            select(PromptVersionRecord).where(
                PromptVersionRecord.prompt_id == prompt.id, PromptVersionRecord.version == number
            )
        ).first()
        if row is None:
            raise NotFound(
                "No such version of this prompt",
                f"{prompt.name!r} has versions 1 to {prompt.latest_version}; asked for {number}",
                param="version",
            )
        return row

    def _info(self, session: Session, prompt: PromptRecord) -> PromptInfo:
        labels = self._labels(session, prompt.id)
        latest = self._version_row(session, prompt, prompt.latest_version)
        here = [label for label, version in labels.items() if version == latest.version]
        return PromptInfo(
            id=prompt.id,
            name=prompt.name,
            description=prompt.description,
            latest_version=prompt.latest_version,
            labels=labels,
            latest=_version_info(latest, prompt.name, here),
            created_at=prompt.created_at,
            updated_at=prompt.updated_at,
        )

    def get(self, key_id: int, name: str) -> PromptInfo:
        with self.db.session() as session:
            return self._info(session, self._prompt(session, key_id, name))

    def list(self, key_id: int, cursor: Cursor) -> PromptList:
        """The key's prompts, newest first, a page at a time."""
        with self.db.session() as session:
            page = keyset_page(session, PromptRecord, scope=[PromptRecord.key_id == key_id], cursor=cursor)
            return PromptList(data=[self._info(session, row) for row in page.rows], **page.cursor())

    def versions(self, key_id: int, name: str, cursor: Cursor) -> PromptVersionList:
        """The prompt's versions, newest first, a page at a time (``after``: a version's id)."""
        with self.db.session() as session:
            prompt = self._prompt(session, key_id, name)
            at = self._labels(session, prompt.id)
            scope = [PromptVersionRecord.prompt_id == prompt.id]
            page = keyset_page(session, PromptVersionRecord, scope=scope, cursor=cursor)
            data = [_version_info(row, name, [k for k, v in at.items() if v == row.version]) for row in page.rows]
            return PromptVersionList(data=data, **page.cursor())

    def version(self, key_id: int, name: str, number: int) -> PromptVersionInfo:
        with self.db.session() as session:
            prompt = self._prompt(session, key_id, name)
            row = self._version_row(session, prompt, number)
            at = self._labels(session, prompt.id)
            return _version_info(row, name, [k for k, v in at.items() if v == number])

    def move_label(self, key_id: int, name: str, label: str, version: int) -> PromptInfo:
        """Point ``label`` at ``version`` (made if new); the version must exist."""
        _check_labels([label])
        with self.db.session() as session:
            prompt = self._prompt(session, key_id, name, lock=True)
            self._version_row(session, prompt, version)
            self._point(session, prompt.id, label, version)
            session.flush()
            return self._info(session, prompt)

    def remove_label(self, key_id: int, name: str, label: str) -> PromptInfo:
        with self.db.session() as session:
            prompt = self._prompt(session, key_id, name, lock=True)
            row = session.get(PromptLabelRecord, (prompt.id, label))
            if row is None:
                raise NotFound("No such label on this prompt", f"{name!r} has no label {label!r}", param="label")
            session.delete(row)
            session.flush()
            return self._info(session, prompt)

    def delete(self, key_id: int, name: str) -> PromptDeleted:
        """Forget the prompt, every version and label of it."""
        with self.db.session() as session:
            prompt = self._prompt(session, key_id, name, lock=True)
            session.execute(delete(PromptLabelRecord).where(PromptLabelRecord.prompt_id == prompt.id))
            session.execute(delete(PromptVersionRecord).where(PromptVersionRecord.prompt_id == prompt.id))
            session.delete(prompt)
            return PromptDeleted(id=prompt.id, name=prompt.name)

    def diff(self, key_id: int, name: str, before: int, after: int) -> PromptDiff:
        """Version ``before`` → ``after``, each field line by line."""
        with self.db.session() as session:
            prompt = self._prompt(session, key_id, name)
            old, new = self._version_row(session, prompt, before), self._version_row(session, prompt, after)
            pairs: list[tuple[Any, str, str]] = [
                ("system", old.system or "", new.system or ""),
                ("template", old.template, new.template),
                ("params", _params_text(old.params), _params_text(new.params)),
                ("model", old.model or "", new.model or ""),
            ]
        fields = [
            FieldDiff(field=field, changed=a != b, lines=[DiffLine(op=op, text=text) for op, text in line_diff(a, b)])
            for field, a, b in pairs
        ]
        return PromptDiff(prompt=name, from_version=before, to_version=after, fields=fields)

    def resolve(self, key_id: int, ref: PromptRef) -> RenderedPrompt:
        """The version ``ref`` names (by number, by label, else the latest) rendered with its variables."""
        with self.db.session() as session:
            prompt = self._prompt(session, key_id, ref.name)
            number = ref.version or prompt.latest_version
            if ref.label is not None and ref.label != LATEST:
                label = session.get(PromptLabelRecord, (prompt.id, ref.label))
                if label is None:
                    raise NotFound(
                        "No such label on this prompt", f"{ref.name!r} has no label {ref.label!r}", param="label"
                    )
                number = label.version
            row = self._version_row(session, prompt, number)
            text, system = render_messages(row.template, row.system, ref.variables)
            return RenderedPrompt(
                name=ref.name,
                version=number,
                text=text,
                system=system,
                params=PromptParams.model_validate(row.params),
                model=row.model,
            )


def _params_text(params: dict[str, Any]) -> str:
    return "\n".join(f"{key}: {json.dumps(params[key])}" for key in sorted(params))

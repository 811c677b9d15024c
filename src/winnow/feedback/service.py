"""Human feedback: store a person's judgement of a generation or an SDG output row, list it, and
export it as preference pairs (DPO and friends) or SFT examples.

Each piece of feedback snapshots what it judged (prompt, response text, model) when it is given,
so listing and exporting never re-read usage rows or job outputs. All methods block (database,
files): the API calls them through ``run_in_threadpool``.

Export rules (``export``), over the feedback the caller may see:

- Feedback is grouped by prompt (its canonical JSON), oldest feedback first.
- A response is *positive* when rated thumbs up or 4-5 stars, *negative* when rated thumbs down
  or 1-2 stars; 3 stars and unrated feedback are neither.
- ``preference``: chosen = the group's positive responses and every corrected_response; rejected
  = its negative responses and the original response of any feedback that carries a
  corrected_response (unless that response is itself positive). Each distinct (chosen, rejected)
  pair with chosen != rejected is one row, in TRL's format: a plain prompt gives
  ``{"prompt", "chosen", "rejected"}`` strings; a chat prompt gives the conversational form,
  ``{"prompt": [messages], "chosen": [assistant message], "rejected": [assistant message]}``.
- ``sft``: each distinct positive or corrected response is one row: ``{"prompt", "completion"}``
  for a plain prompt, ``{"messages": [...prompt, assistant message]}`` for a chat prompt.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import select

from winnow.auth import Principal
from winnow.db import Database, Feedback, Job, UsageRecord
from winnow.db.paging import Cursor, Page, keyset_page
from winnow.errors import Conflict, InvalidRequest, NotFound
from winnow.jobs.store import JobStore
from winnow.schemas.feedback import FeedbackItem, GenerationFeedback, RowFeedback
from winnow.usage import UsageService

ExportFormat = Literal["preference", "sft"]
TrainingRows = list[dict[str, Any]]  # (a method of FeedbackService is named list)


def feedback_id() -> str:
    return f"fb-{uuid.uuid4().hex[:24]}"


def item(row: Feedback) -> FeedbackItem:
    rating: str | int | None = None
    if row.rating is not None:
        rating = ("up" if row.rating >= 0.5 else "down") if row.rating_scale == "thumbs" else round(row.rating)
    return FeedbackItem.model_validate(
        {
            "id": row.id,
            "created_at": row.created_at,
            "target": row.target,
            "generation_id": row.generation_id,
            "job_id": row.job_id,
            "row_id": row.row_id,
            "index": row.row_index or 0,
            "model": row.model,
            "prompt": row.prompt,
            "response": row.response,
            "rating": rating,
            "rating_scale": row.rating_scale,
            "labels": list(row.labels or []),
            "comment": row.comment,
            "corrected_response": row.corrected_response,
        }
    )


class FeedbackService:
    def __init__(self, db: Database, usage: UsageService, jobs: JobStore) -> None:
        self.db = db
        self.usage = usage
        self.jobs = jobs

    # -- give ------------------------------------------------------------------------------------
    def create(self, request: GenerationFeedback | RowFeedback, owner: Principal) -> tuple[FeedbackItem, bool]:
        """Store feedback on a generation or an SDG row the caller owns (an admin: any), and whether it
        is new: a key's second judgement of the same response updates its first (the fields the
        request names replace theirs; the others stay), so a response has one feedback per key.

        NotFound for an unknown (or another key's) generation, job or row, or a choice index out
        of range; Conflict when the generation was recorded without its text (store_generations
        off) or the job has not completed."""
        model: str | None
        if isinstance(request, GenerationFeedback):
            model, prompt, response = self._generation(request.generation_id, request.index, owner)
            target = {"target": "generation", "generation_id": request.generation_id}
        else:
            model, prompt, response = self._row(request.job_id, request.id, request.index, owner)
            target = {"target": "sdg_row", "job_id": request.job_id, "row_id": request.id}
        rating: float | None = None
        scale: str | None = None
        if isinstance(request.rating, str):
            rating, scale = (1.0 if request.rating == "up" else 0.0), "thumbs"
        elif request.rating is not None:
            rating, scale = float(request.rating), "stars"
        given = request.model_fields_set
        changes: dict[str, Any] = {"model": model, "prompt": prompt, "response": response}
        if "rating" in given:
            changes |= {"rating": rating, "rating_scale": scale}
        if "labels" in given:
            changes["labels"] = list(dict.fromkeys(request.labels))
        if "comment" in given:
            changes["comment"] = request.comment
        if "corrected_response" in given:
            changes["corrected_response"] = request.corrected_response
        with self.db.session() as session:
            same = [getattr(Feedback, name) == value for name, value in target.items()]
            found = session.scalars(
                select(Feedback)
                .where(Feedback.owner_key_id == owner.id, Feedback.row_index == request.index, *same)
                .order_by(Feedback.created_at.desc(), Feedback.id.desc())
                .limit(1)
            ).first()
            if found is not None:
                for name, value in changes.items():
                    setattr(found, name, value)
                session.flush()
                return item(found), False
            row = Feedback(
                id=feedback_id(),
                owner_key_id=owner.id,
                created_at=datetime.now(UTC),
                row_index=request.index,
                **({"labels": []} | changes),
                **target,
            )
            session.add(row)
            session.flush()
            return item(row), True

    def _generation(self, generation_id: str, index: int, owner: Principal) -> tuple[str, Any, str]:
        """(model, prompt, response text) of choice ``index`` of a generation. Several usage rows
        share one id when a /v1/completions call had several prompts: their responses count as one
        list, rows in the order they were written (as the response's choices are numbered)."""
        self.usage.recorder.flush()  # this process's last generations are still buffered
        query = select(UsageRecord).where(UsageRecord.generation_id == generation_id).order_by(UsageRecord.id)
        if not owner.is_admin:
            query = query.where(UsageRecord.key_id == owner.id)
        with self.db.session() as session:
            records = [(r.model, r.content) for r in session.scalars(query)]
        if not records:
            raise NotFound("Generation not found", generation_id)
        choices: list[tuple[str, Any, str]] = []
        for model, content in records:
            if not isinstance(content, dict):
                raise Conflict(
                    "This generation was recorded without its prompt and text, so it cannot take feedback",
                    "the server kept no generation text (store_generations is false)",
                )
            choices += [(model, content.get("prompt"), str(text)) for text in content.get("responses") or []]
        if index >= len(choices):
            raise NotFound("The generation has no choice with this index", f"index {index}; it has {len(choices)}")
        return choices[index]

    def _row(self, job_id: str, row_id: str, index: int, owner: Principal) -> tuple[str | None, Any, str]:
        """(model, prompt messages, response text) of one row of a completed job's output."""
        output = self.jobs.output(job_id, owner)  # NotFound (another key's), Conflict (not completed)
        with self.db.session() as session:
            job = session.get(Job, job_id)
            model = str(job.params.get("model")) if job is not None and job.params.get("model") else None
        for row in _read_rows(output):
            if row.get("id") == row_id and row.get("index") == index:
                response = row.get("response") or {}
                return model, row.get("prompt"), str(response.get("content", "") if isinstance(response, dict) else "")
        raise NotFound("The job's output has no row with this id and index", f"id {row_id!r}, index {index}")

    # -- read ------------------------------------------------------------------------------------
    def list(
        self,
        owner: Principal,
        cursor: Cursor = Cursor(),
        *,
        generation_id: str | None = None,
        job_id: str | None = None,
        label: str | None = None,
    ) -> Page[FeedbackItem]:
        """A page of the feedback the caller may see (a key: its own; an admin: all), newest first."""
        scope = [] if owner.is_admin else [Feedback.owner_key_id == owner.id]
        filters = []
        if generation_id is not None:
            filters.append(Feedback.generation_id == generation_id)
        if job_id is not None:
            filters.append(Feedback.job_id == job_id)
        # labels are a JSON list; filtering them in Python works on every database
        keep = None if label is None else (lambda row: label in (row.labels or []))
        with self.db.session() as session:
            return keyset_page(session, Feedback, scope=scope, filters=filters, cursor=cursor, keep=keep).map(item)

    def _visible(self, session: Any, query: Any, owner: Principal) -> Iterator[Feedback]:
        if not owner.is_admin:
            query = query.where(Feedback.owner_key_id == owner.id)
        yield from session.scalars(query.execution_options(yield_per=500))

    # -- export ----------------------------------------------------------------------------------
    def export(self, owner: Principal, fmt: ExportFormat = "preference") -> tuple[TrainingRows, str | None]:
        """The caller's visible feedback as training rows (see the module's docstring for the rules)
        and, when there are none, why (a sentence a person can act on)."""
        if fmt not in ("preference", "sft"):
            raise InvalidRequest("Unknown export format", f"{fmt!r}; use preference or sft")
        query = select(Feedback).order_by(Feedback.created_at, Feedback.id)
        groups: dict[str, _Group] = {}
        with self.db.session() as session:
            for row in self._visible(session, query, owner):
                if row.prompt is None or row.response is None:
                    continue
                key = json.dumps(row.prompt, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
                groups.setdefault(key, _Group(row.prompt)).add(row)
        rows: TrainingRows = []
        for group in groups.values():
            rows += group.preference() if fmt == "preference" else group.sft()
        return rows, None if rows else _why_empty(fmt, list(groups.values()))


def _why_empty(fmt: ExportFormat, groups: list[_Group]) -> str:
    if not groups:
        return "no feedback with a stored prompt and response is visible to this key"
    chosen = sum(bool(g.chosen()) for g in groups)
    if fmt == "sft":
        return (
            f"none of the {len(groups)} prompt(s) with feedback has a positive rating (thumbs up, 4-5 stars) "
            "or a corrected_response"
        )
    rejected = sum(bool(g.rejected()) for g in groups)
    same = sum(bool(g.chosen()) and set(g.chosen()) == set(g.rejected()) for g in groups)
    reason = (
        f"a preference pair needs, for one prompt, a chosen response (thumbs up, 4-5 stars or a corrected_response) "
        f"and a different rejected one (thumbs down, 1-2 stars, or the original of a correction); of "
        f"{len(groups)} prompt(s) with feedback, {chosen} have a chosen and {rejected} a rejected response"
    )
    return reason + (f"; in {same} the correction equals the response it corrects" if same else "")


def to_jsonl(rows: Iterable[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()


def _read_rows(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        return
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                row = json.loads(line)
                if isinstance(row, dict):
                    yield row


def _positive(row: Feedback) -> bool:
    if row.rating is None:
        return False
    return row.rating >= 0.5 if row.rating_scale == "thumbs" else row.rating >= 4


def _negative(row: Feedback) -> bool:
    if row.rating is None:
        return False
    return row.rating < 0.5 if row.rating_scale == "thumbs" else row.rating <= 2


class _Group:
    """The feedback on one prompt: which responses are chosen and which rejected."""

    def __init__(self, prompt: Any) -> None:
        self.prompt = prompt
        self.chat = not isinstance(prompt, str)
        # dicts as ordered sets: first seen first
        self.positive: dict[str, None] = {}
        self.negative: dict[str, None] = {}
        self.corrected: dict[str, None] = {}
        self.replaced: dict[str, None] = {}  # originals of corrected responses

    def add(self, row: Feedback) -> None:
        response = row.response or ""
        if _positive(row):
            self.positive[response] = None
        if _negative(row):
            self.negative[response] = None
        if row.corrected_response is not None:
            self.corrected[row.corrected_response] = None
            self.replaced[response] = None

    def chosen(self) -> list[str]:
        return list(dict.fromkeys([*self.positive, *self.corrected]))

    def rejected(self) -> list[str]:
        replaced = [r for r in self.replaced if r not in self.positive]
        return list(dict.fromkeys([*self.negative, *replaced]))

    def preference(self) -> list[dict[str, Any]]:
        pairs = [(c, r) for c in self.chosen() for r in self.rejected() if c != r]
        if self.chat:
            return [{"prompt": self.prompt, "chosen": [_assistant(c)], "rejected": [_assistant(r)]} for c, r in pairs]
        return [{"prompt": self.prompt, "chosen": c, "rejected": r} for c, r in pairs]

    def sft(self) -> list[dict[str, Any]]:
        if self.chat:
            return [{"messages": [*self.prompt, _assistant(c)]} for c in self.chosen()]
        return [{"prompt": self.prompt, "completion": c} for c in self.chosen()]


def _assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}

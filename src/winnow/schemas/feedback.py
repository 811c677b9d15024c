"""Wire models of ``/api/v1/feedback``: a person's rating, labels, comment or correction of one
generation (by its generation id) or one SDG output row (by job id, row id and generation index)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import ConfigDict, Discriminator, Field, PlainValidator, Tag, WithJsonSchema, model_validator

from winnow.schemas.common import CursorPage, Int, RequestModel, Timestamp, WireModel
from winnow.schemas.sdg import JOB_ID_PATTERN

MAX_LABELS = 20
MAX_TEXT = 100_000


Thumbs = Literal["up", "down"]


def _rating(value: Any) -> str | int | None:
    """Thumbs ("up"/"down") or stars (a JSON integer 1-5: 4.0 is one, true and "4" are not)."""
    if value is None:
        return None
    if value in ("up", "down") and isinstance(value, str):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 5:
        return value
    raise ValueError('rating must be "up", "down" or an integer from 1 to 5')


# The schemas below leave out null: an absent field is the way to give no rating, comment, ...
Rating = Annotated[
    str | int | None,
    PlainValidator(_rating),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "enum": ["up", "down"]}, {"type": "integer", "minimum": 1, "maximum": 5}],
            "description": '"up" / "down" (thumbs) or 1-5 (stars)',
            "examples": ["up", 4],
        }
    ),
]
Label = Annotated[str, Field(min_length=1, max_length=64)]
Text = Annotated[
    str | None,
    Field(min_length=1, max_length=MAX_TEXT),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": MAX_TEXT}),
]

# What a body must carry besides its target: at least one judgement (JSON Schema of what
# ``_Judgement._at_least_one`` enforces, so the OpenAPI document states it too).
_SOME_JUDGEMENT: dict[str, Any] = {
    "anyOf": [
        {"required": ["rating"]},
        {"required": ["labels"], "properties": {"labels": {"minItems": 1}}},
        {"required": ["comment"]},
        {"required": ["corrected_response"]},
    ]
}


class _Judgement(RequestModel):
    """What a person says about a response; at least one of the four."""

    model_config = ConfigDict(json_schema_extra=_SOME_JUDGEMENT)

    rating: Rating = None
    labels: list[Label] = Field(
        default_factory=list, max_length=MAX_LABELS, description="Short tags, e.g. wrong_math, too_long"
    )
    comment: Text = None
    corrected_response: Text = Field(None, description="What the response should have been")

    @model_validator(mode="after")
    def _at_least_one(self) -> Self:
        if self.rating is None and not self.labels and self.comment is None and self.corrected_response is None:
            raise ValueError("Give at least one of rating, labels, comment or corrected_response")
        return self


class GenerationFeedback(_Judgement):
    """Feedback on one generation: ``/api/v1/generate``'s ``metadata.generation_id`` (also each of
    ``/generate/batch``'s results), or a ``/v1/chat/completions`` / ``/v1/completions`` response ``id``."""

    generation_id: str = Field(min_length=1, max_length=64, examples=["gen-0f3c9a6d1e2b4c5d8e7f6a5b4c3d2e1f"])
    index: Int = Field(0, ge=0, le=100_000, description="The choice index (a /v1 response's choices[i].index)")


class RowFeedback(_Judgement):
    """Feedback on one row of a completed SDG job's output (PromptResponseScore ``id`` and ``index``)."""

    job_id: str = Field(pattern=JOB_ID_PATTERN)
    id: str = Field(min_length=1, max_length=200, description="The output row's id (the prompt's id)")
    index: Int = Field(ge=0, le=100_000, description="The output row's index (which generation)")


def _target(value: Any) -> str | None:
    """Which form a body is: generation_id, or job_id + id (+ index); neither or both is no form."""
    if isinstance(value, GenerationFeedback):
        return "generation"
    if isinstance(value, RowFeedback):
        return "sdg_row"
    if not isinstance(value, dict):
        return None
    generation = "generation_id" in value
    row = "job_id" in value or "id" in value
    if generation == row:
        return None
    return "generation" if generation else "sdg_row"


FeedbackRequest = Annotated[
    Annotated[GenerationFeedback, Tag("generation")] | Annotated[RowFeedback, Tag("sdg_row")],
    Discriminator(
        _target,
        custom_error_type="feedback_target",
        custom_error_message="Give either generation_id (and index) or job_id, id and index, not both",
    ),
]


class FeedbackItem(WireModel):
    """One stored piece of feedback, with a snapshot of what it judged (so exports read nothing else)."""

    id: str = Field(examples=["fb-5e0f2b8c9d1a4e3f6b7c8d9e"])
    created_at: Timestamp
    target: Literal["generation", "sdg_row"]
    generation_id: str | None = None
    job_id: str | None = None
    row_id: str | None = Field(None, description="The SDG output row's id")
    index: int = Field(description="The choice index (generation) or generation index (SDG row)")
    model: str | None = None
    prompt: str | list[dict[str, Any]] | None = Field(None, description="A plain prompt, or chat messages")
    response: str | None = Field(None, description="The judged response's text")
    rating: Thumbs | int | None = None
    rating_scale: Literal["thumbs", "stars"] | None = None
    labels: list[str] = Field(default_factory=list)
    comment: str | None = None
    corrected_response: str | None = None


class FeedbackList(CursorPage):
    items: list[FeedbackItem]
    count: int

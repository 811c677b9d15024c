"""Wire models of ``/api/v1/prompts`` (a Winnow extension): named prompts with immutable numbered
versions and labels that point at one version each, and the ``prompt`` reference that
``/api/v1/generate`` and ``/v1`` (as ``prompt_ref``) render through a version."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from winnow.schemas.common import CursorPage, Int, RequestModel, Timestamp, WireModel, integral

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
LABEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
MAX_TEMPLATE_CHARS = 100_000
MAX_VERSION = 2**31 - 1  # an INTEGER column's range

PromptName = Annotated[str, Field(pattern=NAME_PATTERN, description="Letters, digits, _ . - (at most 128)")]
LabelName = Annotated[
    str, Field(pattern=LABEL_PATTERN, description="A label such as production or staging; `latest` is reserved")
]
Variable = str | int | float | bool
EXTENSION: dict[str, Any] = {"x-winnow-extension": True}


class PromptParams(RequestModel):
    """Sampling parameters a version carries; a request that sets its own wins."""

    max_tokens: Annotated[int, Field(ge=1, le=1 << 20), integral] | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    stop: Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=4)] | None = None


class PromptVersionCreate(RequestModel):
    """A new version: versions are immutable once written (no route changes one)."""

    template: str = Field(
        min_length=1,
        max_length=MAX_TEMPLATE_CHARS,
        description="The user message, with plain {field} placeholders ({{ and }} for literal braces)",
    )
    system: str | None = Field(default=None, max_length=MAX_TEMPLATE_CHARS, description="A system message")
    params: PromptParams = Field(default_factory=PromptParams)
    model: str | None = Field(default=None, max_length=200, description="The model this version was made for")
    message: str | None = Field(default=None, max_length=2000, description="What changed, in a line")
    labels: list[LabelName] = Field(default_factory=list, max_length=16, description="Labels to move to it")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Free-form: scores, provenance")


class PromptCreate(PromptVersionCreate):
    """A new prompt with its first version."""

    name: PromptName
    description: str | None = Field(default=None, max_length=2000)


class LabelMove(RequestModel):
    version: Int = Field(ge=1, le=MAX_VERSION, description="The version the label points at from now on")


class PromptRef(RequestModel):
    """A prompt to render: ``version`` or ``label`` (neither: the latest version), with ``variables``
    for exactly the template's fields (a missing or an unknown one is a 400)."""

    model_config = ConfigDict(json_schema_extra={"not": {"required": ["version", "label"]}})

    name: PromptName
    version: Annotated[int, Field(ge=1, le=MAX_VERSION), integral] | None = None
    label: LabelName | None = None
    variables: dict[str, Variable] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_selector(self) -> PromptRef:
        if self.version is not None and self.label is not None:
            raise ValueError("give version or label, not both")
        return self


class PromptVersionInfo(WireModel):
    id: str
    object: Literal["prompt.version"] = "prompt.version"
    prompt: str = Field(description="The prompt's name")
    version: int
    template: str
    system: str | None = None
    params: PromptParams
    model: str | None = None
    fields: list[str] = Field(description="The template's placeholders, sorted")
    labels: list[str] = Field(default_factory=list, description="The labels pointing at this version")
    source: Literal["manual", "optimization"] = "manual"
    message: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: Timestamp


class PromptInfo(WireModel):
    id: str
    object: Literal["prompt"] = "prompt"
    name: str
    description: str | None = None
    latest_version: int
    labels: dict[str, int] = Field(description="Label -> the version it points at")
    latest: PromptVersionInfo
    created_at: Timestamp
    updated_at: Timestamp


class PromptList(CursorPage):
    object: Literal["list"] = "list"
    data: list[PromptInfo]


class PromptVersionList(CursorPage):
    """A prompt's versions, newest first."""

    object: Literal["list"] = "list"
    data: list[PromptVersionInfo]


class PromptDeleted(WireModel):
    id: str
    name: str
    object: Literal["prompt"] = "prompt"
    deleted: Literal[True] = True


class DiffLine(WireModel):
    op: Literal["equal", "delete", "insert"]
    text: str


class FieldDiff(WireModel):
    field: Literal["system", "template", "params", "model"]
    changed: bool
    lines: list[DiffLine]


class PromptDiff(WireModel):
    """Two versions line by line (difflib), field by field; texts as stored, for the caller to escape."""

    object: Literal["prompt.diff"] = "prompt.diff"
    prompt: str
    from_version: int
    to_version: int
    fields: list[FieldDiff]

"""SQLAlchemy storage models. Wire schemas live in ``winnow.schemas`` and never leak in here."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, Index, Integer, String, Text, false, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class ApiKey(Base):
    """An API key. Only the SHA-256 of the secret is stored; ``prefix`` lets people tell keys apart."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    rate_limits: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    # Spend caps; the period is day|month (UTC, calendar) or total. None: no cap.
    budget_usd: Mapped[float | None] = mapped_column(Float, default=None)
    budget_tokens: Mapped[int | None] = mapped_column(BigInteger, default=None)
    budget_period: Mapped[str | None] = mapped_column(String(8), default=None)
    # Bytes of uploads the key may keep; None: the server's storage_quota_bytes.
    storage_quota_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)

    __table_args__ = (
        # A name is unique among live keys; a revoked key's name may be reused.
        Index(
            "ix_api_keys_live_name",
            "name",
            unique=True,
            sqlite_where=text("revoked_at IS NULL"),
            postgresql_where=text("revoked_at IS NULL"),
        ),
    )


class Job(Base):
    """A job of any kind (``winnow.jobs.kinds``): its spec, where it stands, and the checkpoint it
    resumes from."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), default="sdg", server_default="sdg", index=True)  # sdg|eval|ft
    owner_key_id: Mapped[int] = mapped_column(Integer, index=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), index=True)  # queued|running|paused|completed|failed|cancelled
    stage: Mapped[str] = mapped_column(String(32), default="queued")
    prompts_path: Mapped[str] = mapped_column(Text)
    prompts_total: Mapped[int] = mapped_column(Integer)
    prompts_sha256: Mapped[str] = mapped_column(String(64))
    output_path: Mapped[str] = mapped_column(Text)
    checkpoint: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    worker: Mapped[str | None] = mapped_column(String(200), default=None)
    lease_until: Mapped[datetime | None] = mapped_column(default=None)
    resume_at: Mapped[datetime | None] = mapped_column(default=None)  # a paused job is claimable from then
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    output_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


SdgJob = Job  # the name before every kind shared the table (0009)


class UsageRecord(Base):
    """One generation's usage: who, which model, tokens, latency and cost (and, when kept, the text)."""

    __tablename__ = "usage_records"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    day: Mapped[str] = mapped_column(String(10))  # UTC date, for group_by=day on any database
    key_id: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(16))  # api|v1|job|eval
    job_id: Mapped[str | None] = mapped_column(String(40), default=None)
    generation_id: Mapped[str | None] = mapped_column(String(64), default=None)
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    content: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)  # {prompt, responses}
    # Upstream models: which deployment answered, after how many attempts; a cached answer costs 0.
    deployment: Mapped[str | None] = mapped_column(String(128), default=None)
    attempts: Mapped[int | None] = mapped_column(Integer, default=None)
    cached: Mapped[bool | None] = mapped_column(Boolean, default=False, server_default=false())

    __table_args__ = (
        Index("ix_usage_records_key_created", "key_id", "created_at"),
        Index("ix_usage_records_created_at", "created_at"),
        Index("ix_usage_records_generation_id", "generation_id"),
    )


class Feedback(Base):
    """A person's judgement of one generation or one SDG output row."""

    __tablename__ = "feedback"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_key_id: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    target: Mapped[str] = mapped_column(String(16))  # generation|sdg_row
    generation_id: Mapped[str | None] = mapped_column(String(64), default=None)
    job_id: Mapped[str | None] = mapped_column(String(40), default=None)
    row_id: Mapped[str | None] = mapped_column(String(200), default=None)
    row_index: Mapped[int | None] = mapped_column(Integer, default=None)
    model: Mapped[str | None] = mapped_column(String(200), default=None)
    prompt: Mapped[Any] = mapped_column(JSON, default=None, nullable=True)
    response: Mapped[str | None] = mapped_column(Text, default=None)
    rating: Mapped[float | None] = mapped_column(Float, default=None)
    rating_scale: Mapped[str | None] = mapped_column(String(8), default=None)  # thumbs|stars
    labels: Mapped[list[str]] = mapped_column(JSON, default=list)
    comment: Mapped[str | None] = mapped_column(Text, default=None)
    corrected_response: Mapped[str | None] = mapped_column(Text, default=None)

    __table_args__ = (Index("ix_feedback_owner_created", "owner_key_id", "created_at"),)


class JobShard(Base):
    """A run of consecutive chunks of one SDG job: the unit a worker claims, leases and checkpoints,
    so several workers (on one machine or many) share a job without doing any row twice."""

    __tablename__ = "job_shards"

    job_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True)
    first_row: Mapped[int] = mapped_column(Integer)
    rows: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True)  # queued|running|done
    worker: Mapped[str | None] = mapped_column(String(200), default=None)  # kept when done: who did it
    lease_until: Mapped[datetime | None] = mapped_column(default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    checkpoint: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class FineTunedModel(Base):
    """A model a fine-tuning job made: served like a configured local model by every process
    (the registry reads this table), owned by the key that ran the job."""

    __tablename__ = "fine_tuned_models"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    base_model: Mapped[str] = mapped_column(String(200))
    job_id: Mapped[str] = mapped_column(String(40), index=True)
    owner_key_id: Mapped[int] = mapped_column(Integer, index=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)  # a ModelConfig: path, adapter_path, device, ...
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class StoredFile(Base):
    """A file a key uploaded (``POST /api/v1/files``), kept in the data dir until its owner deletes it."""

    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key_id: Mapped[int] = mapped_column(Integer)
    filename: Mapped[str] = mapped_column(String(255))
    purpose: Mapped[str] = mapped_column(String(16))  # prompts|fine-tune|unknown (adopted from disk)
    bytes: Mapped[int] = mapped_column(BigInteger)
    rows: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_files_key_created", "key_id", "created_at"),)


class StoredResponse(Base):
    """A ``/v1/responses`` answer kept for its key (``store: true``): the Response object, the input
    items it was given, and the chat messages of its whole conversation (without ``instructions``),
    which a later request continues with ``previous_response_id``."""

    __tablename__ = "responses"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(200))
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    input_items: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    conversation: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_responses_key_created", "key_id", "created_at"),)


class PromptRecord(Base):
    """A named prompt of one key: its versions are ``PromptVersionRecord`` rows, its labels
    ``PromptLabelRecord`` rows. ``latest_version`` numbers the newest one."""

    __tablename__ = "prompts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key_id: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str | None] = mapped_column(Text, default=None)
    latest_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        Index("ix_prompts_key_name", "key_id", "name", unique=True),
        Index("ix_prompts_key_created", "key_id", "created_at"),
    )


class PromptVersionRecord(Base):
    """One immutable version of a prompt (written once, never updated): the template, the system
    message, the sampling parameters, the model it was made for, where it came from (manual or an
    optimization job) and free-form metadata such as an optimization's scores."""

    __tablename__ = "prompt_versions"

    id: Mapped[str] = mapped_column(String(48), primary_key=True)  # <prompt id>.v<000001>: sorts by version
    prompt_id: Mapped[str] = mapped_column(String(40))
    version: Mapped[int] = mapped_column(Integer)
    template: Mapped[str] = mapped_column(Text)
    system: Mapped[str | None] = mapped_column(Text, default=None)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    model: Mapped[str | None] = mapped_column(String(200), default=None)
    source: Mapped[str] = mapped_column(String(16), default="manual")  # manual|optimization
    message: Mapped[str | None] = mapped_column(Text, default=None)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_prompt_versions_prompt_version", "prompt_id", "version", unique=True),)


class PromptLabelRecord(Base):
    """A label (``production``, ``staging``, ...) of a prompt: it points at exactly one version and moves."""

    __tablename__ = "prompt_labels"

    prompt_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    label: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

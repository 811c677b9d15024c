"""Storage: SQLAlchemy models, engine/session management and Alembic migrations."""

from winnow.db.session import Database
from winnow.db.tables import (
    ApiKey,
    Base,
    Feedback,
    FineTunedModel,
    Job,
    JobShard,
    PromptLabelRecord,
    PromptRecord,
    PromptVersionRecord,
    SdgJob,
    StoredFile,
    StoredResponse,
    UsageRecord,
)
from winnow.requests.table import RequestRecord

__all__ = [
    "ApiKey",
    "Base",
    "Database",
    "Feedback",
    "FineTunedModel",
    "Job",
    "JobShard",
    "PromptLabelRecord",
    "PromptRecord",
    "PromptVersionRecord",
    "RequestRecord",
    "SdgJob",
    "StoredFile",
    "StoredResponse",
    "UsageRecord",
]

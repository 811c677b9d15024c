"""Storage: SQLAlchemy models, engine/session management and Alembic migrations."""

from winnow.db.session import Database
from winnow.db.tables import (
    ApiKey,
    Base,
    Feedback,
    FineTunedModel,
    Job,
    JobShard,
    SdgJob,
    StoredFile,
    StoredResponse,
    UsageRecord,
)

__all__ = [
    "ApiKey",
    "Base",
    "Database",
    "Feedback",
    "FineTunedModel",
    "Job",
    "JobShard",
    "SdgJob",
    "StoredFile",
    "StoredResponse",
    "UsageRecord",
]

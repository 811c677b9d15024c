"""jobs: the table of every job kind (SDG, evaluations, fine-tuning) is called jobs, no longer sdg_jobs

Every row and id is kept; only the table's and its indexes' names change.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

INDEXED = ("owner_key_id", "status", "created_at", "kind")


def _rename(old: str, new: str) -> None:
    for column in INDEXED:
        op.drop_index(f"ix_{old}_{column}", old)
    op.rename_table(old, new)
    for column in INDEXED:
        op.create_index(f"ix_{new}_{column}", new, [column])


def upgrade() -> None:
    _rename("sdg_jobs", "jobs")


def downgrade() -> None:
    _rename("jobs", "sdg_jobs")

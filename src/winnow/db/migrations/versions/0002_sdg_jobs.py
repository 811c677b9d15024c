"""sdg jobs

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sdg_jobs",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("owner_key_id", sa.Integer(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("stage", sa.String(32), nullable=False),
        sa.Column("prompts_path", sa.Text(), nullable=False),
        sa.Column("prompts_total", sa.Integer(), nullable=False),
        sa.Column("prompts_sha256", sa.String(64), nullable=False),
        sa.Column("output_path", sa.Text(), nullable=False),
        sa.Column("checkpoint", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("worker", sa.String(200), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("output_bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_sdg_jobs_owner_key_id", "sdg_jobs", ["owner_key_id"])
    op.create_index("ix_sdg_jobs_status", "sdg_jobs", ["status"])
    op.create_index("ix_sdg_jobs_created_at", "sdg_jobs", ["created_at"])


def downgrade() -> None:
    op.drop_table("sdg_jobs")

"""usage records, key budgets, feedback, job kinds and pausing

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_records",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("job_id", sa.String(40), nullable=True),
        sa.Column("generation_id", sa.String(64), nullable=True),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("content", sa.JSON(), nullable=True),
    )
    op.create_index("ix_usage_records_key_created", "usage_records", ["key_id", "created_at"])
    op.create_index("ix_usage_records_created_at", "usage_records", ["created_at"])
    op.create_index("ix_usage_records_generation_id", "usage_records", ["generation_id"])

    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("budget_usd", sa.Float(), nullable=True))
        batch.add_column(sa.Column("budget_tokens", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("budget_period", sa.String(8), nullable=True))

    with op.batch_alter_table("sdg_jobs") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="sdg"))
        batch.add_column(sa.Column("resume_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_sdg_jobs_kind", "sdg_jobs", ["kind"])

    op.create_table(
        "feedback",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("owner_key_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("target", sa.String(16), nullable=False),
        sa.Column("generation_id", sa.String(64), nullable=True),
        sa.Column("job_id", sa.String(40), nullable=True),
        sa.Column("row_id", sa.String(200), nullable=True),
        sa.Column("row_index", sa.Integer(), nullable=True),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("prompt", sa.JSON(), nullable=True),
        sa.Column("response", sa.Text(), nullable=True),
        sa.Column("rating", sa.Float(), nullable=True),
        sa.Column("rating_scale", sa.String(8), nullable=True),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("corrected_response", sa.Text(), nullable=True),
    )
    op.create_index("ix_feedback_owner_created", "feedback", ["owner_key_id", "created_at"])


def downgrade() -> None:
    op.drop_table("feedback")
    op.drop_index("ix_sdg_jobs_kind", "sdg_jobs")
    with op.batch_alter_table("sdg_jobs") as batch:
        batch.drop_column("resume_at")
        batch.drop_column("kind")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("budget_period")
        batch.drop_column("budget_tokens")
        batch.drop_column("budget_usd")
    op.drop_table("usage_records")

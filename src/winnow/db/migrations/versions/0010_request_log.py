"""request_log: one row per /v1 and /generate call (timings, attempts, tokens, cost, bodies where enabled)

Revision ID: 0010
Revises: 0008
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "request_log",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=True),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("path", sa.String(200), nullable=False),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("deployment", sa.String(128), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=True),
        sa.Column("attempt_log", sa.JSON(), nullable=True),
        sa.Column("cached", sa.Boolean(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("ttft_ms", sa.Float(), nullable=True),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("generation_id", sa.String(64), nullable=True),
        sa.Column("request_body", sa.Text(), nullable=True),
        sa.Column("response_body", sa.Text(), nullable=True),
    )
    op.create_index("ix_request_log_key_created", "request_log", ["key_id", "created_at"])
    op.create_index("ix_request_log_created_at", "request_log", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_request_log_created_at", "request_log")
    op.drop_index("ix_request_log_key_created", "request_log")
    op.drop_table("request_log")

"""prompts: named prompts per key, their immutable versions, and labels that point at one version

Revision ID: 0011
Revises: 0008
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prompts",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("latest_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_prompts_key_name", "prompts", ["key_id", "name"], unique=True)
    op.create_index("ix_prompts_key_created", "prompts", ["key_id", "created_at"])
    op.create_table(
        "prompt_versions",
        sa.Column("id", sa.String(48), primary_key=True),
        sa.Column("prompt_id", sa.String(40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("template", sa.Text(), nullable=False),
        sa.Column("system", sa.Text(), nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_prompt_versions_prompt_version", "prompt_versions", ["prompt_id", "version"], unique=True)
    op.create_table(
        "prompt_labels",
        sa.Column("prompt_id", sa.String(40), primary_key=True),
        sa.Column("label", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("prompt_labels")
    op.drop_index("ix_prompt_versions_prompt_version", "prompt_versions")
    op.drop_table("prompt_versions")
    op.drop_index("ix_prompts_key_created", "prompts")
    op.drop_index("ix_prompts_key_name", "prompts")
    op.drop_table("prompts")

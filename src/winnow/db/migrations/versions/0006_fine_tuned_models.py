"""fine-tuned models: what fine-tuning jobs made, served by every process from this table

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fine_tuned_models",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("base_model", sa.String(200), nullable=False),
        sa.Column("job_id", sa.String(40), nullable=False),
        sa.Column("owner_key_id", sa.Integer(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_fine_tuned_models_job_id", "fine_tuned_models", ["job_id"])
    op.create_index("ix_fine_tuned_models_owner_key_id", "fine_tuned_models", ["owner_key_id"])


def downgrade() -> None:
    op.drop_index("ix_fine_tuned_models_owner_key_id", "fine_tuned_models")
    op.drop_index("ix_fine_tuned_models_job_id", "fine_tuned_models")
    op.drop_table("fine_tuned_models")

"""job shards: parts of one SDG job that different workers claim

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_shards",
        sa.Column("job_id", sa.String(40), primary_key=True),
        sa.Column("shard", sa.Integer(), primary_key=True),
        sa.Column("first_row", sa.Integer(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("worker", sa.String(200), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("checkpoint", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_job_shards_status", "job_shards", ["status"])
    # SDG jobs in flight under the one-worker store become one shard each, carrying their checkpoint
    # (the same runner format), so that a worker of this version resumes them where they stopped.
    jobs = sa.table(
        "sdg_jobs",
        sa.column("id", sa.String),
        sa.column("kind", sa.String),
        sa.column("status", sa.String),
        sa.column("prompts_total", sa.Integer),
        sa.column("attempts", sa.Integer),
        sa.column("checkpoint", sa.JSON),
        sa.column("worker", sa.String),
        sa.column("lease_until", sa.DateTime(timezone=True)),
        sa.column("updated_at", sa.DateTime(timezone=True)),
    )
    shards = sa.table(
        "job_shards",
        sa.column("job_id", sa.String),
        sa.column("shard", sa.Integer),
        sa.column("first_row", sa.Integer),
        sa.column("rows", sa.Integer),
        sa.column("status", sa.String),
        sa.column("attempts", sa.Integer),
        sa.column("checkpoint", sa.JSON),
        sa.column("updated_at", sa.DateTime(timezone=True)),
    )
    connection = op.get_bind()
    in_flight = connection.execute(
        sa.select(jobs.c.id, jobs.c.prompts_total, jobs.c.attempts, jobs.c.checkpoint, jobs.c.updated_at).where(
            jobs.c.kind == "sdg", jobs.c.status.in_(("running", "paused"))
        )
    ).all()
    for job in in_flight:
        connection.execute(
            shards.insert().values(
                job_id=job.id,
                shard=0,
                first_row=0,
                rows=job.prompts_total,
                status="queued",
                attempts=job.attempts,
                checkpoint=job.checkpoint or {},
                updated_at=job.updated_at,
            )
        )
        connection.execute(
            jobs.update().where(jobs.c.id == job.id).values(checkpoint={}, worker=None, lease_until=None)
        )


def downgrade() -> None:
    op.drop_table("job_shards")

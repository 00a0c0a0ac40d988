"""Deadlines: campaigns with a deadline, deliverables, and what the deadline policy decided.

jobs: campaign, deliverable, expected_s (queue.yaml's `campaign:`, `deliverable:`, `expected:`);
urgent, held, finish_by, deadline_note (the policy's decisions); estimate_s, estimate_source (the
forecast's estimate before the job started, to measure its error). The claim index puts urgent
jobs first. campaigns: one row per campaign with a deadline.

Plain ADD COLUMN, not batch mode (see 0006).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sched_jobs", sa.Column("campaign", sa.String(200), nullable=True))
    op.add_column("sched_jobs", sa.Column("deliverable", sa.Boolean, nullable=False, server_default=sa.false()))
    op.add_column("sched_jobs", sa.Column("expected_s", sa.Float, nullable=True))
    op.add_column("sched_jobs", sa.Column("urgent", sa.Boolean, nullable=False, server_default=sa.false()))
    op.add_column("sched_jobs", sa.Column("held", sa.Text, nullable=True))
    op.add_column("sched_jobs", sa.Column("finish_by", sa.DateTime, nullable=True))
    op.add_column("sched_jobs", sa.Column("deadline_note", sa.Text, nullable=True))
    op.add_column("sched_jobs", sa.Column("estimate_s", sa.Float, nullable=True))
    op.add_column("sched_jobs", sa.Column("estimate_source", sa.String(40), nullable=True))
    op.create_index("ix_sched_jobs_campaign", "sched_jobs", ["campaign"])
    op.drop_index("ix_sched_jobs_claim", table_name="sched_jobs")
    op.create_index("ix_sched_jobs_claim", "sched_jobs",
                    ["status", sa.text("urgent DESC"), sa.text("priority DESC"), "id"])
    op.create_table(
        "sched_campaigns",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("deadline", sa.DateTime, nullable=True),
        sa.Column("deadline_text", sa.String(64), nullable=True),
        sa.Column("policy", sa.String(10), nullable=False),
        sa.Column("margin", sa.Float, nullable=False),
        sa.Column("first_submit_at", sa.DateTime, nullable=False),
        sa.Column("engaged_at", sa.DateTime, nullable=True),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.execute(sa.text("UPDATE sched_meta SET value = '9' WHERE key = 'schema_version'"))

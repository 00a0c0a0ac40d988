"""A job's own one-line failure reason (`error`), written by its runner, kept in the database.

The worker used to read it only from `.sched-error.json` in the run folder; with the folder gone
(deleted while the job ran, or on another host's disk) the reason was lost.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sched_jobs") as batch:
        batch.add_column(sa.Column("error", sa.Text, nullable=True))
    op.execute(sa.text("UPDATE sched_meta SET value = '3' WHERE key = 'schema_version'"))

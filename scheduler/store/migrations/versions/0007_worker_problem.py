"""What keeps a worker from claiming, for `sched status`: its run folder is full or not writable,
its database file was deleted or replaced, CUDA does not work on its GPUs.

workers: problem (one line, or NULL while it claims).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sched_workers", sa.Column("problem", sa.String(500), nullable=True))
    op.execute(sa.text("UPDATE sched_meta SET value = '7' WHERE key = 'schema_version'"))

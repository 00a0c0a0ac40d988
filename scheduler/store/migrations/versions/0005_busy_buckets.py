"""Slot time used per slot and 5-minute bucket (`sched_busy`), filled from the jobs of the last two days.

`sched status` showed the busy share of the last hour and day by reading every job that ended in
the last day; it now sums these buckets (scheduler/store/busy.py).

Revision ID: 0005
Revises: 0004
"""

from datetime import timedelta

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sched_busy",
        sa.Column("slot", sa.String(32), primary_key=True),
        sa.Column("bucket", sa.DateTime, primary_key=True),
        sa.Column("seconds", sa.Float, nullable=False),
    )
    from scheduler.store.busy import rebuild
    from scheduler.store.engine import db_now

    conn = op.get_bind()
    rebuild(conn, since=db_now(conn) - timedelta(days=2))
    op.execute(sa.text("UPDATE sched_meta SET value = '5' WHERE key = 'schema_version'"))

"""The indexes over job endings hold ended jobs only.

ix_sched_jobs_finished, ix_sched_jobs_kind_finished and ix_sched_jobs_status_finished serve what
reads endings (`sched status`, the forecast's history, the busy buckets' edges); every query that
uses them bounds or requires finished_at. Holding every job, they were rewritten at each claim
(status queued -> running moves the row's key) and each finish: a third of a claim+finish's cost
on SQLite. With `WHERE finished_at IS NOT NULL` a claim touches none of them and a finish adds
one entry to each.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

ENDED = sa.text("finished_at IS NOT NULL")
INDEXES = {
    "ix_sched_jobs_finished": ["finished_at"],
    "ix_sched_jobs_kind_finished": ["kind", "status", "finished_at"],
    "ix_sched_jobs_status_finished": ["status", "finished_at"],
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.drop_index(name, table_name="sched_jobs")
        op.create_index(name, "sched_jobs", columns, sqlite_where=ENDED, postgresql_where=ENDED)
    op.execute(sa.text("UPDATE sched_meta SET value = '10' WHERE key = 'schema_version'"))

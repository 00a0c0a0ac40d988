"""Retries that wait, and job ids that are never given twice.

jobs: not_before (not claimed before this time, by the database's clock: a job's `not_before:` or
a retry's delay), retry_delay_s (the delay before its first retry; NULL: the default).

meta: `job_id_high`, the highest job id ever given. A SQLite INTEGER PRIMARY KEY without
AUTOINCREMENT takes max(id) + 1, so removing the newest job (`sched rm`) gave its id, and its
run folder name, to the next job. AUTOINCREMENT would need sched_jobs rebuilt, and dropping the
old table cascade-deletes every metric and artifact row; so inserts on SQLite give explicit ids
above this mark and raise it in the same transaction (`queries.insert_jobs`). It starts at the
highest id in the table: an id removed before this upgrade cannot be known. PostgreSQL's SERIAL
sequence never gives an id twice; the row is written there too but not used.

Plain ADD COLUMN, not batch mode (see 0006).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sched_jobs", sa.Column("not_before", sa.DateTime, nullable=True))
    op.add_column("sched_jobs", sa.Column("retry_delay_s", sa.Float, nullable=True))
    op.execute(sa.text("INSERT INTO sched_meta (key, value) SELECT 'job_id_high', "
                       "CAST(COALESCE(MAX(id), 0) AS VARCHAR(32)) FROM sched_jobs"))
    op.execute(sa.text("UPDATE sched_meta SET value = '8' WHERE key = 'schema_version'"))

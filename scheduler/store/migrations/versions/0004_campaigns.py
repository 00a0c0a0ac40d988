"""Campaign bookkeeping: each job's content hash, the file it came from, a link to the job whose
results it reused, and the commands to run when it ends.

- `spec_hash`: kind + params + the hashes of the jobs it waits for (+ the input files' contents),
  so a resubmitted file can tell same, changed and new jobs apart;
- `source`: the queue file (absolute path) or `sched add` that submitted it;
- `reused_from`: the succeeded job whose results stand for this one (`sched submit --reuse`);
- `hooks`: `{"on_finish": argv, "on_failure": argv}` from queue.yaml.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sched_jobs") as batch:
        batch.add_column(sa.Column("spec_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("source", sa.Text, nullable=True))
        batch.add_column(sa.Column("reused_from", sa.Integer, nullable=True))
        batch.add_column(sa.Column("hooks", sa.JSON, nullable=True))
    op.create_index("ix_sched_jobs_spec_hash", "sched_jobs", ["spec_hash"])
    op.execute(sa.text("UPDATE sched_meta SET value = '4' WHERE key = 'schema_version'"))

"""GPU sharing and gangs: what a job asks of GPU memory, where it was placed, the peak it reached,
and the GPUs a worker keeps free for a waiting multi-GPU job. Also an index for `sched status`' queue
estimate, which read every success of the last two weeks.

jobs: gpu_memory_mib / gpu_memory_auto (its `gpu_memory:`), memory_key (jobs alike in what decides
their memory share recorded peaks), exclusive (an out-of-memory on a shared GPU: a whole GPU next
time), placed_mib (the share it was given), gpu_peak_mib (torch's peak reserved memory).
workers: reservation (the job it collects free GPUs for).

Plain ADD COLUMN, not batch mode: batch mode rebuilds sched_jobs on SQLite, and dropping the old
table would cascade-delete every metric and artifact row.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sched_jobs", sa.Column("gpu_memory_mib", sa.Integer, nullable=True))
    op.add_column("sched_jobs", sa.Column("gpu_memory_auto", sa.Boolean, nullable=False,
                                          server_default=sa.false()))
    op.add_column("sched_jobs", sa.Column("memory_key", sa.String(32), nullable=True))
    op.add_column("sched_jobs", sa.Column("exclusive", sa.Boolean, nullable=False, server_default=sa.false()))
    op.add_column("sched_jobs", sa.Column("placed_mib", sa.Integer, nullable=True))
    op.add_column("sched_jobs", sa.Column("gpu_peak_mib", sa.Integer, nullable=True))
    op.create_index("ix_sched_jobs_memory_key", "sched_jobs", ["memory_key"])
    op.add_column("sched_workers", sa.Column("reservation", sa.JSON, nullable=True))
    # `sched status`' queue estimate (each queued kind's latest successes) as an index range
    op.create_index("ix_sched_jobs_kind_finished", "sched_jobs", ["kind", "status", "finished_at"])
    op.create_index("ix_sched_jobs_status_finished", "sched_jobs", ["status", "finished_at"])
    op.execute(sa.text("UPDATE sched_meta SET value = '6' WHERE key = 'schema_version'"))

"""The tables of sched 0.1 (schema version 1), as its `create_all` made them.

A database from sched 0.1 has these tables and no `sched_alembic_version`; it is stamped at this
revision and upgraded from here (see scheduler/store/migrate.py).

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sched_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(256), nullable=False),
    )
    op.create_table(
        "sched_jobs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("group_name", sa.String(200), nullable=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("gpus", sa.Integer, nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("timeout_s", sa.Float, nullable=True),
        sa.Column("preemptible", sa.Boolean, nullable=False),
        sa.Column("worker_id", sa.Integer, nullable=True),
        sa.Column("slot", sa.String(32), nullable=True),
        sa.Column("lease_until", sa.DateTime, nullable=True),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=True),
        sa.Column("finished_at", sa.DateTime, nullable=True),
        sa.Column("exit_code", sa.Integer, nullable=True),
        sa.Column("failure_kind", sa.String(20), nullable=True),
        sa.Column("message", sa.Text, nullable=True),
        sa.Column("log_path", sa.Text, nullable=True),
        sa.Column("output_dir", sa.Text, nullable=True),
        sa.Column("progress_done", sa.Float, nullable=True),
        sa.Column("progress_total", sa.Float, nullable=True),
        sa.Column("progress_message", sa.Text, nullable=True),
    )
    op.create_index("ix_sched_jobs_claim", "sched_jobs", ["status", sa.text("priority DESC"), "id"])
    op.create_index("ix_sched_jobs_finished", "sched_jobs", ["finished_at"])
    op.create_table(
        "sched_job_deps",
        sa.Column("job_id", sa.Integer, sa.ForeignKey("sched_jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("depends_on", sa.Integer, sa.ForeignKey("sched_jobs.id", ondelete="CASCADE"), primary_key=True),
    )
    op.create_index("ix_sched_job_deps_depends_on", "sched_job_deps", ["depends_on"])
    op.create_table(
        "sched_metrics",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("sched_jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("step", sa.Integer, nullable=True),
        sa.Column("split", sa.String(32), nullable=True),
        sa.Column("time", sa.DateTime, nullable=False),
    )
    op.create_index("ix_sched_metrics_job_id", "sched_metrics", ["job_id"])
    op.create_table(
        "sched_artifacts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("sched_jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.UniqueConstraint("job_id", "name", name="uq_sched_artifacts_job_name"),
    )
    op.create_index("ix_sched_artifacts_job_id", "sched_artifacts", ["job_id"])
    op.create_table(
        "sched_workers",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("slots", sa.JSON, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("heartbeat", sa.DateTime, nullable=False),
        sa.Column("gpu_stats", sa.JSON, nullable=True),
    )
    op.create_table(
        "sched_cron_fires",
        sa.Column("cron_name", sa.String(200), primary_key=True),
        sa.Column("fire_time", sa.DateTime, primary_key=True),
        sa.Column("worker", sa.String(255), nullable=True),
        sa.Column("jobs_submitted", sa.Integer, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
    )
    op.create_table(
        "sched_apscheduler_jobs",
        sa.Column("id", sa.Unicode(191), primary_key=True),
        sa.Column("next_run_time", sa.Float(25)),
        sa.Column("job_state", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_sched_apscheduler_jobs_next_run_time", "sched_apscheduler_jobs", ["next_run_time"])
    op.execute(sa.text("INSERT INTO sched_meta (key, value) VALUES ('schema_version', '1')"))

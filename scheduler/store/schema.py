"""The queue's tables (SQLAlchemy Core). The migrations in `migrations/versions` build exactly
these; a test compares the two on SQLite and PostgreSQL, so a column added here without a
migration (or the other way round) fails the suite.

Tables: jobs and their dependencies, metrics, artifacts, workers, a key/value meta table (the
drain flag, and the legacy schema number that stops sched 0.1 from opening a newer database),
claimed cron firings, and APScheduler's own job store table (its columns are APScheduler's).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    Unicode,
    UniqueConstraint,
    false,
)

from .states import QUEUED, WorkerState

metadata = MetaData()

jobs = Table(
    "sched_jobs", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    # Jobs expanded from one queue.yaml entry with `workers: k` share a group (e.g. one Optuna study).
    Column("group_name", String(200), nullable=True),
    Column("kind", String(64), nullable=False),
    Column("params", JSON, nullable=False, default=dict),
    Column("priority", Integer, nullable=False, default=0),
    Column("status", String(20), nullable=False, default=QUEUED),
    Column("gpus", Integer, nullable=False, default=0),
    Column("tags", JSON, nullable=False, default=list),
    Column("attempts", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False, default=1),
    Column("timeout_s", Float, nullable=True),
    # May be asked to stop (and is queued again) when a higher-priority job waits for its slot.
    Column("preemptible", Boolean, nullable=False, default=False),
    Column("worker_id", Integer, nullable=True),
    Column("slot", String(32), nullable=True),
    Column("lease_until", DateTime, nullable=True),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("created_at", DateTime, nullable=False),
    Column("started_at", DateTime, nullable=True),
    Column("finished_at", DateTime, nullable=True),
    Column("exit_code", Integer, nullable=True),
    Column("failure_kind", String(20), nullable=True),
    Column("message", Text, nullable=True),
    Column("log_path", Text, nullable=True),
    Column("output_dir", Text, nullable=True),
    Column("progress_done", Float, nullable=True),
    Column("progress_total", Float, nullable=True),
    Column("progress_message", Text, nullable=True),
    # The one-line reason its runner reported for the current attempt's failure (kept in the
    # database: the run folder may be gone when the worker reads it).
    Column("error", Text, nullable=True),
    # kind + params + the hashes of its dependencies (+ its input files' contents): a resubmitted
    # campaign compares jobs by it, and `--reuse` finds a succeeded twin by it.
    Column("spec_hash", String(64), nullable=True, index=True),
    Column("source", Text, nullable=True),  # the queue file that submitted it, or "sched add"
    Column("reused_from", Integer, nullable=True),  # the succeeded job whose results stand for this one
    Column("hooks", JSON, nullable=True),  # {"on_finish": argv, "on_failure": argv}
    # GPU memory (scheduler/resources.py): its `gpu_memory:` (MiB, or auto), the key its like share
    # recorded peaks under, whole GPU after an out-of-memory on a shared one, the share it was
    # placed with, and the peak torch reserved (MiB).
    Column("gpu_memory_mib", Integer, nullable=True),
    Column("gpu_memory_auto", Boolean, nullable=False, default=False, server_default=false()),
    Column("memory_key", String(32), nullable=True, index=True),
    Column("exclusive", Boolean, nullable=False, default=False, server_default=false()),
    Column("placed_mib", Integer, nullable=True),
    Column("gpu_peak_mib", Integer, nullable=True),
    # Not claimed before this time (database clock, UTC): its `not_before:`, or a retry's delay.
    Column("not_before", DateTime, nullable=True),
    # The delay before its first retry (doubling for each further one, with jitter); NULL: 30 s.
    Column("retry_delay_s", Float, nullable=True),
    # Deadlines (scheduler/deadline/): the campaign it belongs to (queue.yaml's `campaign:`, else the
    # file's name), whether it must be done by the campaign's deadline, and its `expected:` hint (s).
    Column("campaign", String(200), nullable=True, index=True),
    Column("deliverable", Boolean, nullable=False, default=False, server_default=false()),
    Column("expected_s", Float, nullable=True),
    # Set by the deadline policy: on a deliverable's path, it goes first whatever its priority;
    # held (the reason), it waits until the deliverables are done; finish_by, a tune starts no
    # trial that would end after it; note, the policy's last word on it (shown by `sched show`).
    Column("urgent", Boolean, nullable=False, default=False, server_default=false()),
    Column("held", Text, nullable=True),
    Column("finish_by", DateTime, nullable=True),
    Column("deadline_note", Text, nullable=True),
    # The duration the forecast expected before it started (and from where): `sched forecast
    # --errors` compares it with how long it took.
    Column("estimate_s", Float, nullable=True),
    Column("estimate_source", String(40), nullable=True),
)
# The claim query walks this index in claim order (urgent first, then priority high to low, then
# FIFO) and stops at the first runnable row, so a claim stays fast with 100,000 queued jobs.
Index("ix_sched_jobs_claim", jobs.c.status, jobs.c.urgent.desc(), jobs.c.priority.desc(), jobs.c.id)
# The indexes over endings hold ended jobs only (migration 0010): a claim then touches none of them.
# A query meant to use one must bound finished_at or say `finished_at IS NOT NULL`.
_ENDED = jobs.c.finished_at.is_not(None)
# `sched status` lists recent endings and sums GPU time over the last day from this index.
Index("ix_sched_jobs_finished", jobs.c.finished_at, sqlite_where=_ENDED, postgresql_where=_ENDED)
# `sched status`' queue estimate reads each queued kind's latest successes: an index range, however
# many other jobs ended since.
Index("ix_sched_jobs_kind_finished", jobs.c.kind, jobs.c.status, jobs.c.finished_at,
      sqlite_where=_ENDED, postgresql_where=_ENDED)
# ... and its latest failures, which may be few among many successes.
Index("ix_sched_jobs_status_finished", jobs.c.status, jobs.c.finished_at, sqlite_where=_ENDED,
      postgresql_where=_ENDED)

# `job_id` may run only once `depends_on` has succeeded.
deps = Table(
    "sched_job_deps", metadata,
    Column("job_id", Integer, ForeignKey("sched_jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("depends_on", Integer, ForeignKey("sched_jobs.id", ondelete="CASCADE"), primary_key=True),
    Index("ix_sched_job_deps_depends_on", "depends_on"),
)

metrics = Table(
    "sched_metrics", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", Integer, ForeignKey("sched_jobs.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("key", String(128), nullable=False),
    Column("value", Float, nullable=False),
    Column("step", Integer, nullable=True),
    Column("split", String(32), nullable=True),
    Column("time", DateTime, nullable=False),
)

artifacts = Table(
    "sched_artifacts", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", Integer, ForeignKey("sched_jobs.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("path", Text, nullable=False),
    UniqueConstraint("job_id", "name", name="uq_sched_artifacts_job_name"),
)

workers = Table(
    "sched_workers", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("slots", JSON, nullable=False, default=list),
    Column("state", String(20), nullable=False, default=WorkerState.RUNNING.value),
    Column("started_at", DateTime, nullable=False),
    Column("heartbeat", DateTime, nullable=False),
    # NVML readings of the worker's GPUs at its last heartbeat: [{gpu, util, mem_used, mem_total}]
    Column("gpu_stats", JSON, nullable=True),
    # The waiting multi-GPU job it keeps free GPUs for: {job_id, name, priority, gpus, needs}
    Column("reservation", JSON, nullable=True),
    # What keeps it from claiming (runs folder full, database file replaced, CUDA unusable); NULL: nothing
    Column("problem", String(500), nullable=True),
)

# Key/value settings of the whole queue: the drain flag; `schema_version` for sched 0.1 (see migrate.py);
# `job_id_high` on SQLite, the highest job id ever given (ids are never reused: queries.insert_jobs).
meta = Table(
    "sched_meta", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", String(256), nullable=False),
)

# A campaign's deadline (queue.yaml's `deadline:`): when its deliverables must be done, what the
# policy does about it (act or warn), the share of the time left it keeps as margin, when it was
# first submitted (a `48h` deadline counts from then), and since when the policy acts on it.
campaigns = Table(
    "sched_campaigns", metadata,
    Column("name", String(200), primary_key=True),
    Column("deadline", DateTime, nullable=True),
    Column("deadline_text", String(64), nullable=True),  # as written: `48h`, `2026-12-10T09:00+09:00`
    Column("policy", String(10), nullable=False, default="act"),
    Column("margin", Float, nullable=False, default=0.1),
    Column("first_submit_at", DateTime, nullable=False),
    Column("engaged_at", DateTime, nullable=True),
    Column("updated_at", DateTime, nullable=False),
)

# One firing of a scheduled submission, claimed by the worker that submits it (see cron.py).
cron_fires = Table(
    "sched_cron_fires", metadata,
    Column("cron_name", String(200), primary_key=True),
    Column("fire_time", DateTime, primary_key=True),
    Column("worker", String(255), nullable=True),
    Column("jobs_submitted", Integer, nullable=True),
    Column("error", Text, nullable=True),
)

# Slot time used by jobs, per slot and 5-minute bucket (scheduler/store/busy.py): `sched status`
# sums a day of it without reading every job that ended in that day.
busy = Table(
    "sched_busy", metadata,
    Column("slot", String(32), primary_key=True),
    Column("bucket", DateTime, primary_key=True),
    Column("seconds", Float, nullable=False),
)

# APScheduler's SQLAlchemyJobStore table, as APScheduler 3 defines it (the store reads and writes it).
CRON_TABLE = "sched_apscheduler_jobs"
cron_store = Table(
    CRON_TABLE, metadata,
    Column("id", Unicode(191), primary_key=True),
    Column("next_run_time", Float(25), index=True),
    Column("job_state", LargeBinary, nullable=False),
)

SCHED_TABLES = frozenset(metadata.tables)

"""The queue's tables: jobs and their dependencies, metrics, artifacts, workers, and a meta row.

Job states and their transitions (each arrow is one function in `scheduler.jobqueue`):

    queued ──claim──▶ running ──succeed──▶ succeeded
      ▲                 │ ├──fail (retries left)────────▶ queued
      │                 │ ├──fail (no retry left)───────▶ failed | killed   ─┐
      │                 │ ├──requeue_stale (retries left)▶ queued             │ dependents
      │                 │ ├──requeue_stale (none left)──▶ lost              ─┤ become
      │                 │ ├──preempt────────────────────▶ queued             │ upstream_failed
      │                 │ └──finish_cancel──────────────▶ cancelled         ─┘
      ├──cancel (queued)─────────────────────────────────▶ cancelled
      └──retry (failed, killed, lost, cancelled, upstream_failed)

`preempt` puts a running job back to `queued` with failure kind `preempted`: it was stopped from
outside (worker shutdown, a higher-priority job waiting) and does not spend an attempt. Every way
back to `queued` keeps `failure_kind`/`message`, so `sched status` can say why a job is waiting
again. Only `queued` is runnable, so the claim query walks one index range in claim order.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA_VERSION = 1


class JobStatus(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the job raised or exited non-zero
    KILLED = "killed"  # a signal or its timeout ended it
    LOST = "lost"  # its worker vanished (lease expired) with no attempt left
    UPSTREAM_FAILED = "upstream_failed"  # a dependency ended without success
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


TERMINAL_FAILURES = (
    JobStatus.FAILED.value,
    JobStatus.KILLED.value,
    JobStatus.LOST.value,
    JobStatus.UPSTREAM_FAILED.value,
    JobStatus.CANCELLED.value,
)
RETRYABLE = TERMINAL_FAILURES
ALL_STATES = tuple(s.value for s in JobStatus)


class Base(DeclarativeBase):
    pass


class Meta(Base):
    """Key/value settings of the whole queue: the schema version and the drain flag."""

    __tablename__ = "sched_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))


class Job(Base):
    __tablename__ = "sched_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    # Jobs expanded from one queue.yaml entry with `workers: k` share a group (e.g. one Optuna study).
    group_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    kind: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(20), default=JobStatus.QUEUED.value)
    gpus: Mapped[int] = mapped_column(Integer, default=0)
    tags: Mapped[list] = mapped_column(JSON, default=list)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=1)
    timeout_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    # May be asked to stop (and is queued again) when a higher-priority job waits for its slot.
    preemptible: Mapped[bool] = mapped_column(Boolean, default=False)
    worker_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    slot: Mapped[str | None] = mapped_column(String(32), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    failure_kind: Mapped[str | None] = mapped_column(String(20), nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    log_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    output_dir: Mapped[str | None] = mapped_column(Text, nullable=True)
    progress_done: Mapped[float | None] = mapped_column(Float, nullable=True)
    progress_total: Mapped[float | None] = mapped_column(Float, nullable=True)
    progress_message: Mapped[str | None] = mapped_column(Text, nullable=True)


# The claim query walks this index in claim order (priority high to low, then FIFO) and stops at
# the first runnable row, so a claim stays fast with 100,000 queued jobs.
Index("ix_sched_jobs_claim", Job.status, Job.priority.desc(), Job.id)
# `sched status` lists recent endings and sums GPU time over the last day from this index.
Index("ix_sched_jobs_finished", Job.finished_at)


class JobDependency(Base):
    """`job_id` may run only once `depends_on` has succeeded."""

    __tablename__ = "sched_job_deps"
    job_id: Mapped[int] = mapped_column(ForeignKey("sched_jobs.id", ondelete="CASCADE"), primary_key=True)
    depends_on: Mapped[int] = mapped_column(ForeignKey("sched_jobs.id", ondelete="CASCADE"), primary_key=True)

    __table_args__ = (Index("ix_sched_job_deps_depends_on", "depends_on"),)


class Metric(Base):
    __tablename__ = "sched_metrics"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("sched_jobs.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(128))
    value: Mapped[float] = mapped_column(Float)
    step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    split: Mapped[str | None] = mapped_column(String(32), nullable=True)
    time: Mapped[datetime] = mapped_column(DateTime)


class Artifact(Base):
    __tablename__ = "sched_artifacts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("sched_jobs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    path: Mapped[str] = mapped_column(Text)

    __table_args__ = (UniqueConstraint("job_id", "name", name="uq_sched_artifacts_job_name"),)


class WorkerState(str, enum.Enum):
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Worker(Base):
    __tablename__ = "sched_workers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    slots: Mapped[list] = mapped_column(JSON, default=list)
    state: Mapped[str] = mapped_column(String(20), default=WorkerState.RUNNING.value)
    started_at: Mapped[datetime] = mapped_column(DateTime)
    heartbeat: Mapped[datetime] = mapped_column(DateTime)
    # NVML readings of the worker's GPUs at its last heartbeat: [{gpu, util, mem_used, mem_total}]
    gpu_stats: Mapped[list | None] = mapped_column(JSON, nullable=True)


class CronFire(Base):
    """One firing of a scheduled submission, claimed by the worker that submits it (see cron.py)."""

    __tablename__ = "sched_cron_fires"
    cron_name: Mapped[str] = mapped_column(String(200), primary_key=True)
    fire_time: Mapped[datetime] = mapped_column(DateTime, primary_key=True)
    worker: Mapped[str | None] = mapped_column(String(255), nullable=True)
    jobs_submitted: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)

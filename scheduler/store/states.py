"""Job and worker states, and the transitions between them. No database imports: the CLI, the
renderer and the runner use these names without paying for SQLAlchemy.

Job states and their transitions (each arrow is one method of `scheduler.jobqueue.JobQueue`):

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


class FailureKind(str, enum.Enum):
    """Why a job last left `running` without success (kept while it waits in the queue again)."""

    FAILED = "failed"
    KILLED = "killed"
    LOST = "lost"
    UPSTREAM_FAILED = "upstream_failed"
    CANCELLED = "cancelled"
    PREEMPTED = "preempted"  # not a state: a preempted job is queued again

    def __str__(self) -> str:
        return self.value


class WorkerState(str, enum.Enum):
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"

    def __str__(self) -> str:
        return self.value


QUEUED = JobStatus.QUEUED.value
RUNNING = JobStatus.RUNNING.value
SUCCEEDED = JobStatus.SUCCEEDED.value
FAILED = JobStatus.FAILED.value
KILLED = JobStatus.KILLED.value
LOST = JobStatus.LOST.value
UPSTREAM_FAILED = JobStatus.UPSTREAM_FAILED.value
CANCELLED = JobStatus.CANCELLED.value
PREEMPTED = FailureKind.PREEMPTED.value

# Endings without success: retry() may queue these again; their dependents are upstream_failed.
TERMINAL_FAILURES = (FAILED, KILLED, LOST, UPSTREAM_FAILED, CANCELLED)
RETRYABLE = TERMINAL_FAILURES
# What `sched status` and the report list under "Failures": endings the user did not ask for (a job
# the user cancelled is no failure; one whose upstream failed is, as the root of what went wrong).
FAILURES = (FAILED, KILLED, LOST, UPSTREAM_FAILED)
FINISHED = (SUCCEEDED, *TERMINAL_FAILURES)
ALL_STATES = tuple(s.value for s in JobStatus)

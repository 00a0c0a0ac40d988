"""Prebuilt SQL for the queue's hot paths (claim, heartbeat, succeed).

Building a SQLAlchemy expression costs more Python time than SQLite takes to run it (profiled:
about 60% of a claim+succeed went to building `Job.x == y` trees). These statements are built once
with bind parameters and reused; SQLAlchemy's compiled cache then makes each run cheap.
"""

from __future__ import annotations

from sqlalchemy import and_, bindparam, exists, select, update
from sqlalchemy.orm import aliased

from .models import Job, JobDependency, Meta

jobs = Job.__table__
deps = JobDependency.__table__
meta = Meta.__table__
_dep_job = aliased(jobs)

# A queued job is blocked while any of its dependencies has not succeeded.
_blocked = exists().where(deps.c.job_id == jobs.c.id, deps.c.depends_on == _dep_job.c.id,
                          _dep_job.c.status != "succeeded")
_drained = exists().where(meta.c.key == "drained", meta.c.value == "1")

_RUNNABLE = (jobs.c.status == "queued", jobs.c.gpus <= bindparam("slot_gpus"), ~_blocked, ~_drained)

CLAIM_CANDIDATE = (
    select(jobs.c.id, jobs.c.name)
    .where(*_RUNNABLE)
    .order_by(jobs.c.priority.desc(), jobs.c.id)
    .limit(1)
    # PostgreSQL: other claimers skip this row instead of waiting for it. SQLite renders nothing
    # here; BEGIN IMMEDIATE already serialises writers there.
    .with_for_update(skip_locked=True, of=jobs)
)

# What a claim would take next, without taking it: decides whether to preempt a backfill job.
TOP_WAITING = select(jobs.c.priority).where(*_RUNNABLE).order_by(jobs.c.priority.desc(), jobs.c.id).limit(1)

CLAIMED_COLUMNS = (jobs.c.id, jobs.c.name, jobs.c.kind, jobs.c.params, jobs.c.gpus, jobs.c.attempts,
                   jobs.c.max_attempts, jobs.c.timeout_s, jobs.c.output_dir, jobs.c.log_path,
                   jobs.c.priority, jobs.c.preemptible)

# The guard `status == 'queued'` makes the claim safe without row locks (SQLite): a second
# claimer of the same row changes 0 rows and reports no win.
CLAIM = (
    update(jobs)
    .where(jobs.c.id == bindparam("b_id"), jobs.c.status == "queued")
    .values(status="running", worker_id=bindparam("b_worker"), slot=bindparam("b_slot"),
            attempts=jobs.c.attempts + 1, lease_until=bindparam("b_lease"),
            started_at=bindparam("b_now"), finished_at=None, exit_code=None, cancel_requested=False,
            progress_done=None, progress_total=None, progress_message=None,
            output_dir=bindparam("b_output_dir"), log_path=bindparam("b_log_path"))
    .returning(*CLAIMED_COLUMNS)
)

_owned_running = and_(jobs.c.id == bindparam("b_id"), jobs.c.worker_id == bindparam("b_worker"),
                      jobs.c.status == "running")

HEARTBEAT = (update(jobs).where(_owned_running).values(lease_until=bindparam("b_lease"))
             .returning(jobs.c.cancel_requested))

SUCCEED = update(jobs).where(_owned_running).values(
    status="succeeded", finished_at=bindparam("b_now"), exit_code=bindparam("b_exit"),
    failure_kind=None, message=None, lease_until=None)



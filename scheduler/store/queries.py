"""Every statement sched runs against its own tables, in one place, grouped by who needs it.

One style: SQLAlchemy Core on a `Connection` the caller holds (the caller owns the transaction, so
a state change and its consequences commit together). States come from `states` only. Callers:
`jobqueue` (the only writer of job state), `records` (metrics, artifacts, progress), `views`
(status, show), `results`, `report.gather`, `cron`, `studies`.

The hot path (claim, heartbeat, succeed) uses statements built once with bind parameters:
building a SQLAlchemy expression costs more Python time than SQLite takes to run it (profiled:
about 60% of a claim+succeed went to building `jobs.c.x == y` trees); SQLAlchemy's compiled cache
then makes each run cheap.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import (
    Connection,
    Row,
    and_,
    bindparam,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import CursorResult

from ..limits import claim_rank
from . import busy
from .schema import artifacts, cron_fires, deps, jobs, meta, metrics, workers
from .schema import busy as busy_table
from .states import (
    CANCELLED,
    FAILURES,
    LOST,
    PREEMPTED,
    QUEUED,
    RETRYABLE,
    RUNNING,
    SUCCEEDED,
    UPSTREAM_FAILED,
    WorkerState,
)

# ---- the hot path: prebuilt statements -----------------------------------------------------

_dep_job = jobs.alias("dep_job")
_drained = exists().where(meta.c.key == "drained", meta.c.value == "1")


def _due(table):
    """Its `not_before` (a retry's delay, or the time it was given) has passed by the database's
    clock: `b_now` is `DbClock`'s reading, the clock leases are judged by."""
    return or_(table.c.not_before.is_(None), table.c.not_before <= bindparam("b_now"))


def _waiting(table):
    """Queued, fits a slot with `slot_gpus` GPUs, every dependency succeeded, queue not drained."""
    blocked = exists().where(deps.c.job_id == table.c.id, deps.c.depends_on == _dep_job.c.id,
                             _dep_job.c.status != SUCCEEDED)
    return (table.c.status == QUEUED, table.c.gpus <= bindparam("slot_gpus"), ~blocked, ~_drained,
            table.c.held.is_(None))


def claim_order(table=jobs) -> tuple:
    """Claim order: jobs the deadline policy marked urgent first, then priority high to low, then
    first submitted (the ix_sched_jobs_claim index)."""
    return (table.c.urgent.desc(), table.c.priority.desc(), table.c.id)


def _runnable(table):
    """Waiting (above) and due: what a claim may take now."""
    return (*_waiting(table), _due(table))


# A queued job is blocked while any of its dependencies has not succeeded.
_blocked = exists().where(deps.c.job_id == jobs.c.id, deps.c.depends_on == _dep_job.c.id,
                          _dep_job.c.status != SUCCEEDED)
_RUNNABLE = _runnable(jobs)

CLAIM_CANDIDATE = (
    select(jobs.c.id, jobs.c.name)
    .where(*_RUNNABLE)
    .order_by(*claim_order())
    .limit(1)
    # PostgreSQL: other claimers skip this row instead of waiting for it. SQLite renders nothing
    # here; BEGIN IMMEDIATE already serialises writers there.
    .with_for_update(skip_locked=True, of=jobs)
)

# What a claim would take next, without taking it: decides whether to preempt a backfill job.
TOP_WAITING = select(jobs.c.priority, jobs.c.urgent).where(*_RUNNABLE).order_by(*claim_order()).limit(1)
# A job that only waits for its `not_before` (a retry's delay), or that the deadline policy holds
# until the deliverables are done: runnable later, so a `--until-empty` worker waits for it.
_later = (jobs.c.status == QUEUED, jobs.c.gpus <= bindparam("slot_gpus"), ~_blocked, ~_drained)
DELAYED_WAITING = select(jobs.c.id).where(*_later, or_(jobs.c.not_before > bindparam("b_now"),
                                                       jobs.c.held.is_not(None))).limit(1)

CLAIMED_COLUMNS = (jobs.c.id, jobs.c.name, jobs.c.kind, jobs.c.params, jobs.c.gpus, jobs.c.attempts,
                   jobs.c.max_attempts, jobs.c.timeout_s, jobs.c.output_dir, jobs.c.log_path,
                   jobs.c.priority, jobs.c.preemptible, jobs.c.group_name, jobs.c.hooks, jobs.c.urgent)

# The kinds of the next jobs a claim would take (whatever the slot): what a spare runner preloads.
# Blocked jobs count: a fine-tune waiting for its TAPT is what the spare started beside the TAPT
# should import.
UPCOMING_KINDS = (select(jobs.c.kind).where(jobs.c.status == QUEUED)
                  .order_by(*claim_order()).limit(bindparam("limit")))

# The guard `status == queued` makes the claim safe without row locks (SQLite): a second claimer
# of the same row changes 0 rows and reports no win.
CLAIM = (
    update(jobs)
    .where(jobs.c.id == bindparam("b_id"), jobs.c.status == QUEUED)
    .values(status=RUNNING, worker_id=bindparam("b_worker"), slot=bindparam("b_slot"),
            attempts=jobs.c.attempts + 1, lease_until=bindparam("b_lease"),
            started_at=bindparam("b_now"), finished_at=None, exit_code=None, cancel_requested=False,
            progress_done=None, progress_total=None, progress_message=None, error=None,
            output_dir=bindparam("b_output_dir"), log_path=bindparam("b_log_path"))
    .returning(*CLAIMED_COLUMNS)
)

# The claim in one statement (the hot path, scheduler/store/hotpath.py): the next runnable job,
# locked and skipped by other claimers on PostgreSQL, flipped to running only if still queued.
_candidate = jobs.alias("candidate")
CLAIM_NEXT = (
    update(jobs)
    .where(jobs.c.id == select(_candidate.c.id).where(*_runnable(_candidate))
           .order_by(*claim_order(_candidate)).limit(1)
           .with_for_update(skip_locked=True, of=_candidate).scalar_subquery(),
           jobs.c.status == QUEUED)
    .values(status=RUNNING, worker_id=bindparam("b_worker"), slot=bindparam("b_slot"),
            attempts=jobs.c.attempts + 1, lease_until=bindparam("b_lease"),
            started_at=bindparam("b_now"), finished_at=None, exit_code=None, cancel_requested=False,
            progress_done=None, progress_total=None, progress_message=None, error=None)
    .returning(*CLAIMED_COLUMNS)
)
SET_RUN_PATHS = (update(jobs).where(jobs.c.id == bindparam("b_id"))
                 .values(output_dir=bindparam("b_output_dir"), log_path=bindparam("b_log_path")))

_owned_running = and_(jobs.c.id == bindparam("b_id"), jobs.c.worker_id == bindparam("b_worker"),
                      jobs.c.status == RUNNING)

HEARTBEAT = (update(jobs).where(_owned_running).values(lease_until=bindparam("b_lease"))
             .returning(jobs.c.cancel_requested))

# Every ending of an attempt returns its start and slot: the time goes to sched_busy (busy.py).
SUCCEED = update(jobs).where(_owned_running).values(
    status=SUCCEEDED, finished_at=bindparam("b_now"), exit_code=bindparam("b_exit"),
    failure_kind=None, message=None, lease_until=None).returning(jobs.c.started_at, jobs.c.slot)


NOTIFY_CHANNEL = "sched_queue"
_NOTIFY = text(f"NOTIFY {NOTIFY_CHANNEL}")


def notify_change(conn: Connection) -> None:
    """Wake idle workers (PostgreSQL LISTEN, see scheduler/wakeup.py): a job may be runnable now.
    Sent at commit; SQLite needs nothing (idle workers watch its data_version)."""
    if conn.dialect.name == "postgresql":
        conn.execute(_NOTIFY)


def refresh_statistics(conn: Connection) -> None:
    """Sample the job and dependency tables for PostgreSQL's planner (ANALYZE; bounded by
    default_statistics_target, not by the table's size)."""
    conn.execute(text(f"ANALYZE {jobs.name}, {deps.name}"))


def claim_candidate(conn: Connection, slot_gpus: int, now: datetime) -> Row | None:
    return conn.execute(CLAIM_CANDIDATE, {"slot_gpus": slot_gpus, "b_now": now}).first()


def claim(conn: Connection, **values) -> Row | None:
    """running under the claimer, or None when another claimer won (keys: see CLAIM's b_ params)."""
    return conn.execute(CLAIM, values).first()


def upcoming_kinds(conn: Connection, limit: int) -> list[str]:
    return list(dict.fromkeys(conn.execute(UPCOMING_KINDS, {"limit": limit}).scalars()))


# ---- GPU claims (scheduler/execute/placement.py decides the placement) --------------------------------------

# The runnable GPU jobs a worker with `slot_gpus` GPUs could run, in claim order; locked (others
# skip them on PostgreSQL) until the claim pass commits.
GPU_CANDIDATES = (
    select(jobs.c.id, jobs.c.name, jobs.c.priority, jobs.c.gpus, jobs.c.gpu_memory_mib, jobs.c.gpu_memory_auto,
           jobs.c.memory_key, jobs.c.exclusive, jobs.c.preemptible, jobs.c.urgent)
    .where(*_RUNNABLE, jobs.c.gpus >= 1)
    .order_by(*claim_order())
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True, of=jobs)
)

# CLAIM on the GPUs a claim pass chose, with the share it was given; the attempt's peak starts afresh.
CLAIM_PLACED = CLAIM.values(placed_mib=bindparam("b_placed"), gpu_peak_mib=None)


def gpu_candidates(conn: Connection, slot_gpus: int, limit: int, now: datetime) -> list[Row]:
    return conn.execute(GPU_CANDIDATES, {"slot_gpus": slot_gpus, "limit": limit, "b_now": now}).all()


def claim_placed(conn: Connection, **values) -> Row | None:
    """queued -> running on the GPUs a claim pass chose (keys: CLAIM_PLACED's b_ params)."""
    return conn.execute(CLAIM_PLACED, values).first()


def peaks_by_memory_key(conn: Connection, keys: Iterable[str]) -> dict[str, int]:
    """The highest GPU memory peak recorded per memory key (what `gpu_memory: auto` asks for)."""
    keys = sorted(set(keys))
    if not keys:
        return {}
    rows = conn.execute(select(jobs.c.memory_key, func.max(jobs.c.gpu_peak_mib))
                        .where(jobs.c.memory_key.in_(keys), jobs.c.gpu_peak_mib.is_not(None))
                        .group_by(jobs.c.memory_key))
    return {key: peak for key, peak in rows}


def record_gpu_peak(conn: Connection, job_id: int, peak_mib: int) -> None:
    """The most GPU memory the job's attempt reserved (kept: the highest of its processes)."""
    conn.execute(update(jobs).where(jobs.c.id == job_id)
                 .values(gpu_peak_mib=func.max(func.coalesce(jobs.c.gpu_peak_mib, 0), peak_mib)
                         if conn.dialect.name == "sqlite" else
                         func.greatest(func.coalesce(jobs.c.gpu_peak_mib, 0), peak_mib)))


def requeue_exclusive(conn: Connection, job_id: int, owner: int, message: str, now: datetime) -> bool:
    """running -> queued as a whole-GPU job, the attempt given back: it ran out of memory on a GPU
    it shared, which says nothing about the job itself."""
    return finish_owned(conn, job_id, owner, now, status=QUEUED, failure_kind=PREEMPTED, message=message,
                        attempts=jobs.c.attempts - 1, worker_id=None, exclusive=True)


def queued_gpu_asks(conn: Connection) -> list[int]:
    """The `gpus` of every job a worker could claim now (queued, dependencies met, queue not
    drained): what `sched slurm scale` sizes the worker jobs by."""
    return list(conn.execute(select(jobs.c.gpus).where(jobs.c.status == QUEUED, ~_blocked, ~_drained)).scalars())


def top_waiting_rank(conn: Connection, slot_gpus: int, now: datetime) -> int | None:
    """The claim rank (resources.claim_rank) of what the next claim for such a slot would take."""
    row = conn.execute(TOP_WAITING, {"slot_gpus": slot_gpus, "b_now": now}).first()
    return None if row is None else claim_rank(row.priority, row.urgent)


def any_delayed(conn: Connection, slot_gpus: int, now: datetime) -> bool:
    """A job that would be runnable but for its `not_before`."""
    return conn.execute(DELAYED_WAITING, {"slot_gpus": slot_gpus, "b_now": now}).first() is not None


def renew_lease(conn: Connection, job_id: int, worker_id: int, lease_until: datetime) -> bool | None:
    """The job's cancel flag after renewing its lease; None when it is no longer this worker's."""
    return conn.execute(HEARTBEAT, {"b_id": job_id, "b_worker": worker_id, "b_lease": lease_until}).scalar()


def succeed(conn: Connection, job_id: int, worker_id: int, now: datetime, exit_code: int) -> bool:
    row = conn.execute(SUCCEED, {"b_id": job_id, "b_worker": worker_id, "b_now": now, "b_exit": exit_code}).first()
    return _ended(conn, row, now)


def _ended(conn: Connection, row: Row | None, now: datetime) -> bool:
    """An attempt ended (row: its started_at and slot, or None when nothing changed): count its time."""
    if row is None:
        return False
    busy.add_span(conn, row.slot, row.started_at, now)
    return True


def _changed(result: CursorResult) -> bool:
    return result.rowcount == 1


# ---- submitting ----------------------------------------------------------------------------


# Built once: every submit runs these, and building a statement costs more than SQLite running it.
_JOBS_NAMED = select(jobs.c.id, jobs.c.name, jobs.c.status, jobs.c.attempts, jobs.c.spec_hash, jobs.c.kind,
                     jobs.c.params, jobs.c.gpus, jobs.c.group_name, jobs.c.source
                     ).where(jobs.c.name.in_(bindparam("names", expanding=True)))
_INSERT_JOBS = insert(jobs).returning(jobs.c.id, sort_by_parameter_order=True)


def jobs_named(conn: Connection, names: list[str]) -> list[Row]:
    """(id, name, status, attempts, spec_hash, and what a changed job is compared by: kind, params,
    gpus, group_name, source) of the jobs called one of `names`."""
    if not names:
        return []
    return conn.execute(_JOBS_NAMED, {"names": list(names)}).all()


def succeeded_with_hashes(conn: Connection, hashes: Iterable[str]) -> dict[str, int]:
    """{hash: the oldest succeeded job with it} (it may itself reuse another's results)."""
    hashes = list(set(hashes))
    if not hashes:
        return {}
    rows = conn.execute(select(jobs.c.spec_hash, func.min(jobs.c.id)).where(
        jobs.c.spec_hash.in_(hashes), jobs.c.status == SUCCEEDED).group_by(jobs.c.spec_hash)).all()
    return dict(rows)


def jobs_from_source(conn: Connection, source: str) -> list[Row]:
    """(id, name, status) of the jobs a file submitted."""
    return conn.execute(select(jobs.c.id, jobs.c.name, jobs.c.status).where(jobs.c.source == source)
                        .order_by(jobs.c.id)).all()


def rewrite_job(conn: Connection, job_id: int, **values) -> bool:
    """A queued job that never started takes the new spec (resubmitted campaign)."""
    return _changed(conn.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.status == QUEUED,
                                                    jobs.c.attempts == 0).values(**values)))


def delete_dependencies(conn: Connection, job_id: int) -> None:
    conn.execute(deps.delete().where(deps.c.job_id == job_id))


def rename_job(conn: Connection, job_id: int, name: str) -> None:
    conn.execute(update(jobs).where(jobs.c.id == job_id).values(name=name))


def copy_records(conn: Connection, source_id: int, target_id: int) -> None:
    """Metrics and artifacts of `source_id` also recorded for `target_id` (a reused result)."""
    conn.execute(insert(metrics).from_select(
        ["job_id", "key", "value", "step", "split", "time"],
        select(literal(target_id), metrics.c.key, metrics.c.value, metrics.c.step, metrics.c.split, metrics.c.time)
        .where(metrics.c.job_id == source_id).order_by(metrics.c.id)))
    conn.execute(insert(artifacts).from_select(
        ["job_id", "name", "path"],
        select(literal(target_id), artifacts.c.name, artifacts.c.path).where(artifacts.c.job_id == source_id)))


JOB_ID_HIGH = "job_id_high"  # sched_meta: the highest job id ever given (SQLite)

# The high-water mark raised by `count` in one statement (a submit of one job is a handful of
# statements; this was three of them): at least the table's own max, so rows written by anything
# else are covered too.
_RAISE_ID_HIGH = (
    f"INSERT INTO {meta.name} (key, value) "
    f"VALUES ('{JOB_ID_HIGH}', (SELECT coalesce(max(id), 0) FROM {jobs.name}) + :count) "
    f"ON CONFLICT (key) DO UPDATE SET value = max(CAST({meta.name}.value AS INTEGER), "
    f"(SELECT coalesce(max(id), 0) FROM {jobs.name})) + :count "
    "RETURNING CAST(value AS INTEGER)"
)


def _new_ids(conn: Connection, count: int) -> list[int] | None:
    """Ids for `count` new jobs that no job ever had, on SQLite (None elsewhere: PostgreSQL's
    sequence never gives an id twice). SQLite's INTEGER PRIMARY KEY takes max(id) + 1, so the
    newest job's id came back after `sched rm`, pointing at its old run folder; the high-water
    mark in sched_meta rises in the same transaction as the insert (writers are serialised by
    BEGIN IMMEDIATE)."""
    if conn.dialect.name != "sqlite" or not count:
        return None
    high = conn.execute(text(_RAISE_ID_HIGH), {"count": count}).scalar_one()
    return list(range(high - count + 1, high + 1))


def insert_job(conn: Connection, **values) -> int:
    ids = _new_ids(conn, 1)
    if ids is not None:
        values["id"] = ids[0]
    return conn.execute(insert(jobs).values(**values)).inserted_primary_key[0]


def job_ids_by_name(conn: Connection, names: Iterable[str]) -> dict[str, int]:
    names = list(names)
    if not names:
        return {}
    return dict(conn.execute(select(jobs.c.name, jobs.c.id).where(jobs.c.name.in_(names))).all())


def insert_jobs(conn: Connection, rows: list[dict]) -> list[int]:
    """Many jobs in one statement (SQLAlchemy's multi-row INSERT with RETURNING); ids in order."""
    if not rows:
        return []
    ids = _new_ids(conn, len(rows))
    if ids is not None:
        rows = [dict(row, id=job_id) for row, job_id in zip(rows, ids)]
    result = conn.execute(_INSERT_JOBS, rows)
    return list(result.scalars())


def insert_dependencies(conn: Connection, pairs: list[tuple[int, int]]) -> None:
    """(job id, the job it waits for) rows, in one statement."""
    if pairs:
        conn.execute(insert(deps), [{"job_id": job_id, "depends_on": dep} for job_id, dep in pairs])


def failed_dependencies(conn: Connection, job_ids: list[int]) -> dict[int, Row]:
    """{job id: a dependency of it that ended without success (id, name, status)} for these jobs.

    Locks the dependencies' rows (PostgreSQL: FOR SHARE), so a concurrent fail() of one of them
    waits for this transaction and then sees the new dependency rows (and marks the job itself).
    """
    if not job_ids:
        return {}
    dep = jobs.alias("dep")
    rows = conn.execute(select(deps.c.job_id, dep.c.id, dep.c.name, dep.c.status)
                        .join(dep, dep.c.id == deps.c.depends_on).where(deps.c.job_id.in_(job_ids))
                        .with_for_update(read=True, of=dep)).all()
    found: dict[int, Row] = {}
    for row in rows:
        if row.status in RETRYABLE:
            found.setdefault(row.job_id, row)
    return found


def failed_dependency(conn: Connection, job_id: int, *, lock: bool = False) -> Row | None:
    """A dependency of `job_id` that ended without success (id, name, status), or None.

    `lock` (PostgreSQL: FOR SHARE) makes a concurrent fail() of that dependency wait for this
    transaction, so it then sees the new dependency row and marks the job itself.
    """
    dep = jobs.alias("dep")
    query = (select(dep.c.id, dep.c.name, dep.c.status).join(deps, deps.c.depends_on == dep.c.id)
             .where(deps.c.job_id == job_id))
    if lock:
        rows = conn.execute(query.with_for_update(read=True, of=dep)).all()
        return next((row for row in rows if row.status in RETRYABLE), None)
    return conn.execute(query.where(dep.c.status.in_(RETRYABLE))).first()


def dependents(conn: Connection, job_ids: list[int]) -> list[int]:
    return list(conn.execute(select(deps.c.job_id).where(deps.c.depends_on.in_(job_ids))).scalars())


def mark_upstream_failed(conn: Connection, job_id: int, reason: str, now: datetime) -> bool:
    """queued -> upstream_failed."""
    return _changed(conn.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.status == QUEUED).values(
        status=UPSTREAM_FAILED, failure_kind=UPSTREAM_FAILED, message=reason, finished_at=now)))


# ---- endings and user actions --------------------------------------------------------------


def finish_owned(conn: Connection, job_id: int, owner: int, now: datetime, **values) -> bool:
    """Apply `values` to a job only if it is still running under `owner` (its lease ends)."""
    row = conn.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.worker_id == owner, jobs.c.status == RUNNING)
                       .values(lease_until=None, **values).returning(jobs.c.started_at, jobs.c.slot)).first()
    return _ended(conn, row, now)


def requeue_preempted(conn: Connection, job_id: int, owner: int, message: str, now: datetime) -> bool:
    """running -> queued without spending the attempt it used (it was stopped from outside)."""
    return finish_owned(conn, job_id, owner, now, status=QUEUED, failure_kind=PREEMPTED, message=message,
                        attempts=jobs.c.attempts - 1, worker_id=None)


def cancel_if_requested(conn: Connection, job_id: int, owner: int | None, now: datetime,
                        exit_code: int | None) -> bool:
    """running with a cancel requested -> cancelled (`owner`: only if that worker runs it)."""
    guard = [jobs.c.id == job_id, jobs.c.status == RUNNING, jobs.c.cancel_requested.is_(True)]
    if owner is not None:
        guard.append(jobs.c.worker_id == owner)
    row = conn.execute(update(jobs).where(*guard).values(
        status=CANCELLED, failure_kind=CANCELLED, message="cancelled while running",
        finished_at=now, exit_code=exit_code, lease_until=None).returning(jobs.c.started_at, jobs.c.slot)).first()
    return _ended(conn, row, now)


def attempts_of(conn: Connection, job_id: int) -> Row | None:
    """(attempts, max_attempts, name, retry_delay_s)."""
    return conn.execute(select(jobs.c.attempts, jobs.c.max_attempts, jobs.c.name, jobs.c.retry_delay_s)
                        .where(jobs.c.id == job_id)).first()


def cancel_queued(conn: Connection, job_id: int, now: datetime) -> bool:
    """queued -> cancelled."""
    return _changed(conn.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.status == QUEUED).values(
        status=CANCELLED, failure_kind=CANCELLED, message="cancelled", finished_at=now)))


def request_cancel(conn: Connection, job_id: int) -> bool:
    """running: ask its worker to kill it."""
    return _changed(conn.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.status == RUNNING)
                                 .values(cancel_requested=True)))


# `sched retry` runs the job at once: a delay or `not_before` it had is dropped.
FRESH = dict(status=QUEUED, attempts=0, failure_kind=None, message=None, finished_at=None, exit_code=None,
             worker_id=None, slot=None, lease_until=None, cancel_requested=False, not_before=None)


def requeue_fresh(conn: Connection, job_id: int, from_status: str) -> bool:
    """`from_status` -> queued with fresh attempts (retry)."""
    return _changed(conn.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.status == from_status)
                                 .values(**FRESH)))


def set_campaign_values(conn: Connection, job_id: int, **values) -> None:
    """campaign, deliverable, expected_s of a job a resubmit left the same."""
    conn.execute(update(jobs).where(jobs.c.id == job_id).values(**values))


def set_priority(conn: Connection, job_id: int, priority: int) -> bool:
    """Only a job that has not finished may change its priority."""
    return _changed(conn.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.status.in_((QUEUED, RUNNING)))
                                 .values(priority=priority)))


def stale_jobs(conn: Connection, now: datetime, *, exclude_worker: int | None = None) -> list[Row]:
    """Running jobs whose lease expired (not `exclude_worker`'s): (id, name, attempts, max_attempts)."""
    query = select(jobs.c.id, jobs.c.name, jobs.c.attempts, jobs.c.max_attempts).where(
        jobs.c.status == RUNNING, jobs.c.lease_until < now)
    if exclude_worker is not None:
        query = query.where(jobs.c.worker_id != exclude_worker)
    return conn.execute(query).all()


def end_stale(conn: Connection, job_id: int, now: datetime, *, requeue: bool, message: str) -> bool:
    """A running job with an expired lease -> queued (`requeue`) or lost."""
    guard = and_(jobs.c.id == job_id, jobs.c.status == RUNNING, jobs.c.lease_until < now)
    values = (dict(status=QUEUED, failure_kind=LOST, message=message, worker_id=None, lease_until=None)
              if requeue else
              dict(status=LOST, failure_kind=LOST, message=message, lease_until=None, finished_at=now))
    row = conn.execute(update(jobs).where(guard).values(**values).returning(jobs.c.started_at, jobs.c.slot)).first()
    return _ended(conn, row, now)


# ---- meta and workers ----------------------------------------------------------------------


def get_meta(conn: Connection, key: str) -> str | None:
    return conn.execute(select(meta.c.value).where(meta.c.key == key)).scalar()


def set_meta(conn: Connection, key: str, value: str) -> None:
    if not conn.execute(update(meta).where(meta.c.key == key).values(value=value)).rowcount:
        conn.execute(insert(meta).values(key=key, value=value))


def insert_worker(conn: Connection, host: str, pid: int, slots: list[str], now: datetime) -> int:
    return conn.execute(insert(workers).values(host=host, pid=pid, slots=slots, started_at=now, heartbeat=now,
                                               state=WorkerState.RUNNING.value)).inserted_primary_key[0]


def update_worker(conn: Connection, worker_id: int, **values) -> None:
    conn.execute(update(workers).where(workers.c.id == worker_id).values(**values))


def live_workers(conn: Connection, heard_since: datetime) -> list[Row]:
    """Workers not stopped that heartbeat since `heard_since` (others were killed silently)."""
    return conn.execute(select(workers).where(workers.c.state != WorkerState.STOPPED.value,
                                              workers.c.heartbeat > heard_since)
                        .order_by(workers.c.id)).all()


# ---- lookups -------------------------------------------------------------------------------


def job_row(conn: Connection, job_id: int) -> Row | None:
    """Every column of one job."""
    return conn.execute(select(jobs).where(jobs.c.id == job_id)).first()


def job_id_named(conn: Connection, name: str) -> int | None:
    return conn.execute(select(jobs.c.id).where(jobs.c.name == name)).scalar()


def job_name(conn: Connection, job_id: int) -> str | None:
    return conn.execute(select(jobs.c.name).where(jobs.c.id == job_id)).scalar()


def status_counts(conn: Connection) -> dict[str, int]:
    return dict(conn.execute(select(jobs.c.status, func.count()).group_by(jobs.c.status)).all())


def job_names_where(conn: Connection, *, kind: str | None = None, status: str | None = None) -> list[Row]:
    """(name, tags) of jobs of that kind and state, oldest first (tags are filtered by the caller:
    a JSON list, portable across backends)."""
    query = select(jobs.c.name, jobs.c.tags).order_by(jobs.c.id)
    if kind:
        query = query.where(jobs.c.kind == kind)
    if status:
        query = query.where(jobs.c.status == status)
    return conn.execute(query).all()


def tag_lists(conn: Connection) -> list[list]:
    """Every job's tags (JSON lists, filtered in Python: portable across backends)."""
    return [tags or [] for tags in conn.execute(select(jobs.c.tags)).scalars()]


def statuses_and_tags(conn: Connection) -> list[Row]:
    """(status, tags) of every job: counts per state for one tag."""
    return conn.execute(select(jobs.c.status, jobs.c.tags)).all()


# ---- records: metrics, artifacts, progress -------------------------------------------------


def insert_metric(conn: Connection, job_id: int, key: str, value: float, step: int | None,
                  split: str | None, now: datetime) -> None:
    conn.execute(insert(metrics).values(job_id=job_id, key=key, value=value, step=step, split=split, time=now))


def metric_exists(conn: Connection, job_id: int, key: str, value: float, step: int | None,
                  split: str | None) -> bool:
    """Whether the job has this metric row (an absent step or split matches only an absent one)."""
    query = select(metrics.c.id).where(
        metrics.c.job_id == job_id, metrics.c.key == key, metrics.c.value == value,
        metrics.c.step.is_(None) if step is None else metrics.c.step == step,
        metrics.c.split.is_(None) if split is None else metrics.c.split == split).limit(1)
    return conn.execute(query).first() is not None


def put_artifact(conn: Connection, job_id: int, name: str, path: str) -> None:
    """Record a file a job produced; the same name again replaces the path."""
    if not conn.execute(update(artifacts).where(artifacts.c.job_id == job_id, artifacts.c.name == name)
                        .values(path=path)).rowcount:
        conn.execute(insert(artifacts).values(job_id=job_id, name=name, path=path))


def set_progress(conn: Connection, job_id: int, done: float, total: float | None, message: str | None) -> None:
    conn.execute(update(jobs).where(jobs.c.id == job_id).values(
        progress_done=done, progress_total=total, progress_message=message))


def set_error(conn: Connection, job_id: int, message: str) -> None:
    conn.execute(update(jobs).where(jobs.c.id == job_id).values(error=message))


def job_error(conn: Connection, job_id: int) -> str | None:
    return conn.execute(select(jobs.c.error).where(jobs.c.id == job_id)).scalar()


def job_metrics(conn: Connection, job_id: int) -> list[Row]:
    """(key, value, step, split) of every metric of a job, in the order logged."""
    return conn.execute(select(metrics.c.key, metrics.c.value, metrics.c.step, metrics.c.split)
                        .where(metrics.c.job_id == job_id).order_by(metrics.c.id)).all()


def job_artifacts(conn: Connection, job_id: int) -> list[Row]:
    """(name, path) of a job's artifacts, in the order recorded."""
    return conn.execute(select(artifacts.c.name, artifacts.c.path).where(artifacts.c.job_id == job_id)
                        .order_by(artifacts.c.id)).all()


def job_dependencies(conn: Connection, job_id: int) -> list[Row]:
    """(name, status) of the jobs `job_id` waits for."""
    dep = jobs.alias("dep")
    return conn.execute(select(dep.c.name, dep.c.status).join(deps, deps.c.depends_on == dep.c.id)
                        .where(deps.c.job_id == job_id)).all()


def last_metric_values(conn: Connection, job_ids: list[int], keys: Iterable[str]) -> dict[int, dict[str, float]]:
    """{job id: {key: its last value}} for these keys (one query)."""
    keys = list(keys)
    if not job_ids or not keys:
        return {}
    last = (select(func.max(metrics.c.id)).where(metrics.c.job_id.in_(job_ids), metrics.c.key.in_(keys))
            .group_by(metrics.c.job_id, metrics.c.key))
    out: dict[int, dict[str, float]] = {}
    for job_id, key, value in conn.execute(select(metrics.c.job_id, metrics.c.key, metrics.c.value)
                                           .where(metrics.c.id.in_(last))):
        out.setdefault(job_id, {})[key] = value
    return out


def latest_metric(conn: Connection, job_ids: list[int]) -> dict[int, Row]:
    """The last metric (key, value, step, split) each job logged (one query)."""
    if not job_ids:
        return {}
    last = select(func.max(metrics.c.id)).where(metrics.c.job_id.in_(job_ids)).group_by(metrics.c.job_id)
    rows = conn.execute(select(metrics.c.job_id, metrics.c.key, metrics.c.value, metrics.c.step, metrics.c.split)
                        .where(metrics.c.id.in_(last))).all()
    return {row.job_id: row for row in rows}


# ---- listing and removing ------------------------------------------------------------------


def list_jobs(conn: Connection, *, statuses: Iterable[str] = (), kinds: Iterable[str] = (),
              name_like: str | None = None, since: datetime | None = None, limit: int | None = None) -> list[Row]:
    """Jobs matching every filter given, oldest first (tags are filtered by the caller)."""
    query = select(jobs).order_by(jobs.c.id)
    if statuses := list(statuses):
        query = query.where(jobs.c.status.in_(statuses))
    if kinds := list(kinds):
        query = query.where(jobs.c.kind.in_(kinds))
    if name_like is not None:
        query = query.where(jobs.c.name.like(name_like, escape="\\"))
    if since is not None:
        query = query.where(jobs.c.created_at >= since)
    if limit is not None:
        query = query.limit(limit)
    return conn.execute(query).all()


def unfinished_dependents(conn: Connection, job_ids: list[int]) -> list[Row]:
    """(job id, its name, the dependency's id) of queued or running jobs waiting for these jobs."""
    if not job_ids:
        return []
    return conn.execute(select(jobs.c.id, jobs.c.name, deps.c.depends_on).join(deps, deps.c.job_id == jobs.c.id)
                        .where(deps.c.depends_on.in_(job_ids), jobs.c.status.in_((QUEUED, RUNNING)))).all()


def delete_finished(conn: Connection, job_ids: list[int]) -> int:
    """Remove finished jobs (their metrics, artifacts and dependency rows go with them)."""
    if not job_ids:
        return 0
    guard = [jobs.c.id.in_(job_ids), jobs.c.status.not_in((QUEUED, RUNNING))]
    conn.execute(metrics.delete().where(metrics.c.job_id.in_(job_ids)))
    conn.execute(artifacts.delete().where(artifacts.c.job_id.in_(job_ids)))
    conn.execute(deps.delete().where(or_(deps.c.job_id.in_(job_ids), deps.c.depends_on.in_(job_ids))))
    return conn.execute(jobs.delete().where(*guard)).rowcount


# ---- status --------------------------------------------------------------------------------


def running_jobs(conn: Connection) -> list[Row]:
    return conn.execute(select(jobs).where(jobs.c.status == RUNNING).order_by(jobs.c.started_at)).all()


def queued_jobs(conn: Connection, limit: int) -> list[Row]:
    """The first `limit` queued jobs in claim order."""
    return conn.execute(select(jobs).where(jobs.c.status == QUEUED)
                        .order_by(*claim_order()).limit(limit)).all()


def pending_dependencies(conn: Connection, job_ids: list[int]) -> dict[int, list[str]]:
    """{job id: names of its dependencies that have not succeeded}."""
    if not job_ids:
        return {}
    dep = jobs.alias("dep")
    rows = conn.execute(select(deps.c.job_id, dep.c.name).join(dep, dep.c.id == deps.c.depends_on)
                        .where(deps.c.job_id.in_(job_ids), dep.c.status != SUCCEEDED)).all()
    pending: dict[int, list[str]] = {}
    for job_id, name in rows:
        pending.setdefault(job_id, []).append(name)
    return pending


def queued_counts_by_kind(conn: Connection) -> dict[str, int]:
    return dict(conn.execute(select(jobs.c.kind, func.count()).where(jobs.c.status == QUEUED)
                             .group_by(jobs.c.kind)).all())


def typical_durations(conn: Connection, kinds: list[str], since: datetime, per_kind: int = 50) -> dict[str, float]:
    """{kind: median seconds of its latest (at most `per_kind`) successes since `since`}."""
    out = {}
    for kind in kinds:
        rows = conn.execute(select(jobs.c.started_at, jobs.c.finished_at).where(
            jobs.c.kind == kind, jobs.c.status == SUCCEEDED, jobs.c.finished_at > since,
            jobs.c.started_at.is_not(None), jobs.c.reused_from.is_(None))
            .order_by(jobs.c.finished_at.desc()).limit(per_kind)).all()
        spans = sorted((end - start).total_seconds() for start, end in rows)
        if spans:
            out[kind] = spans[len(spans) // 2]
    return out


def recent_endings(conn: Connection, limit: int, *, failures_only: bool = False) -> list[Row]:
    query = select(jobs).where(jobs.c.finished_at.is_not(None))
    if failures_only:  # not what the user cancelled
        query = query.where(jobs.c.status.in_(FAILURES))
    return conn.execute(query.order_by(jobs.c.finished_at.desc()).limit(limit)).all()


def busy_slots(conn: Connection, since: datetime) -> list[str]:
    """Slots that ran something since `since` (from the busy buckets)."""
    return list(conn.execute(select(busy_table.c.slot).distinct().where(busy_table.c.bucket >= busy.bucket_of(since)))
                .scalars())


def busy_spans(conn: Connection, since: datetime) -> list[Row]:
    """(started_at, finished_at, slot) of every job that ended after `since`."""
    return conn.execute(select(jobs.c.started_at, jobs.c.finished_at, jobs.c.slot).where(
        jobs.c.finished_at > since, jobs.c.started_at.is_not(None))).all()


def newest_jobs(conn: Connection, limit: int) -> list[Row]:
    """The `limit` most recently submitted jobs, oldest of them first."""
    return conn.execute(select(jobs).order_by(jobs.c.id.desc()).limit(limit)).all()[::-1]


def is_drained(conn: Connection) -> bool:
    return get_meta(conn, "drained") == "1"


# ---- results (the leaderboard) -------------------------------------------------------------


def last_values_of_keys(conn: Connection, keys: Iterable[str], kind: str | None = None) -> dict[int, dict[str, float]]:
    """{job id: {key: last value}} of these metric keys over every job (of `kind`), one query."""
    keys = list(keys)
    last = select(func.max(metrics.c.id).label("id")).where(metrics.c.key.in_(keys))
    if kind:
        last = last.join(jobs, jobs.c.id == metrics.c.job_id).where(jobs.c.kind == kind)
    last = last.group_by(metrics.c.job_id, metrics.c.key).subquery()
    out: dict[int, dict[str, float]] = {}
    for job_id, key, value in conn.execute(select(metrics.c.job_id, metrics.c.key, metrics.c.value)
                                           .join(last, metrics.c.id == last.c.id)):
        out.setdefault(job_id, {})[key] = value
    return out


def left_out_marks(conn: Connection, keys: Iterable[str]) -> dict[int, list[str]]:
    """{job id: names of the succeeded jobs that left it out}: rows of these metric keys whose step is
    the id of the job left out (an ensemble's dead member), one query."""
    keys = list(keys)
    if not keys:
        return {}
    out: dict[int, list[str]] = {}
    query = (select(metrics.c.step, jobs.c.id, jobs.c.name).join(jobs, jobs.c.id == metrics.c.job_id)
             .where(metrics.c.key.in_(keys), metrics.c.step.is_not(None), jobs.c.status == SUCCEEDED)
             .distinct().order_by(jobs.c.id, metrics.c.step))
    for step, _, name in conn.execute(query):
        out.setdefault(int(step), []).append(name)
    return out


def leaderboard_jobs(conn: Connection, *, model_kinds: Iterable[str], score_keys: Iterable[str],
                     kind: str | None = None, status: str | None = None) -> list[Row]:
    """Jobs of `kind` (all of them), else of a model kind or with a score logged; by id."""
    query = select(jobs.c.id, jobs.c.name, jobs.c.kind, jobs.c.status, jobs.c.params, jobs.c.tags,
                   jobs.c.started_at, jobs.c.finished_at).order_by(jobs.c.id)
    if kind:
        query = query.where(jobs.c.kind == kind)
    else:
        scored = select(metrics.c.job_id).where(metrics.c.key.in_(list(score_keys)))
        query = query.where(or_(jobs.c.kind.in_(list(model_kinds)), jobs.c.id.in_(scored)))
    if status:
        query = query.where(jobs.c.status == status)
    return conn.execute(query).all()


# ---- report --------------------------------------------------------------------------------


def change_token(conn: Connection) -> tuple:
    """Something that changes whenever the report would (`sched report --serve`): jobs by state,
    the newest job, start and ending, and the newest metric (curves, scores). A handful of index
    lookups and one scan of the status index: far cheaper than a render."""
    newest = conn.execute(select(func.max(jobs.c.id), func.max(jobs.c.started_at),
                                 func.max(jobs.c.finished_at))).first()
    by_state = tuple(sorted(status_counts(conn).items()))
    metric = conn.execute(select(func.max(metrics.c.id))).scalar()
    return (*newest, by_state, metric)


def timeline_rows(conn: Connection, limit: int) -> list[Row]:
    """The `limit` most recently started jobs that ran (running, or finished by a worker), newest first."""
    ran = or_(jobs.c.status == RUNNING, and_(jobs.c.finished_at.is_not(None), jobs.c.worker_id.is_not(None)))
    return conn.execute(
        select(jobs.c.id, jobs.c.name, jobs.c.kind, jobs.c.status, jobs.c.slot, jobs.c.worker_id,
               jobs.c.started_at, jobs.c.finished_at, jobs.c.tags, workers.c.host)
        .outerjoin(workers, workers.c.id == jobs.c.worker_id)
        .where(jobs.c.started_at.is_not(None), ran)
        .order_by(jobs.c.started_at.desc(), jobs.c.id.desc()).limit(limit)).all()


def started_jobs_of_kinds(conn: Connection, kinds: Iterable[str], limit: int | None) -> list[Row]:
    """(id, tags) of started jobs of these kinds, newest first."""
    query = (select(jobs.c.id, jobs.c.tags).where(jobs.c.kind.in_(list(kinds)), jobs.c.started_at.is_not(None))
             .order_by(jobs.c.id.desc()))
    return conn.execute(query if limit is None else query.limit(limit)).all()


def jobs_by_ids(conn: Connection, job_ids: list[int]) -> list[Row]:
    """(id, name, kind, status, params) of these jobs, by id."""
    if not job_ids:
        return []
    return conn.execute(select(jobs.c.id, jobs.c.name, jobs.c.kind, jobs.c.status, jobs.c.params)
                        .where(jobs.c.id.in_(job_ids)).order_by(jobs.c.id)).all()


def stepped_metrics(conn: Connection, job_ids: list[int], keys: Iterable[str]) -> list[Row]:
    """(job_id, key, split, step, value) of metrics logged with a step: training curves."""
    if not job_ids:
        return []
    return conn.execute(select(metrics.c.job_id, metrics.c.key, metrics.c.split, metrics.c.step, metrics.c.value)
                        .where(metrics.c.job_id.in_(job_ids), metrics.c.key.in_(list(keys)),
                               metrics.c.step.is_not(None))
                        .order_by(metrics.c.id)).all()


def jobs_of_kinds(conn: Connection, kinds: Iterable[str]) -> list[Row]:
    """(name, kind, group_name, params, tags) of every job of these kinds, by id."""
    return conn.execute(select(jobs.c.name, jobs.c.kind, jobs.c.group_name, jobs.c.params, jobs.c.tags)
                        .where(jobs.c.kind.in_(list(kinds))).order_by(jobs.c.id)).all()


def job_identity(conn: Connection, name: str) -> Row | None:
    """(name, kind, group_name, params, status) of the job called `name`."""
    return conn.execute(select(jobs.c.name, jobs.c.kind, jobs.c.group_name, jobs.c.params, jobs.c.status)
                        .where(jobs.c.name == name)).first()


# ---- cron firings --------------------------------------------------------------------------


def claim_cron_fire(conn: Connection, name: str, fire_time: datetime, worker: str) -> None:
    """Raises IntegrityError when another worker claimed this firing first."""
    conn.execute(insert(cron_fires).values(cron_name=name, fire_time=fire_time, worker=worker))


def record_cron_result(conn: Connection, name: str, fire_time: datetime, submitted: int | None,
                       error: str | None) -> None:
    conn.execute(update(cron_fires).where(cron_fires.c.cron_name == name, cron_fires.c.fire_time == fire_time)
                 .values(jobs_submitted=submitted, error=error))


def last_cron_fire(conn: Connection, name: str) -> Row | None:
    return conn.execute(select(cron_fires).where(cron_fires.c.cron_name == name)
                        .order_by(cron_fires.c.fire_time.desc()).limit(1)).first()


# ---- deadlines (scheduler/deadline/) ---------------------------------------------------------


def unfinished_jobs(conn: Connection, limit: int) -> list[Row]:
    """Running jobs, then the first `limit` queued ones in claim order: what a forecast replays."""
    running = conn.execute(select(jobs).where(jobs.c.status == RUNNING)).all()
    queued = conn.execute(select(jobs).where(jobs.c.status == QUEUED).order_by(*claim_order()).limit(limit)).all()
    return [*running, *queued]


def open_dependencies(conn: Connection, job_ids: list[int]) -> dict[int, list[int]]:
    """{job id: ids of its dependencies that have not succeeded}."""
    if not job_ids:
        return {}
    dep = jobs.alias("dep")
    out: dict[int, list[int]] = {}
    for chunk in range(0, len(job_ids), 900):  # SQLite's bound-parameter limit
        rows = conn.execute(select(deps.c.job_id, deps.c.depends_on).join(dep, dep.c.id == deps.c.depends_on)
                            .where(deps.c.job_id.in_(job_ids[chunk:chunk + 900]), dep.c.status != SUCCEEDED)).all()
        for job_id, depends_on in rows:
            out.setdefault(job_id, []).append(depends_on)
    return out


def finished_like(conn: Connection, kinds: list[str], per_kind: int = 20) -> list[Row]:
    """The latest successes of each kind (not reused), oldest first: the forecast's history."""
    rows = []
    for kind in kinds:
        rows += conn.execute(select(jobs.c.id, jobs.c.kind, jobs.c.params, jobs.c.group_name, jobs.c.started_at,
                                    jobs.c.finished_at)
                             .where(jobs.c.kind == kind, jobs.c.status == SUCCEEDED, jobs.c.started_at.is_not(None),
                                    jobs.c.reused_from.is_(None), jobs.c.finished_at.is_not(None))
                             .order_by(jobs.c.finished_at.desc()).limit(per_kind)).all()
    return sorted(rows, key=lambda r: r.finished_at)


def group_sizes(conn: Connection, groups: list[str]) -> dict[str, int]:
    if not groups:
        return {}
    return dict(conn.execute(select(jobs.c.group_name, func.count()).where(jobs.c.group_name.in_(groups))
                             .group_by(jobs.c.group_name)).all())


def deliverables_of(conn: Connection, campaign: str) -> list[Row]:
    return conn.execute(select(jobs.c.id, jobs.c.name, jobs.c.status).where(
        jobs.c.campaign == campaign, jobs.c.deliverable.is_(True)).order_by(jobs.c.id)).all()


def running_on_worker(conn: Connection, worker_id: int) -> set[int]:
    return set(conn.execute(select(jobs.c.id).where(jobs.c.worker_id == worker_id, jobs.c.status == RUNNING)).scalars())


def urgent_among(conn: Connection, job_ids: list[int]) -> set[int]:
    return set(conn.execute(select(jobs.c.id).where(jobs.c.id.in_(job_ids), jobs.c.urgent.is_(True))).scalars())


def set_deadline_decision(conn: Connection, job_id: int, **values) -> None:
    """urgent, held, finish_by, deadline_note, estimate_s, estimate_source of an unfinished job."""
    conn.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.status.in_((QUEUED, RUNNING))).values(**values))


def clear_deadline_decisions(conn: Connection, campaign_jobs_only: list[int] | None = None) -> int:
    """Lift every decision (urgent, held, finish_by) left on unfinished jobs; returns how many."""
    query = update(jobs).where(jobs.c.status.in_((QUEUED, RUNNING)),
                               or_(jobs.c.urgent.is_(True), jobs.c.held.is_not(None), jobs.c.finish_by.is_not(None)))
    if campaign_jobs_only is not None:
        query = query.where(jobs.c.id.in_(campaign_jobs_only))
    return conn.execute(query.values(urgent=False, held=None, finish_by=None)).rowcount

"""The only writer of job state. One method per state change, each guarded by the rows it changed.

Every change is a conditional UPDATE (`... WHERE id = :id AND status = :expected`, in
`scheduler.store.queries`): when another worker or a user got there first, the row count is 0 and
the change did not happen. The states and their transitions are drawn in `scheduler.store.states`.
"""

from __future__ import annotations

import re
from collections import Counter, deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Connection, Engine, Row

from .errors import InvalidTransition, NotFound, PlanError
from .fmt import short
from .store import queries as q
from .store.engine import READ_ONLY, db_now
from .store.migrate import open_database
from .store.states import (
    CANCELLED,
    FAILED,
    KILLED,
    LOST,
    PREEMPTED,
    QUEUED,
    RETRYABLE,
    RUNNING,
    SUCCEEDED,
    UPSTREAM_FAILED,
)

__all__ = ["JobQueue", "JobSpec", "ClaimedJob", "HeartbeatReply", "run_folder_name", "DEFAULT_LEASE_S",
           "QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "KILLED", "LOST", "CANCELLED", "UPSTREAM_FAILED",
           "PREEMPTED"]

DEFAULT_LEASE_S = 60.0


class _RollBack(Exception):
    """Ends a dry-run transaction without committing."""


@dataclass
class JobSpec:
    """One job to submit. `after` names jobs in the same batch or already in the queue."""

    name: str
    kind: str
    params: dict = field(default_factory=dict)
    priority: int = 0
    gpus: int = 0
    max_attempts: int = 1
    timeout_s: float | None = None
    tags: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)
    preemptible: bool = False
    group_name: str | None = None


@dataclass
class ClaimedJob:
    id: int
    name: str
    kind: str
    params: dict
    gpus: int
    attempts: int
    max_attempts: int
    timeout_s: float | None
    output_dir: str | None
    log_path: str | None
    priority: int = 0
    preemptible: bool = False

    @property
    def call(self) -> str:
        """The job's call string for logs: `finetune[42](model=klue/bert-base, lr=2e-05)`."""
        shown = ", ".join(f"{k}={short(v)}" for k, v in list(self.params.items())[:4])
        return f"{self.kind}[{self.id}]({shown})"


@dataclass
class HeartbeatReply:
    lease_held: bool  # False: the job is no longer ours (requeued as stale, or finished)
    cancel_requested: bool


def run_folder_name(job_id: int, name: str) -> str:
    """A folder name that is unique per job and readable: `00042-finetune-klue_bert-base`."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:80]
    return f"{job_id:05d}-{slug}"


class JobQueue:
    """The queue at one database URL (SQLite file or PostgreSQL)."""

    def __init__(self, url: str | None = None, *, engine: Engine | None = None):
        self.engine = engine if engine is not None else open_database(url)
        self._read_engine = self.engine.execution_options(**{READ_ONLY: True})
        self.url = self.engine.url.render_as_string(hide_password=False)

    def write(self):
        """A transaction for changes (on SQLite it takes the write lock at once); commits on exit."""
        return self.engine.begin()

    @contextmanager
    def read(self):
        """A transaction that only reads; it never blocks or waits for writers."""
        with self._read_engine.connect() as conn, conn.begin():
            yield conn

    def dispose(self) -> None:
        self.engine.dispose()

    # ---- submit -------------------------------------------------------------------------------

    def submit(self, specs: list[JobSpec], *, dry_run: bool = False) -> list[int]:
        """Insert a batch of jobs, all or nothing. Returns their ids in the order given.

        `dry_run` checks everything a real submit checks (names free, dependencies known) and
        then rolls back.
        """
        from .limits import check_spec

        for spec in specs:
            check_spec(spec, f"job '{spec.name}'")
        names = [spec.name for spec in specs]
        dupes = sorted(name for name, count in Counter(names).items() if count > 1)
        if dupes:
            raise PlanError(f"duplicate job name(s) in the batch: {', '.join(dupes)}")
        ids_by_name: dict[str, int] = {}
        try:
            with self.write() as conn:
                self._insert_batch(conn, specs, ids_by_name)
                if dry_run:
                    raise _RollBack
        except _RollBack:
            pass
        return [ids_by_name[n] for n in names]

    def _insert_batch(self, conn: Connection, specs: list[JobSpec], ids_by_name: dict[str, int]) -> None:
        now = db_now(conn)
        taken = q.names_taken(conn, [spec.name for spec in specs])
        if taken:
            shown = ", ".join(f"'{n}' (job {i}, {st})" for n, i, st in taken)
            raise PlanError(f"job name(s) already in the queue: {shown}; rename them, or use "
                            "`sched retry` to run an existing job again (nothing was submitted)")
        for spec in specs:
            ids_by_name[spec.name] = q.insert_job(
                conn, name=spec.name, kind=spec.kind, params=spec.params, priority=spec.priority,
                gpus=spec.gpus, max_attempts=spec.max_attempts, timeout_s=spec.timeout_s,
                tags=list(spec.tags), status=QUEUED, attempts=0, created_at=now,
                preemptible=spec.preemptible, group_name=spec.group_name)
        self._insert_dependencies(conn, specs, ids_by_name)
        for spec in specs:
            self._fail_if_upstream_already_failed(conn, ids_by_name[spec.name], now)

    @staticmethod
    def _insert_dependencies(conn: Connection, specs: list[JobSpec], ids_by_name: dict[str, int]) -> None:
        outside = sorted({a for spec in specs for a in spec.after if a not in ids_by_name})
        existing = q.job_ids_by_name(conn, outside)
        for spec in specs:
            for dep in dict.fromkeys(spec.after):
                dep_id = ids_by_name.get(dep, existing.get(dep))
                if dep_id is None:
                    raise PlanError(f"job '{spec.name}': unknown dependency '{dep}' in after "
                                    "(not in this batch, not in the queue); nothing was submitted")
                q.insert_dependency(conn, ids_by_name[spec.name], dep_id)

    def _fail_if_upstream_already_failed(self, conn: Connection, job_id: int, now: datetime) -> None:
        failed = q.failed_dependency(conn, job_id, lock=True)
        if failed:
            self._mark_upstream_failed(conn, failed.id, failed.name, failed.status, now, roots=[job_id])

    # ---- claim --------------------------------------------------------------------------------

    def claim(self, worker_id: int, slot: str, slot_gpus: int, *, lease_s: float = DEFAULT_LEASE_S,
              runs_root: str | Path | None = None) -> ClaimedJob | None:
        """queued -> running: the next runnable job for a slot with `slot_gpus` GPUs, or None.

        Runnable: queued, every dependency succeeded, asks for no more GPUs than the slot has, and
        the queue is not drained. Order: priority high to low, then first submitted first.
        """
        with self.write() as conn:
            candidate = q.claim_candidate(conn, slot_gpus)
            if candidate is None:
                return None
            now = db_now(conn)
            run_dir = None
            if runs_root is not None:
                run_dir = Path(runs_root).resolve() / run_folder_name(candidate.id, candidate.name)
            row = q.claim(conn, b_id=candidate.id, b_worker=worker_id, b_slot=slot, b_now=now,
                          b_lease=now + timedelta(seconds=lease_s),
                          b_output_dir=str(run_dir) if run_dir else None,
                          b_log_path=str(run_dir / "log.txt") if run_dir else None)
            return None if row is None else ClaimedJob(**row._asdict())

    def top_waiting_priority(self, slot_gpus: int) -> int | None:
        """Priority of the job the next claim for such a slot would take (None: nothing runnable)."""
        with self.read() as conn:
            return q.top_waiting_priority(conn, slot_gpus)

    # ---- while running ------------------------------------------------------------------------

    def heartbeat(self, job_id: int, worker_id: int, *, lease_s: float = DEFAULT_LEASE_S) -> HeartbeatReply:
        """Renew the lease of a job this worker runs, by the database's clock."""
        with self.write() as conn:
            cancel = q.renew_lease(conn, job_id, worker_id, db_now(conn) + timedelta(seconds=lease_s))
            return HeartbeatReply(lease_held=cancel is not None, cancel_requested=bool(cancel))

    # ---- endings ------------------------------------------------------------------------------

    def succeed(self, job_id: int, worker_id: int, *, exit_code: int = 0) -> bool:
        """running -> succeeded."""
        with self.write() as conn:
            return q.succeed(conn, job_id, worker_id, db_now(conn), exit_code)

    def fail(self, job_id: int, worker_id: int, *, kind: str = FAILED, message: str = "",
             exit_code: int | None = None) -> str | None:
        """running -> queued while attempts remain, else -> `kind` (failed or killed).

        On a final failure every job that depends on it, directly or not, becomes upstream_failed.
        Returns the new status, or None when the job was no longer this worker's.
        """
        if kind not in (FAILED, KILLED):
            raise ValueError(f"fail() takes kind failed or killed, not {kind!r}")
        with self.write() as conn:
            now = db_now(conn)
            if self._cancel_if_requested(conn, job_id, worker_id, now, exit_code):
                return CANCELLED
            row = q.attempts_of(conn, job_id)
            if row is None:
                return None
            final = row.attempts >= row.max_attempts
            status = kind if final else QUEUED
            if not q.finish_owned(conn, job_id, worker_id, status=status, failure_kind=kind, message=message,
                                  exit_code=exit_code, finished_at=now if final else None,
                                  worker_id=worker_id if final else None):
                return None
            if final:
                self._mark_upstream_failed(conn, job_id, row.name, kind, now)
            return status

    def preempt(self, job_id: int, worker_id: int, *, message: str = "preempted") -> bool:
        """running -> queued, without spending an attempt: the job was stopped from outside."""
        with self.write() as conn:
            if self._cancel_if_requested(conn, job_id, worker_id, db_now(conn), None):
                return True
            return q.requeue_preempted(conn, job_id, worker_id, message)

    def finish_cancel(self, job_id: int, worker_id: int, *, exit_code: int | None = None) -> bool:
        """running (cancel requested) -> cancelled, once the worker has killed it."""
        with self.write() as conn:
            return self._cancel_if_requested(conn, job_id, worker_id, db_now(conn), exit_code)

    def _cancel_if_requested(self, conn: Connection, job_id: int, owner: int | None, now: datetime,
                             exit_code: int | None) -> bool:
        """running with a cancel requested -> cancelled, dependents upstream_failed.

        Every ending of a running job checks this first: a job that crashed, was preempted or lost
        its worker before the worker saw the cancel must not go back to the queue.
        """
        if not q.cancel_if_requested(conn, job_id, owner, now, exit_code):
            return False
        self._mark_upstream_failed(conn, job_id, q.job_name(conn, job_id), CANCELLED, now)
        return True

    @staticmethod
    def _mark_upstream_failed(conn: Connection, failed_id: int, failed_name: str, failed_status: str,
                              now: datetime, roots: list[int] | None = None) -> list[int]:
        """Every queued job downstream of `failed_id` (or only `roots` and theirs) -> upstream_failed."""
        reason = f"upstream job '{failed_name}' (#{failed_id}) ended {failed_status}"
        todo = deque(roots if roots is not None else q.dependents(conn, [failed_id]))
        marked: list[int] = []
        while todo:
            job_id = todo.popleft()
            if q.mark_upstream_failed(conn, job_id, reason, now):
                marked.append(job_id)
                todo.extend(q.dependents(conn, [job_id]))
        return marked

    # ---- user actions -------------------------------------------------------------------------

    def cancel(self, job_id: int) -> str:
        """queued -> cancelled at once; running -> cancel requested (its worker kills it).

        Returns the resulting status: `cancelled`, or `running` with the cancel requested.
        """
        with self.write() as conn:
            now = db_now(conn)
            # Two tries: a worker may claim the job between our read and our guarded update.
            for _ in range(2):
                row = self._get(conn, job_id)
                if row.status == QUEUED:
                    if q.cancel_queued(conn, job_id, now):
                        self._mark_upstream_failed(conn, job_id, row.name, CANCELLED, now)
                        return CANCELLED
                elif row.status == RUNNING:
                    if q.request_cancel(conn, job_id):
                        return RUNNING
                else:
                    break
            raise InvalidTransition(f"job {job_id} ('{row.name}') is {row.status}; only queued or "
                                    "running jobs can be cancelled")

    def retry(self, job_id: int) -> list[int]:
        """failed/killed/lost/cancelled/upstream_failed -> queued with fresh attempts.

        Jobs downstream that were upstream_failed because of it are queued again too, unless
        another of their dependencies also ended without success. Returns every job id put back.
        """
        with self.write() as conn:
            row = self._get(conn, job_id)
            if row.status not in RETRYABLE:
                raise InvalidTransition(f"job {job_id} ('{row.name}') is {row.status}; only "
                                        f"{', '.join(RETRYABLE)} jobs can be retried")
            blocker = q.failed_dependency(conn, job_id)
            if blocker:
                raise InvalidTransition(f"job {job_id} ('{row.name}') waits for '{blocker.name}', which "
                                        f"is {blocker.status}; retry that one (its dependents follow)")
            if not q.requeue_fresh(conn, job_id, row.status):
                raise InvalidTransition(f"job {job_id} ('{row.name}') changed state meanwhile; try again")
            requeued = [job_id]
            todo = deque(q.dependents(conn, [job_id]))
            while todo:
                dep_id = todo.popleft()
                if q.failed_dependency(conn, dep_id):
                    continue  # still blocked by another failure: stays upstream_failed
                if q.requeue_fresh(conn, dep_id, UPSTREAM_FAILED):
                    requeued.append(dep_id)
                    todo.extend(q.dependents(conn, [dep_id]))
            return requeued

    def reprioritize(self, job_id: int, priority: int) -> None:
        """Change a job's priority; only a job that has not finished may change."""
        from .limits import check_priority

        check_priority(priority, f"job {job_id}")
        with self.write() as conn:
            row = self._get(conn, job_id)
            if not q.set_priority(conn, job_id, priority):
                raise InvalidTransition(f"job {job_id} ('{row.name}') is {row.status}; its priority "
                                        "no longer matters")

    # ---- leases, drain, workers ---------------------------------------------------------------

    def requeue_stale(self, *, exclude_worker: int | None = None) -> tuple[list[int], list[int]]:
        """running with an expired lease -> queued while attempts remain, else lost.

        Returns (requeued ids, lost ids). Judged by the database's clock, so hosts with skewed
        clocks agree. `exclude_worker`: a live worker's own reaper never takes its worker's jobs.
        """
        message = "its worker stopped renewing the lease (worker killed or host lost)"
        with self.write() as conn:
            now = db_now(conn)
            requeued, lost = [], []
            for job in q.stale_jobs(conn, now, exclude_worker=exclude_worker):
                if self._cancel_if_requested(conn, job.id, None, now, None):
                    continue  # its cancel was pending: cancelled, not run again
                if job.attempts < job.max_attempts:
                    if q.end_stale(conn, job.id, now, requeue=True, message=message):
                        requeued.append(job.id)
                elif q.end_stale(conn, job.id, now, requeue=False, message=message):
                    lost.append(job.id)
                    self._mark_upstream_failed(conn, job.id, job.name, LOST, now)
            return requeued, lost

    def drain(self) -> None:
        """Workers finish their current jobs and claim no new one until `resume`."""
        with self.write() as conn:
            q.set_meta(conn, "drained", "1")

    def resume(self) -> None:
        with self.write() as conn:
            q.set_meta(conn, "drained", "0")

    def is_drained(self) -> bool:
        with self.read() as conn:
            return q.is_drained(conn)

    def register_worker(self, host: str, pid: int, slots: list[str]) -> int:
        with self.write() as conn:
            return q.insert_worker(conn, host, pid, slots, db_now(conn))

    def worker_heartbeat(self, worker_id: int, state: str | None = None,
                         gpu_stats: list[dict] | None = None) -> None:
        with self.write() as conn:
            values = {"heartbeat": db_now(conn)}
            if state:
                values["state"] = state
            if gpu_stats is not None:
                values["gpu_stats"] = gpu_stats
            q.update_worker(conn, worker_id, **values)

    # ---- lookups ------------------------------------------------------------------------------

    @staticmethod
    def _get(conn: Connection, job_id: int) -> Row:
        row = q.job_row(conn, job_id)
        if row is None:
            raise NotFound(f"no job with id {job_id}")
        return row

    def resolve(self, ref: str | int) -> int:
        """A job id from an id or a name."""
        with self.read() as conn:
            if isinstance(ref, int) or str(ref).isdigit():
                if q.job_row(conn, int(ref)) is not None:
                    return int(ref)
            job_id = q.job_id_named(conn, str(ref))
            if job_id is None:
                raise NotFound(f"no job named or numbered '{ref}'")
            return job_id

    def get(self, ref: str | int) -> Row:
        """Every column of a job, by id or name."""
        job_id = self.resolve(ref)
        with self.read() as conn:
            return self._get(conn, job_id)

    def child_error(self, job_id: int) -> str | None:
        """The one-line failure reason the job's runner reported for its current attempt."""
        with self.read() as conn:
            return q.job_error(conn, job_id)

    def status_counts(self) -> dict[str, int]:
        with self.read() as conn:
            return q.status_counts(conn)

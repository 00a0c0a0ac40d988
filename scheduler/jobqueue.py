"""The only writer of job state. One method per state change, each guarded by the rows it changed.

Every change is a conditional UPDATE (`... WHERE id = :id AND status = :expected`): when another
worker or a user got there first, the row count is 0 and the change did not happen. See the state
diagram in `scheduler.models`.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, and_, func, insert, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from . import statements as sql
from .db import READ_ONLY, db_now, open_database
from .errors import InvalidTransition, NotFound, PlanError
from .models import (
    RETRYABLE,
    Job,
    JobDependency,
    JobStatus,
    Meta,
    Worker,
    WorkerState,
)

QUEUED = JobStatus.QUEUED.value
RUNNING = JobStatus.RUNNING.value
SUCCEEDED = JobStatus.SUCCEEDED.value
FAILED = JobStatus.FAILED.value
KILLED = JobStatus.KILLED.value
LOST = JobStatus.LOST.value
CANCELLED = JobStatus.CANCELLED.value
UPSTREAM_FAILED = JobStatus.UPSTREAM_FAILED.value
PREEMPTED = "preempted"  # a failure kind, not a state: the job is queued again

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
        shown = ", ".join(f"{k}={_short(v)}" for k, v in list(self.params.items())[:4])
        return f"{self.kind}[{self.id}]({shown})"


def _short(value, limit: int = 40) -> str:
    text = " ".join(map(str, value)) if isinstance(value, list) else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessions = sessionmaker(self.engine.execution_options(**{READ_ONLY: True}),
                                           expire_on_commit=False)
        self.url = self.engine.url.render_as_string(hide_password=False)

    def session(self) -> Session:
        """A session for changes (on SQLite its transactions take the write lock at once)."""
        return self._sessions()

    def read_session(self) -> Session:
        """A session for reads only; it never blocks or waits for writers."""
        return self._read_sessions()

    def dispose(self) -> None:
        self.engine.dispose()

    # ---- submit -------------------------------------------------------------------------------

    def submit(self, specs: list[JobSpec], *, dry_run: bool = False) -> list[int]:
        """Insert a batch of jobs, all or nothing. Returns their ids in the order given.

        `dry_run` checks everything a real submit checks (names free, dependencies known) and
        then rolls back.
        """
        names = [spec.name for spec in specs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise PlanError(f"duplicate job name(s) in the batch: {', '.join(dupes)}")
        ids_by_name: dict[str, int] = {}
        try:
            with self.session() as s, s.begin():
                self._insert_batch(s, specs, ids_by_name)
                if dry_run:
                    raise _RollBack
        except _RollBack:
            pass
        return [ids_by_name[n] for n in names]

    def _insert_batch(self, s: Session, specs: list[JobSpec], ids_by_name: dict[str, int]) -> None:
        now = db_now(s)
        names = [spec.name for spec in specs]
        taken = s.execute(select(Job.name, Job.id, Job.status).where(Job.name.in_(names))).all()
        if taken:
            shown = ", ".join(f"'{n}' (job {i}, {st})" for n, i, st in taken)
            raise PlanError(f"job name(s) already in the queue: {shown}; rename them, or use "
                            "`sched retry` to run an existing job again (nothing was submitted)")
        for spec in specs:
            ids_by_name[spec.name] = s.execute(insert(Job).values(
                name=spec.name, kind=spec.kind, params=spec.params, priority=spec.priority,
                gpus=spec.gpus, max_attempts=spec.max_attempts, timeout_s=spec.timeout_s,
                tags=list(spec.tags), status=QUEUED, attempts=0, created_at=now,
                preemptible=spec.preemptible, group_name=spec.group_name,
            )).inserted_primary_key[0]
        self._insert_dependencies(s, specs, ids_by_name)
        for spec in specs:
            self._fail_if_upstream_already_failed(s, ids_by_name[spec.name], now)

    def _insert_dependencies(self, s: Session, specs: list[JobSpec], ids_by_name: dict[str, int]) -> None:
        outside = sorted({a for spec in specs for a in spec.after if a not in ids_by_name})
        existing = dict(s.execute(select(Job.name, Job.id).where(Job.name.in_(outside))).all())
        for spec in specs:
            for dep in dict.fromkeys(spec.after):
                dep_id = ids_by_name.get(dep, existing.get(dep))
                if dep_id is None:
                    raise PlanError(f"job '{spec.name}': unknown dependency '{dep}' in after "
                                    "(not in this batch, not in the queue); nothing was submitted")
                s.execute(insert(JobDependency).values(job_id=ids_by_name[spec.name], depends_on=dep_id))

    def _fail_if_upstream_already_failed(self, s: Session, job_id: int, now: datetime) -> None:
        failed = self._failed_dependency(s, job_id, lock=True)
        if failed:
            self._mark_upstream_failed(s, failed.id, failed.name, failed.status, now, roots=[job_id])

    @staticmethod
    def _failed_dependency(s: Session, job_id: int, *, lock: bool = False):
        """A dependency of `job_id` that ended without success (id, name, status), or None.

        `lock` (PostgreSQL: FOR SHARE) makes a concurrent fail() of that dependency wait for this
        transaction, so it then sees the new dependency row and marks the job itself.
        """
        dep = aliased(Job)
        query = select(dep.id, dep.name, dep.status).join(JobDependency, JobDependency.depends_on == dep.id).where(
            JobDependency.job_id == job_id)
        if lock:
            return next((row for row in s.execute(query.with_for_update(read=True, of=dep)).all()
                         if row.status in RETRYABLE), None)
        return s.execute(query.where(dep.status.in_(RETRYABLE))).first()

    # ---- claim --------------------------------------------------------------------------------

    def claim(self, worker_id: int, slot: str, slot_gpus: int, *, lease_s: float = DEFAULT_LEASE_S,
              runs_root: str | Path | None = None) -> ClaimedJob | None:
        """Take the next runnable job for a slot with `slot_gpus` GPUs, or None.

        Runnable: queued, every dependency succeeded, asks for no more GPUs than the slot has, and
        the queue is not drained. Order: priority high to low, then first submitted first.
        """
        with self.engine.begin() as conn:
            candidate = conn.execute(sql.CLAIM_CANDIDATE, {"slot_gpus": slot_gpus}).first()
            if candidate is None:
                return None
            now = db_now(conn)
            run_dir = None
            if runs_root is not None:
                run_dir = Path(runs_root).resolve() / run_folder_name(candidate.id, candidate.name)
            row = conn.execute(sql.CLAIM, {
                "b_id": candidate.id, "b_worker": worker_id, "b_slot": slot, "b_now": now,
                "b_lease": now + timedelta(seconds=lease_s),
                "b_output_dir": str(run_dir) if run_dir else None,
                "b_log_path": str(run_dir / "log.txt") if run_dir else None,
            }).first()
            return None if row is None else ClaimedJob(**row._asdict())

    def top_waiting_priority(self, slot_gpus: int) -> int | None:
        """Priority of the job the next claim for such a slot would take (None: nothing runnable)."""
        with self.engine.connect().execution_options(**{READ_ONLY: True}) as conn, conn.begin():
            return conn.execute(sql.TOP_WAITING, {"slot_gpus": slot_gpus}).scalar()

    # ---- while running ------------------------------------------------------------------------

    def heartbeat(self, job_id: int, worker_id: int, *, lease_s: float = DEFAULT_LEASE_S) -> HeartbeatReply:
        """Renew the lease of a job this worker runs, by the database's clock."""
        with self.engine.begin() as conn:
            now = db_now(conn)
            cancel = conn.execute(sql.HEARTBEAT, {"b_id": job_id, "b_worker": worker_id,
                                                  "b_lease": now + timedelta(seconds=lease_s)}).scalar()
            return HeartbeatReply(lease_held=cancel is not None, cancel_requested=bool(cancel))

    # ---- endings ------------------------------------------------------------------------------

    def _finish(self, s: Session, job_id: int, owner: int, **values) -> bool:
        """Apply `values` to a job only if it is still running under `owner`."""
        return s.execute(update(Job).where(Job.id == job_id, Job.worker_id == owner,
                                           Job.status == RUNNING)
                         .values(lease_until=None, **values)).rowcount == 1

    def succeed(self, job_id: int, worker_id: int, *, exit_code: int = 0) -> bool:
        """running -> succeeded."""
        with self.engine.begin() as conn:
            return conn.execute(sql.SUCCEED, {"b_id": job_id, "b_worker": worker_id, "b_now": db_now(conn),
                                              "b_exit": exit_code}).rowcount == 1

    def fail(self, job_id: int, worker_id: int, *, kind: str = FAILED, message: str = "",
             exit_code: int | None = None) -> str | None:
        """running -> queued while attempts remain, else -> `kind` (failed or killed).

        On a final failure every job that depends on it, directly or not, becomes upstream_failed.
        Returns the new status, or None when the job was no longer this worker's.
        """
        if kind not in (FAILED, KILLED):
            raise ValueError(f"fail() takes kind failed or killed, not {kind!r}")
        with self.session() as s, s.begin():
            now = db_now(s)
            if self._cancel_if_requested(s, job_id, worker_id, now, exit_code):
                return CANCELLED
            row = s.execute(select(Job.attempts, Job.max_attempts, Job.name)
                            .where(Job.id == job_id)).first()
            if row is None:
                return None
            final = row.attempts >= row.max_attempts
            status = kind if final else QUEUED
            if not self._finish(s, job_id, worker_id, status=status, failure_kind=kind, message=message,
                                exit_code=exit_code, finished_at=now if final else None,
                                worker_id=None if not final else worker_id):
                return None
            if final:
                self._mark_upstream_failed(s, job_id, row.name, kind, now)
            return status

    def preempt(self, job_id: int, worker_id: int, *, message: str = "preempted") -> bool:
        """running -> queued, without spending an attempt: the job was stopped from outside."""
        with self.session() as s, s.begin():
            if self._cancel_if_requested(s, job_id, worker_id, db_now(s), None):
                return True
            return self._finish(s, job_id, worker_id, status=QUEUED, failure_kind=PREEMPTED,
                                message=message, attempts=Job.attempts - 1, worker_id=None)

    def finish_cancel(self, job_id: int, worker_id: int, *, exit_code: int | None = None) -> bool:
        """running (cancel requested) -> cancelled, once the worker has killed it."""
        with self.session() as s, s.begin():
            return self._cancel_if_requested(s, job_id, worker_id, db_now(s), exit_code)

    def _cancel_if_requested(self, s: Session, job_id: int, owner: int | None, now: datetime,
                             exit_code: int | None) -> bool:
        """running with a cancel requested -> cancelled, dependents upstream_failed.

        Every ending of a running job checks this first: a job that crashed, was preempted or lost
        its worker before the worker saw the cancel must not go back to the queue.
        """
        guard = [Job.id == job_id, Job.status == RUNNING, Job.cancel_requested.is_(True)]
        if owner is not None:
            guard.append(Job.worker_id == owner)
        if not s.execute(update(Job).where(*guard).values(
                status=CANCELLED, failure_kind=CANCELLED, message="cancelled while running",
                finished_at=now, exit_code=exit_code, lease_until=None)).rowcount:
            return False
        self._mark_upstream_failed(s, job_id, s.scalar(select(Job.name).where(Job.id == job_id)), CANCELLED, now)
        return True

    def _mark_upstream_failed(self, s: Session, failed_id: int, failed_name: str, failed_status: str,
                              now: datetime, roots: list[int] | None = None) -> list[int]:
        """Every queued job downstream of `failed_id` (or only `roots` and theirs) -> upstream_failed."""
        reason = f"upstream job '{failed_name}' (#{failed_id}) ended {failed_status}"
        todo = deque(roots if roots is not None else self._dependents(s, [failed_id]))
        marked: list[int] = []
        while todo:
            job_id = todo.popleft()
            changed = s.execute(update(Job).where(Job.id == job_id, Job.status == QUEUED).values(
                status=UPSTREAM_FAILED, failure_kind=UPSTREAM_FAILED, message=reason,
                finished_at=now)).rowcount
            if changed:
                marked.append(job_id)
                todo.extend(self._dependents(s, [job_id]))
        return marked

    @staticmethod
    def _dependents(s: Session, job_ids: list[int]) -> list[int]:
        return list(s.scalars(select(JobDependency.job_id).where(JobDependency.depends_on.in_(job_ids))))

    # ---- user actions -------------------------------------------------------------------------

    def cancel(self, job_id: int) -> str:
        """Cancel a queued job at once, or ask the worker of a running one to kill it.

        Returns the resulting status: `cancelled`, or `running` with the cancel requested.
        """
        with self.session() as s, s.begin():
            now = db_now(s)
            # Two tries: a worker may claim the job between our read and our guarded update.
            for _ in range(2):
                row = self._get(s, job_id)
                s.expire(row)  # re-read the status on the second try
                if row.status == QUEUED:
                    if s.execute(update(Job).where(Job.id == job_id, Job.status == QUEUED).values(
                            status=CANCELLED, failure_kind=CANCELLED, message="cancelled", finished_at=now)).rowcount:
                        self._mark_upstream_failed(s, job_id, row.name, CANCELLED, now)
                        return CANCELLED
                elif row.status == RUNNING:
                    if s.execute(update(Job).where(Job.id == job_id, Job.status == RUNNING)
                                 .values(cancel_requested=True)).rowcount:
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
        with self.session() as s, s.begin():
            row = self._get(s, job_id)
            if row.status not in RETRYABLE:
                raise InvalidTransition(f"job {job_id} ('{row.name}') is {row.status}; only "
                                        f"{', '.join(RETRYABLE)} jobs can be retried")
            blocker = self._failed_dependency(s, job_id)
            if blocker:
                raise InvalidTransition(f"job {job_id} ('{row.name}') waits for '{blocker.name}', which "
                                        f"is {blocker.status}; retry that one (its dependents follow)")
            if not s.execute(update(Job).where(Job.id == job_id, Job.status == row.status)
                             .values(**self._fresh_values())).rowcount:
                raise InvalidTransition(f"job {job_id} ('{row.name}') changed state meanwhile; try again")
            requeued = [job_id]
            todo = deque(self._dependents(s, [job_id]))
            while todo:
                dep_id = todo.popleft()
                if self._failed_dependency(s, dep_id):
                    continue  # still blocked by another failure: stays upstream_failed
                if s.execute(update(Job).where(Job.id == dep_id, Job.status == UPSTREAM_FAILED)
                             .values(**self._fresh_values())).rowcount:
                    requeued.append(dep_id)
                    todo.extend(self._dependents(s, [dep_id]))
            return requeued

    @staticmethod
    def _fresh_values() -> dict:
        return dict(status=QUEUED, attempts=0, failure_kind=None, message=None, finished_at=None,
                    exit_code=None, worker_id=None, slot=None, lease_until=None, cancel_requested=False)

    def reprioritize(self, job_id: int, priority: int) -> None:
        """Change a job's priority; only a job that has not finished may change."""
        with self.session() as s, s.begin():
            row = self._get(s, job_id)
            if not s.execute(update(Job).where(Job.id == job_id, Job.status.in_((QUEUED, RUNNING)))
                             .values(priority=priority)).rowcount:
                raise InvalidTransition(f"job {job_id} ('{row.name}') is {row.status}; its priority "
                                        "no longer matters")

    # ---- leases, drain, workers ---------------------------------------------------------------

    def requeue_stale(self) -> tuple[list[int], list[int]]:
        """Running jobs whose lease expired: back to queued while attempts remain, else lost.

        Returns (requeued ids, lost ids). Judged by the database's clock, so hosts with skewed
        clocks agree.
        """
        with self.session() as s, s.begin():
            now = db_now(s)
            stale = s.execute(select(Job.id, Job.name, Job.attempts, Job.max_attempts).where(
                Job.status == RUNNING, Job.lease_until < now)).all()
            requeued, lost = [], []
            for job in stale:
                if self._cancel_if_requested(s, job.id, None, now, None):
                    continue  # its cancel was pending: cancelled, not run again
                guard = and_(Job.id == job.id, Job.status == RUNNING, Job.lease_until < now)
                message = "its worker stopped renewing the lease (worker killed or host lost)"
                if job.attempts < job.max_attempts:
                    if s.execute(update(Job).where(guard).values(
                            status=QUEUED, failure_kind=LOST, message=message, worker_id=None,
                            lease_until=None)).rowcount:
                        requeued.append(job.id)
                elif s.execute(update(Job).where(guard).values(
                        status=LOST, failure_kind=LOST, message=message, lease_until=None,
                        finished_at=now)).rowcount:
                    lost.append(job.id)
                    self._mark_upstream_failed(s, job.id, job.name, LOST, now)
            return requeued, lost

    def drain(self) -> None:
        """Workers finish their current jobs and claim no new one until `resume`."""
        self._set_meta("drained", "1")

    def resume(self) -> None:
        self._set_meta("drained", "0")

    def is_drained(self) -> bool:
        with self.read_session() as s:
            return self.drained_in(s)

    @staticmethod
    def drained_in(s: Session) -> bool:
        return s.scalar(select(Meta.value).where(Meta.key == "drained")) == "1"

    def _set_meta(self, key: str, value: str) -> None:
        with self.session() as s, s.begin():
            if not s.execute(update(Meta).where(Meta.key == key).values(value=value)).rowcount:
                s.execute(insert(Meta).values(key=key, value=value))

    def register_worker(self, host: str, pid: int, slots: list[str]) -> int:
        with self.session() as s, s.begin():
            now = db_now(s)
            return s.execute(insert(Worker).values(host=host, pid=pid, slots=slots, started_at=now,
                                                   heartbeat=now, state=WorkerState.RUNNING.value)
                             ).inserted_primary_key[0]

    def worker_heartbeat(self, worker_id: int, state: str | None = None,
                         gpu_stats: list[dict] | None = None) -> None:
        with self.session() as s, s.begin():
            values = {"heartbeat": db_now(s)}
            if state:
                values["state"] = state
            if gpu_stats is not None:
                values["gpu_stats"] = gpu_stats
            s.execute(update(Worker).where(Worker.id == worker_id).values(**values))

    # ---- lookups ------------------------------------------------------------------------------

    @staticmethod
    def _get(s: Session, job_id: int) -> Job:
        row = s.get(Job, job_id)
        if row is None:
            raise NotFound(f"no job with id {job_id}")
        return row

    def resolve(self, ref: str | int) -> int:
        """A job id from an id or a name."""
        with self.read_session() as s:
            if isinstance(ref, int) or str(ref).isdigit():
                if s.get(Job, int(ref)) is not None:
                    return int(ref)
            job_id = s.scalar(select(Job.id).where(Job.name == str(ref)))
            if job_id is None:
                raise NotFound(f"no job named or numbered '{ref}'")
            return job_id

    def get(self, ref: str | int) -> Job:
        job_id = self.resolve(ref)
        with self.read_session() as s:
            return self._get(s, job_id)

    def status_counts(self) -> dict[str, int]:
        with self.read_session() as s:
            return dict(s.execute(select(Job.status, func.count()).group_by(Job.status)).all())


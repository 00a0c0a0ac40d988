"""The only writer of job state. One method per state change, each guarded by the rows it changed.

Every change is a conditional UPDATE (`... WHERE id = :id AND status = :expected`, in
`scheduler.store.queries`): when another worker or a user got there first, the row count is 0 and
the change did not happen. The states and their transitions are drawn in `scheduler.store.states`.
"""

from __future__ import annotations

import os
import random
import re
from collections import Counter, deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Connection, Engine, Row

from .errors import InvalidTransition, NotFound, PlanError
from .fmt import short
from .limits import PRIORITY_MIN, claim_rank
from .store import queries as q
from .store.engine import READ_ONLY, DbClock
from .deadline.campaign import store_campaign
from .store.hotpath import HotPath
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
from .submission import (
    REFUSED,
    REPLACE,
    RERUN,
    SAME,
    Planned,
    SubmitPlan,
    archived_name,
    hash_batch,
    plan_submission,
)

__all__ = ["JobQueue", "JobSpec", "ClaimedJob", "HeartbeatReply", "run_folder_name", "DEFAULT_LEASE_S",
           "QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "KILLED", "LOST", "CANCELLED", "UPSTREAM_FAILED",
           "PREEMPTED"]

DEFAULT_LEASE_S = 60.0
DEFAULT_RETRY_DELAY_S = 30.0  # before a failed job's first retry; doubled for each further one
MAX_RETRY_DELAY_S = 3600.0  # the doubling stops here (a longer `retry_delay` is kept as given)
RETRY_JITTER = 0.1  # each delay is stretched or shrunk by up to this share, so retries spread out
# top_waiting_rank() when the only jobs left wait for their `not_before`: below every priority.
DELAYED = PRIORITY_MIN - 1
GPU_CANDIDATES_LIMIT = 50  # runnable GPU jobs one claim pass considers (claim order)
ANALYZE_AFTER_ROWS = 1000  # a submit adding this many jobs refreshes PostgreSQL's statistics at once


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
    gpu_memory_mib: int | None = None  # a 1-GPU job that may share its GPU: its declared size
    gpu_memory_auto: bool = False  # ... or the peak its like reached (scheduler/resources.py)
    max_attempts: int = 1
    timeout_s: float | None = None
    tags: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)
    preemptible: bool = False
    group_name: str | None = None
    source: str | None = None  # the queue file it came from (absolute path), or "sched add"
    hooks: dict | None = None  # {"on_finish": argv, "on_failure": argv}
    # Seconds before its first retry, doubled for each further one (None: DEFAULT_RETRY_DELAY_S;
    # 0: retry at once). Only the job's own failures wait: lost leases and preemptions do not.
    retry_delay_s: float | None = None
    not_before: datetime | None = None  # not claimed before this time (naive UTC, the database's clock)
    spec_hash: str | None = None  # set by submit: see scheduler.submission
    campaign: str | None = None  # queue.yaml's `campaign:` (else the file's name)
    deliverable: bool = False  # must be done by the campaign's deadline
    expected_s: float | None = None  # its `expected:` hint (seconds)
    campaign_spec: Any = None  # the campaign's deadline settings (deadline.campaign.CampaignSpec), or None


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
    group_name: str | None = None
    hooks: dict | None = None
    urgent: bool = False  # on a deliverable's path while the deadline policy acts

    @property
    def rank(self) -> int:
        """What claims and preemption compare (limits.claim_rank)."""
        return claim_rank(self.priority, self.urgent)

    @property
    def label(self) -> str:
        """How log lines name the job: `finetune-klue/bert-base #12`."""
        return f"{self.name} #{self.id}"

    @property
    def call(self) -> str:
        """The job and what it runs, for the line that starts it: `finetune-x #12 finetune(lr=2e-05, ...)`."""
        shown = ", ".join(f"{k}={short(v)}" for k, v in list(self.params.items())[:4])
        return f"{self.label} {self.kind}({shown})"


@dataclass
class HeartbeatReply:
    lease_held: bool  # False: the job is no longer ours (requeued as stale, or finished)
    cancel_requested: bool


def retry_delay(base_s: float | None, attempts: int, *, jitter: float | None = None) -> float:
    """Seconds a job waits before its next try after failing attempt number `attempts`: `base_s`
    (None: the default) doubled for each attempt after the first, at most MAX_RETRY_DELAY_S (or
    `base_s` when larger), times 1 ± RETRY_JITTER at random (`jitter` in [-1, 1] fixes it)."""
    base = DEFAULT_RETRY_DELAY_S if base_s is None else base_s
    if base <= 0:
        return 0.0
    delay = min(base * 2 ** max(attempts - 1, 0), max(base, MAX_RETRY_DELAY_S))
    spread = random.uniform(-1.0, 1.0) if jitter is None else jitter
    return delay * (1 + RETRY_JITTER * spread)


def glob_to_like(pattern: str) -> str:
    """A shell glob (`ft-*-seed?`) as a SQL LIKE pattern with `\\` as its escape."""
    out = []
    for ch in pattern:
        if ch in "%_\\":
            out.append("\\" + ch)
        elif ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        else:
            out.append(ch)
    return "".join(out)


def _memory_key(spec: JobSpec) -> str | None:
    """The key of the recorded peaks a GPU job's `gpu_memory: auto` reads (scheduler/resources.py)."""
    if spec.gpus < 1:
        return None
    from jobs.registry import known_kind

    from .resources import memory_key

    kind = known_kind(spec.kind)
    return memory_key(kind, spec.params) if kind is not None else None


def _campaign_values(spec: JobSpec) -> dict:
    """The campaign bookkeeping of a job: written at every submit, also to jobs that stay the same."""
    return dict(campaign=spec.campaign, deliverable=spec.deliverable, expected_s=spec.expected_s)


def run_paths(runs_root: str | Path | None, job_id: int, name: str) -> tuple[str, str] | None:
    """(run folder, log file) of a claimed job under `runs_root`; None without a runs root."""
    if runs_root is None:
        return None
    run_dir = Path(runs_root).resolve() / run_folder_name(job_id, name)
    return str(run_dir), str(run_dir / "log.txt")


def run_folder_name(job_id: int, name: str) -> str:
    """A folder name that is unique per job and readable: `00042-finetune-klue_bert-base`."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:80]
    return f"{job_id:05d}-{slug}"


class JobQueue:
    """The queue at one database URL (SQLite file or PostgreSQL)."""

    def __init__(self, url: str | None = None, *, engine: Engine | None = None):
        self.engine = engine if engine is not None else open_database(url)
        self.clock = DbClock()
        # claim() and succeed() on the driver's connection where the dialect allows (hotpath.py)
        self.hot = HotPath(self.engine, self.clock) if HotPath.usable(self.engine) else None
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

    @contextmanager
    def status_reads(self):
        """What `sched status` reads (`store.reads.SqlReads`), in one read transaction."""
        from .store.reads import SqlReads

        with self.read() as conn:
            yield SqlReads(conn)

    def dispose(self) -> None:
        if self.hot is not None:
            self.hot.close()
        self.engine.dispose()

    # ---- submit -------------------------------------------------------------------------------

    def submit(self, specs: list[JobSpec], *, dry_run: bool = False, rerun_changed: bool = False,
               reuse: bool = False) -> list[int]:
        """Submit a batch, all or nothing; returns the job ids in the order given (an unchanged job
        that is already in the queue keeps its id). See `plan` for what happens to each job."""
        return [p.job_id for p in self.plan(specs, dry_run=dry_run, rerun_changed=rerun_changed, reuse=reuse).jobs]

    def plan(self, specs: list[JobSpec], *, dry_run: bool = False, rerun_changed: bool = False,
             reuse: bool = False, preview=None) -> SubmitPlan:
        """Compare a batch with the queue job by job (`scheduler.submission`) and apply it in one
        transaction: new jobs inserted, unchanged ones left alone, changed ones that never started
        replaced, changed ones that ran refused (or, with `rerun_changed`, queued again beside the
        old one). Raises PlanError, changing nothing, when a job is refused; `dry_run` applies
        nothing and returns the plan, refusals included; with `preview(conn)`, a dry run calls it on
        the queue as it would be (in the transaction, before it is rolled back) and keeps what it
        returns as `plan.preview` (`sched submit --dry-run`'s deadline forecast).
        """
        from .limits import check_spec

        for spec in specs:
            check_spec(spec, f"job '{spec.name}'")
        names = [spec.name for spec in specs]
        dupes = sorted(name for name, count in Counter(names).items() if count > 1)
        if dupes:
            raise PlanError(f"duplicate job name(s) in the batch: {', '.join(dupes)}")
        plan = None
        try:
            with self.write() as conn:
                plan = self._plan(conn, specs, rerun_changed, reuse)
                if plan.refused and not dry_run:
                    shown = "; ".join(f"'{p.spec.name}': {p.why}" for p in plan.refused)
                    raise PlanError(f"{len(plan.refused)} job(s) refused, nothing was submitted: {shown}")
                self._apply(conn, plan)
                if dry_run:
                    plan.preview = preview(conn) if preview is not None else None
                    raise _RollBack
        except _RollBack:
            pass
        else:
            self._refresh_statistics_after(plan)
        return plan

    def _refresh_statistics_after(self, plan: SubmitPlan) -> None:
        """PostgreSQL plans the claim from the table's statistics; until autovacuum next samples it
        (up to a minute or more), a table that grew by thousands of jobs is still planned as the
        small one it was: a sort of every queued row per claim (20-80 ms at 20,000-100,000 queued)
        instead of one index step (0.2 ms). A large submit samples it at once."""
        counts = plan.counts()
        added = counts.get("new", 0) + counts.get("rerun", 0)
        if added >= ANALYZE_AFTER_ROWS and self.engine.dialect.name == "postgresql":
            with self.write() as conn:
                q.refresh_statistics(conn)

    def _plan(self, conn: Connection, specs: list[JobSpec], rerun_changed: bool, reuse: bool) -> SubmitPlan:
        existing = {row.name: row for row in q.jobs_named(conn, [s.name for s in specs])}
        outside = sorted({a for spec in specs for a in spec.after} - {s.name for s in specs})
        stored = {row.name: row.spec_hash for row in q.jobs_named(conn, outside) if row.spec_hash}
        hashes = hash_batch(specs, stored)
        for spec in specs:
            spec.spec_hash = hashes[spec.name]
        twins = q.succeeded_with_hashes(conn, hashes.values()) if reuse else {}
        planned = plan_submission(specs, hashes, existing, twins, rerun_changed=rerun_changed, reuse=reuse)
        sources = {spec.source for spec in specs if spec.source and spec.source.startswith("/")}  # files
        # The same campaign at another path (the checkout moved, the file was copied and edited):
        # a file of the same name that submitted jobs of this batch's names.
        names = {os.path.basename(source) for source in sources}
        sources |= {row.source for row in existing.values()
                    if row.source and row.source.startswith("/") and os.path.basename(row.source) in names}
        in_batch = {s.name for s in specs}
        removed = [(row.id, row.name, row.status) for source in sorted(sources)
                   for row in q.jobs_from_source(conn, source) if row.name not in in_batch]
        return SubmitPlan(planned, removed)

    def _apply(self, conn: Connection, plan: SubmitPlan) -> None:
        """Write the plan: new jobs in one multi-row INSERT, their dependencies in another, and one
        query for the whole batch to find jobs whose upstream already failed (a large campaign
        costs a few statements, not a few per job)."""
        now = self.clock.now(conn)
        for campaign in {id(s.campaign_spec): s.campaign_spec for s in (p.spec for p in plan.jobs)
                         if s.campaign_spec is not None}.values():
            store_campaign(conn, campaign, now)
        ids_by_name: dict[str, int] = {}
        fresh: list[Planned] = []  # inserted below, all at once
        for p in plan.jobs:
            spec = p.spec
            if p.action in (SAME, *REFUSED):  # refused ones only reach here in a dry run
                ids_by_name[spec.name] = p.job_id
                if p.action == SAME:
                    q.set_campaign_values(conn, p.job_id, **_campaign_values(spec))
            elif p.action == REPLACE:
                if not q.rewrite_job(conn, p.job_id, **self._row_values(spec)):
                    raise PlanError(f"job '{spec.name}' started meanwhile; submit again (nothing was submitted)")
                q.delete_dependencies(conn, p.job_id)
                ids_by_name[spec.name] = p.job_id
            elif p.twin is not None:
                ids_by_name[spec.name] = p.job_id = self._insert_reused(conn, spec, p.twin, now)
            else:
                if p.action == RERUN:
                    q.rename_job(conn, p.job_id, archived_name(spec.name, p.job_id))
                fresh.append(p)
        new_ids = q.insert_jobs(conn, [dict(self._row_values(p.spec), status=QUEUED, attempts=0, created_at=now)
                                       for p in fresh])
        for p, job_id in zip(fresh, new_ids):
            ids_by_name[p.spec.name] = p.job_id = job_id
        written = [p.spec for p in plan.jobs if p.action not in (SAME, *REFUSED)]
        self._insert_dependencies(conn, written, ids_by_name)
        waiting = [ids_by_name[s.name] for s in written if s.after]
        for job_id, failed in q.failed_dependencies(conn, waiting).items():
            self._mark_upstream_failed(conn, failed.id, failed.name, failed.status, now, roots=[job_id])
        if written:
            q.notify_change(conn)

    @staticmethod
    def _row_values(spec: JobSpec) -> dict:
        return dict(name=spec.name, kind=spec.kind, params=spec.params, priority=spec.priority, gpus=spec.gpus,
                    max_attempts=spec.max_attempts, timeout_s=spec.timeout_s, tags=list(spec.tags),
                    preemptible=spec.preemptible, group_name=spec.group_name, spec_hash=spec.spec_hash,
                    source=spec.source, hooks=spec.hooks or None, gpu_memory_mib=spec.gpu_memory_mib,
                    gpu_memory_auto=spec.gpu_memory_auto, memory_key=_memory_key(spec),
                    not_before=spec.not_before, retry_delay_s=spec.retry_delay_s, **_campaign_values(spec))

    def _insert_reused(self, conn: Connection, spec: JobSpec, twin: int, now: datetime) -> int:
        """A job that succeeded as `twin` did, with its results (metrics, artifacts, run folder)."""
        source = q.job_row(conn, twin)
        job_id = q.insert_job(conn, **self._row_values(spec), status=SUCCEEDED, attempts=0, created_at=now,
                              reused_from=twin, started_at=now, finished_at=now, output_dir=source.output_dir,
                              log_path=source.log_path, exit_code=0,
                              message=f"reused the results of job {twin} ('{source.name}'): same inputs")
        q.copy_records(conn, twin, job_id)
        return job_id

    @staticmethod
    def _insert_dependencies(conn: Connection, specs: list[JobSpec], ids_by_name: dict[str, int]) -> None:
        outside = sorted({a for spec in specs for a in spec.after if a not in ids_by_name})
        existing = q.job_ids_by_name(conn, outside)
        pairs = []
        for spec in specs:
            for dep in dict.fromkeys(spec.after):
                dep_id = ids_by_name.get(dep, existing.get(dep))
                if dep_id is None:
                    where = f"{spec.source}: " if spec.source else ""  # the queue file, or "sched add"
                    raise PlanError(f"{where}job '{spec.name}', field after: unknown dependency '{dep}' "
                                    "(not in this batch, not in the queue); nothing was submitted")
                pairs.append((ids_by_name[spec.name], dep_id))
        q.insert_dependencies(conn, pairs)

    # ---- claim --------------------------------------------------------------------------------

    def claim(self, worker_id: int, slot: str, slot_gpus: int, *, lease_s: float = DEFAULT_LEASE_S,
              runs_root: str | Path | None = None) -> ClaimedJob | None:
        """queued -> running: the next runnable job for a slot with `slot_gpus` GPUs, or None.

        Runnable: queued, every dependency succeeded, asks for no more GPUs than the slot has, and
        the queue is not drained. Order: priority high to low, then first submitted first.
        """
        if self.hot is not None:
            row = self.hot.claim({"b_worker": worker_id, "b_slot": slot, "slot_gpus": slot_gpus,
                                  "lease": timedelta(seconds=lease_s)},
                                 lambda job_id, name: run_paths(runs_root, job_id, name))
            return None if row is None else ClaimedJob(**row)
        with self.write() as conn:
            now = self.clock.now(conn)
            candidate = q.claim_candidate(conn, slot_gpus, now)
            if candidate is None:
                return None
            output_dir, log_path = run_paths(runs_root, candidate.id, candidate.name) or (None, None)
            row = q.claim(conn, b_id=candidate.id, b_worker=worker_id, b_slot=slot, b_now=now,
                          b_lease=now + timedelta(seconds=lease_s), b_output_dir=output_dir, b_log_path=log_path)
            return None if row is None else ClaimedJob(**row._asdict())

    def claim_on_gpus(self, worker_id: int, claim_pass, *, lease_s: float = DEFAULT_LEASE_S,
                      runs_root: str | Path | None = None, limit: int = GPU_CANDIDATES_LIMIT):
        """queued -> running for every runnable GPU job that `claim_pass` (scheduler.execute.placement.ClaimPass,
        the worker's GPUs as they are now) places, in claim order, in one transaction.

        Returns [(ClaimedJob, Placement)]; `claim_pass.reservation` then names the first job that
        did not fit (the worker keeps GPUs free for it). `limit`: how many candidates one pass reads.
        """
        from .resources import Request, share_for

        claimed = []
        with self.write() as conn:
            now = self.clock.now(conn)
            candidates = q.gpu_candidates(conn, len(claim_pass.gpus), limit, now)
            if not candidates:
                return claimed
            peaks = q.peaks_by_memory_key(conn, [c.memory_key for c in candidates
                                                 if c.gpu_memory_auto and c.memory_key])
            for c in candidates:
                share = share_for(c.gpu_memory_mib, c.gpu_memory_auto, c.exclusive, peaks.get(c.memory_key),
                                  claim_pass.context_mib)
                request = Request(c.id, c.name, claim_rank(c.priority, c.urgent), c.gpus,
                                  share if claim_pass.can_share else None, c.preemptible)
                placement = claim_pass.place(request)
                if placement is None:
                    continue
                output_dir, log_path = run_paths(runs_root, c.id, c.name) or (None, None)
                row = q.claim_placed(conn, b_id=c.id, b_worker=worker_id, b_slot=placement.slot, b_now=now,
                                     b_lease=now + timedelta(seconds=lease_s), b_placed=placement.share_mib,
                                     b_output_dir=output_dir, b_log_path=log_path)
                if row is not None:
                    claimed.append((ClaimedJob(**row._asdict()), placement))
        return claimed

    def record_gpu_peak(self, job_id: int, peak_mib: int) -> None:
        """The GPU memory the job's attempt reserved at most (`gpu_memory: auto` reads it)."""
        with self.write() as conn:
            q.record_gpu_peak(conn, job_id, int(peak_mib))

    def requeue_exclusive(self, job_id: int, worker_id: int, *, message: str) -> bool:
        """running -> queued as a whole-GPU job, without spending an attempt (it ran out of GPU
        memory beside other jobs)."""
        with self.write() as conn:
            done = q.requeue_exclusive(conn, job_id, worker_id, message, self.clock.now(conn))
            q.notify_change(conn)
            return done

    def set_reservation(self, worker_id: int, reservation: dict | None) -> None:
        """The waiting multi-GPU job a worker keeps free GPUs for (None: none), for `sched status`."""
        with self.write() as conn:
            q.update_worker(conn, worker_id, reservation=reservation)

    def upcoming_kinds(self, limit: int = 10) -> list[str]:
        """The kinds of the next queued jobs, in claim order, those waiting for others included
        (what a spare runner should import)."""
        with self.read() as conn:
            return q.upcoming_kinds(conn, limit)

    def running_on(self, worker_id: int) -> set[int]:
        """The jobs the queue says this worker runs."""
        with self.read() as conn:
            return q.running_on_worker(conn, worker_id)

    def urgent_jobs(self, job_ids: list[int]) -> set[int]:
        """Which of these jobs the deadline policy marks urgent now."""
        if not job_ids:
            return set()
        with self.read() as conn:
            return q.urgent_among(conn, job_ids)

    def top_waiting_rank(self, slot_gpus: int) -> int | None:
        """Claim rank (limits.claim_rank) of the job the next claim for such a slot would take
        (None: nothing runnable).

        When nothing is runnable now but a job waits only for its `not_before` (a retry's delay),
        DELAYED: not None, so a `--until-empty` worker waits for it, and below every priority, so
        no running job is preempted for a job that cannot start yet."""
        with self.read() as conn:
            now = self.clock.now(conn)
            top = q.top_waiting_rank(conn, slot_gpus, now)
            if top is None and q.any_delayed(conn, slot_gpus, now):
                return DELAYED
            return top

    # ---- while running ------------------------------------------------------------------------

    def heartbeat(self, job_id: int, worker_id: int, *, lease_s: float = DEFAULT_LEASE_S) -> HeartbeatReply:
        """Renew the lease of a job this worker runs, by the database's clock."""
        with self.write() as conn:
            cancel = q.renew_lease(conn, job_id, worker_id, self.clock.now(conn) + timedelta(seconds=lease_s))
            return HeartbeatReply(lease_held=cancel is not None, cancel_requested=bool(cancel))

    # ---- endings ------------------------------------------------------------------------------

    def succeed(self, job_id: int, worker_id: int, *, exit_code: int = 0) -> bool:
        """running -> succeeded."""
        if self.hot is not None:
            return self.hot.succeed(job_id, worker_id, exit_code)
        with self.write() as conn:
            done = q.succeed(conn, job_id, worker_id, self.clock.now(conn), exit_code)
            q.notify_change(conn)  # its dependents may run now
            return done

    def fail(self, job_id: int, worker_id: int, *, kind: str = FAILED, message: str = "",
             exit_code: int | None = None, permanent: bool = False) -> str | None:
        """running -> queued while attempts remain, else -> `kind` (failed or killed).

        `permanent`: the cause cannot change by retrying (bad input): final whatever attempts remain.
        On a final failure every job that depends on it, directly or not, becomes upstream_failed.
        Returns the new status, or None when the job was no longer this worker's.
        """
        if kind not in (FAILED, KILLED):
            raise ValueError(f"fail() takes kind failed or killed, not {kind!r}")
        with self.write() as conn:
            now = self.clock.now(conn)
            if self._cancel_if_requested(conn, job_id, worker_id, now, exit_code):
                return CANCELLED
            row = q.attempts_of(conn, job_id)
            if row is None:
                return None
            final = permanent or row.attempts >= row.max_attempts
            status = kind if final else QUEUED
            # A retry waits (its delay doubling per attempt): a crash from a cause outside the job
            # (a file not yet there, a service restarting) gets time to clear.
            delay = 0.0 if final else retry_delay(row.retry_delay_s, row.attempts)
            extra = {"not_before": now + timedelta(seconds=delay)} if delay else {}
            if not q.finish_owned(conn, job_id, worker_id, now, status=status, failure_kind=kind, message=message,
                                  exit_code=exit_code, finished_at=now if final else None,
                                  worker_id=worker_id if final else None, **extra):
                return None
            if final:
                self._mark_upstream_failed(conn, job_id, row.name, kind, now)
            else:
                q.notify_change(conn)
            return status

    def preempt(self, job_id: int, worker_id: int, *, message: str = "preempted") -> bool:
        """running -> queued, without spending an attempt: the job was stopped from outside."""
        with self.write() as conn:
            now = self.clock.now(conn)
            if self._cancel_if_requested(conn, job_id, worker_id, now, None):
                return True
            requeued = q.requeue_preempted(conn, job_id, worker_id, message, now)
            q.notify_change(conn)
            return requeued

    def finish_cancel(self, job_id: int, worker_id: int, *, exit_code: int | None = None) -> bool:
        """running (cancel requested) -> cancelled, once the worker has killed it."""
        with self.write() as conn:
            return self._cancel_if_requested(conn, job_id, worker_id, self.clock.now(conn), exit_code)

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
            now = self.clock.now(conn)
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

    def retry(self, job_id: int, *, force: bool = False) -> list[int]:
        """failed/killed/lost/cancelled/upstream_failed (and, with `force`, succeeded) -> queued
        with fresh attempts.

        Jobs downstream that were upstream_failed because of it are queued again too, unless
        another of their dependencies also ended without success. Returns every job id put back.
        """
        allowed = (*RETRYABLE, SUCCEEDED) if force else RETRYABLE
        with self.write() as conn:
            row = self._get(conn, job_id)
            if row.status not in allowed:
                hint = " (--force runs a succeeded job again)" if row.status == SUCCEEDED else ""
                raise InvalidTransition(f"job {job_id} ('{row.name}') is {row.status}; only "
                                        f"{', '.join(allowed)} jobs can be retried{hint}")
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
            q.notify_change(conn)
            return requeued

    def remove(self, job_ids: list[int]) -> list[Row]:
        """finished jobs -> removed, with their metrics, artifacts and dependency rows.

        Refuses (changing nothing) a queued or running job, and a job that a queued or running
        job still waits for. Returns the removed rows (for their run folders).
        """
        with self.write() as conn:
            rows = [self._get(conn, job_id) for job_id in dict.fromkeys(job_ids)]
            active = [r for r in rows if r.status in (QUEUED, RUNNING)]
            if active:
                shown = ", ".join(f"{r.id} ('{r.name}', {r.status})" for r in active[:5])
                raise InvalidTransition(f"only finished jobs can be removed; not: {shown} (cancel them first)")
            needed = q.unfinished_dependents(conn, [r.id for r in rows])
            if needed:
                shown = ", ".join(f"{n.depends_on} is needed by {n.id} ('{n.name}')" for n in needed[:5])
                raise InvalidTransition(f"jobs that queued or running jobs wait for cannot be removed: {shown}")
            if q.delete_finished(conn, [r.id for r in rows]) != len(rows):
                raise InvalidTransition("a job changed state meanwhile; nothing was removed, try again")
            return rows

    def find(self, *, statuses=(), kinds=(), tags=(), name_glob: str | None = None,
             since: datetime | None = None, limit: int | None = None) -> list[Row]:
        """Jobs matching every filter, oldest first (`tags`: carrying any of them)."""
        with self.read() as conn:
            rows = q.list_jobs(conn, statuses=statuses, kinds=kinds, since=since,
                               name_like=None if name_glob is None else glob_to_like(name_glob))
        if tags:
            rows = [r for r in rows if set(tags) & set(r.tags or [])]
        return rows[:limit] if limit else rows

    def has_tag(self, tag: str) -> bool:
        with self.read() as conn:
            return any(tag in tags for tags in q.tag_lists(conn))

    def reprioritize(self, job_id: int, priority: int) -> None:
        """Change a job's priority; only a job that has not finished may change."""
        from .limits import check_priority

        check_priority(priority, f"job {job_id}")
        with self.write() as conn:
            row = self._get(conn, job_id)
            if not q.set_priority(conn, job_id, priority):
                raise InvalidTransition(f"job {job_id} ('{row.name}') is {row.status}; its priority "
                                        "no longer matters")
            q.notify_change(conn)

    # ---- leases, drain, workers ---------------------------------------------------------------

    def requeue_stale(self, *, exclude_worker: int | None = None) -> tuple[list[int], list[int]]:
        """running with an expired lease -> queued while attempts remain, else lost.

        Returns (requeued ids, lost ids). Judged by the database's clock, so hosts with skewed
        clocks agree. `exclude_worker`: a live worker's own reaper never takes its worker's jobs.
        """
        message = "its worker stopped renewing the lease (worker killed or host lost)"
        with self.write() as conn:
            now = self.clock.now(conn)
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
            if requeued:
                q.notify_change(conn)
            return requeued, lost

    def drain(self) -> None:
        """Workers finish their current jobs and claim no new one until `resume`."""
        with self.write() as conn:
            q.set_meta(conn, "drained", "1")

    def resume(self) -> None:
        with self.write() as conn:
            q.set_meta(conn, "drained", "0")
            q.notify_change(conn)

    def is_drained(self) -> bool:
        with self.read() as conn:
            return q.is_drained(conn)

    def register_worker(self, host: str, pid: int, slots: list[str]) -> int:
        with self.write() as conn:
            return q.insert_worker(conn, host, pid, slots, self.clock.now(conn))

    def worker_heartbeat(self, worker_id: int, state: str | None = None,
                         gpu_stats: list[dict] | None = None, problem: str | None = ...) -> None:
        """The worker is alive; with its state, GPU readings and what keeps it from claiming
        (`problem`: one line, None once it claims again; left as it is when not given)."""
        with self.write() as conn:
            values = {"heartbeat": self.clock.now(conn)}
            if state:
                values["state"] = state
            if gpu_stats is not None:
                values["gpu_stats"] = gpu_stats
            if problem is not ...:
                values["problem"] = None if problem is None else problem[:500]
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
        from .limits import MAX_JOB_ID, MAX_JOB_ID_POSTGRESQL, job_id_of

        number = job_id_of(ref, MAX_JOB_ID_POSTGRESQL if self.engine.dialect.name == "postgresql" else MAX_JOB_ID)
        with self.read() as conn:
            if number is not None and q.job_row(conn, number) is not None:
                return number
            job_id = q.job_id_named(conn, str(ref))
            if job_id is None:
                raise NotFound(f"no job named or numbered '{short(str(ref), 80)}'")
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

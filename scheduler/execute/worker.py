"""The worker loop: GPU slots and CPU slots, one runner process per job, the parent owns the database.

CPU slots run jobs that ask no GPU, one at a time each. GPU jobs are placed by a claim pass over
the worker's GPUs (scheduler/execute/placement.py): whole GPUs, k GPUs at once, or a memory share of one GPU;
the first job that does not fit reserves the free GPUs it needs.

`run_once()` is one step (reap finished jobs, renew leases, enforce timeouts and cancels, claim
for free slots and GPUs, keep a spare runner per slot); `run()` repeats it, sleeping between steps until a
runner reports, the queue's database changes, or a heartbeat is due (`scheduler.execute.wakeup`). Tests
drive `run_once` directly instead of sleeping.

Warm (the default of `sched worker`): each slot keeps a spare runner that has already imported
what the next jobs need, and a runner whose job's kind is reusable takes the slot's next job in
the same process (`scheduler.execute.launch`). Cold: a new runner per claimed job.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from jobs.proc import kill_all, processes_with

from ..deadline.planner import PASS_EVERY_S, plan_pass
from ..outage import OUTAGE_ERRORS
from ..limits import rank_text
from ..resources import DEFAULT_CONTEXT_MIB, DEFAULT_HEADROOM_MIB, fmt_mib
from .placement import ClaimPass, Gpu, Held, Placement, Reservation
from .hooks import reap as reap_hooks
from .hooks import run_hooks
from ..jobqueue import DEFAULT_LEASE_S, GPU_CANDIDATES_LIMIT, ClaimedJob, JobQueue
from .launch import RunnerProc, header, start_runner
from .runner import CUDA_UNUSABLE_EXIT, ERROR_FILE, GPU_OOM_EXIT, INPUT_ERROR_EXIT, PREEMPTED_EXIT
from .slots import Slot, gpu_readings, nvml_inventory, placement_env
from ..store.states import CANCELLED, FAILED, KILLED, QUEUED, RUNNING, SUCCEEDED, WorkerState
from .wakeup import Wakeup

RUN_TOKEN = "SCHED_RUN_TOKEN"  # in every job process's environment: finds what a dead runner left
# While a reusable job runs, each step of the loop asks whether its runner holds what the next jobs
# import; a reading of the queue this old does, so a queue of short jobs pays one read a second,
# not one per job.
NEXT_IMPORTS_FRESH_S = 1.0

log = logging.getLogger("sched.worker")


@dataclass
class Child:
    """A job running in a runner process: on a CPU slot, or on GPUs (`placement`)."""

    job: ClaimedJob
    runner: RunnerProc
    started: float
    last_heartbeat: float
    lane: str = ""  # the slot whose spare runner it took and gives back: cpu0, or its first GPU's
    placement: Placement | None = None
    stop_reason: str | None = None  # why we signalled it: cancel, timeout, shutdown, lease_lost
    term_sent_at: float | None = None
    killed: bool = False
    token: str = ""  # RUN_TOKEN of this attempt's processes
    done: tuple[int, bool] | None = None  # (exit code, runner takes another job) once it reported
    renewed_at: float = 0.0  # when the last lease renewal that succeeded was sent (monotonic)
    kill_at: float | None = None  # SIGKILL by then whatever the grace (its lease runs out)

    @property
    def proc(self) -> subprocess.Popen:
        return self.runner.proc


@dataclass
class WorkerOptions:
    runs_root: Path = Path("runs")
    lease_s: float = DEFAULT_LEASE_S
    heartbeat_s: float = 10.0  # renew leases this often; keep well under lease_s
    poll_s: float = 0.5  # idle wait between steps in run()
    stop_grace_s: float = 10.0  # SIGTERM, then SIGKILL after this long
    reaper_s: float = 15.0  # how often run() requeues jobs whose lease expired
    max_jobs: int | None = None  # stop claiming after this many jobs
    warm: bool = False  # spare runners and runner reuse (`sched worker` turns it on; --no-warm off)
    gpu_headroom_mib: int = DEFAULT_HEADROOM_MIB  # left free on a GPU that jobs share
    gpu_context_mib: int = DEFAULT_CONTEXT_MIB  # each shared job's CUDA context, inside its share
    min_free_mib: int = 1024  # claim nothing while the runs folder has less free space than this
    max_log_mib: int = 100  # a job's log beyond this keeps its head and tail (checked each heartbeat)
    idle_exit_s: float | None = None  # exit after this long with no job running and none claimed


@dataclass
class WorkerLoop:
    queue: JobQueue
    slots: list[Slot]
    options: WorkerOptions = field(default_factory=WorkerOptions)
    worker_id: int | None = None
    children: dict[int, Child] = field(default_factory=dict)  # job id -> child
    spares: dict[str, RunnerProc] = field(default_factory=dict)  # slot name -> idle runner
    next_imports: tuple[float, tuple[str, ...]] | None = None  # (when read, what the next jobs import)
    claimed: int = 0
    stopping: bool = False
    draining: bool = False  # finishing its jobs, claiming no more (SIGUSR2)
    last_worker_heartbeat: float = float("-inf")
    last_preempt_check: float = float("-inf")
    last_deadline_pass: float = float("-inf")
    deadlines_seen: bool = False  # the last deadline pass found a campaign with a deadline
    database_was_down: bool = False  # the next step renews every lease before anything else
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:12])  # this worker's part of RUN_TOKEN
    # GPU memory now (total, free) of these GPU indices; NVML by default, fake inventories in tests
    inventory: Callable[[list[int]], list[Gpu]] = nvml_inventory
    reservation: Reservation | None = None  # the waiting GPU job this worker keeps GPUs free for
    gpu_fault: str | None = None  # CUDA did not work for a job here: no more GPU jobs on this worker
    problem: str | None = None  # what keeps it from claiming now (runs folder full, database file gone)
    db_file: tuple[int, int] | None = None  # (device, inode) of a SQLite database when the worker started
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)  # children vs the guard thread
    _wake_r: int | None = field(default=None, repr=False)  # request_stop() writes here to end a wait
    _wake_w: int | None = field(default=None, repr=False)

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> int:
        if self.worker_id is None:
            self.worker_id = self.queue.register_worker(_host_label(), os.getpid(), [s.name for s in self.slots])
            log.info("worker %s started on %s with slots %s", self.worker_id, socket.gethostname(),
                     ", ".join(s.name for s in self.slots))
            self.db_file = _file_identity(self.queue.url)
        return self.worker_id

    def request_stop(self, *_args) -> None:
        """Stop claiming; ask running jobs to stop; they are queued again as preempted."""
        if not self.stopping:
            log.warning("stopping: asking %d running job(s) to stop", len(self.children))
        self.stopping = True
        self._wake()

    def _wake(self) -> None:
        """An idle run() is waiting: wake it now (safe in a signal handler)."""
        if self._wake_w is not None:
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass

    def run(self, *, until_empty: bool = False) -> None:
        """Run steps until stopped (SIGTERM/SIGINT), or until nothing is left when `until_empty`."""
        from .reaper import start_reaper

        self.start()
        # Signals reach the main thread only; a loop run elsewhere (an embedding program) is stopped
        # with request_stop().
        main = threading.current_thread() is threading.main_thread()
        previous = {sig: signal.signal(sig, self.request_stop) for sig in (signal.SIGTERM, signal.SIGINT)} \
            if main else {}
        if main:  # `sched slurm down`: finish the running jobs, claim no more, exit
            previous[signal.SIGUSR2] = signal.signal(signal.SIGUSR2, self.request_drain)
        reaper = start_reaper(self.queue, self.options.reaper_s, worker_id=self.worker_id,
                              lease_s=self.options.lease_s)
        wakeup = Wakeup(self.queue)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        guard_stop = threading.Event()
        guard = threading.Thread(target=self._guard, args=(guard_stop,), name="sched-guard", daemon=True)
        guard.start()
        failures = 0
        idle_since = time.monotonic()
        try:
            while True:
                if (self.stopping or self.draining) and not self.children:
                    break
                try:
                    busy = self.run_once()
                    if until_empty and not self.children and not busy and self._nothing_left():
                        break
                    if self.children or busy:
                        idle_since = time.monotonic()
                    elif self._idle_too_long(idle_since):
                        break
                    failures = 0
                except SQLAlchemyError as exc:
                    failures += 1
                    if self.stopping and self._children_gone():
                        log.error("stopping with %d job ending(s) unrecorded: the database is unreachable (%s); "
                                  "their leases run out and they are queued again", len(self.children),
                                  str(exc).splitlines()[0])
                        self.children.clear()
                        break
                    time.sleep(self._after_database_error(exc, failures))
                    continue
                if not busy:
                    wakeup.wait([*self._report_fds(), self._wake_r], self._idle_timeout())
                    _drain(self._wake_r)
        finally:
            guard_stop.set()
            guard.join(timeout=5)
            wakeup.close()
            for fd in (self._wake_r, self._wake_w):
                os.close(fd)
            self._wake_r = self._wake_w = None
            self.close()
            reaper.shutdown(wait=False)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            try:
                self.queue.worker_heartbeat(self.worker_id, state=WorkerState.STOPPED.value)
            except SQLAlchemyError:  # unreachable: `sched status` stops listing it once it is silent
                pass
            log.info("worker %s stopped after %d job(s)", self.worker_id, self.claimed)

    def request_drain(self, *_args) -> None:
        """Finish the running jobs, claim no more, then exit (SIGUSR2: `sched slurm down`)."""
        if not self.draining:
            log.warning("draining: %d running job(s) finish, then this worker exits", len(self.children))
        self.draining = True
        self._wake()

    def _idle_too_long(self, idle_since: float) -> bool:
        limit = self.options.idle_exit_s
        if limit is None or time.monotonic() - idle_since < limit:
            return False
        log.info("nothing to claim for %.0fs (--idle-exit): exiting", limit)
        return True

    def _guard(self, stop: threading.Event) -> None:
        """What must not wait for the database, every GUARD_S: stop requests, grace periods,
        timeouts, and stopping jobs whose lease this worker could not renew before it runs out.
        The loop's own steps do the same; this thread covers a step stuck on the database."""
        while not stop.wait(GUARD_S):
            try:
                self._local_duties(time.monotonic())
            except Exception:  # noqa: BLE001 - the guard must outlive any one bad pass
                log.exception("guard pass failed")

    def _local_duties(self, now: float) -> None:
        with self._lock:
            self._enforce_limits(now)
            self._guard_leases(now)
            if self.stopping:
                self._stop_children(now)

    def _children_gone(self) -> bool:
        """Every runner of this worker's jobs has exited (their endings not yet recorded)."""
        with self._lock:
            return all(child.proc.poll() is not None for child in self.children.values())

    def close(self) -> None:
        """Stop every runner of this worker: idle spares, and (after an unexpected error) jobs."""
        for child in self.children.values():
            self._kill_group(child, signal.SIGKILL)
            kill_all(processes_with(RUN_TOKEN, child.token))
            child.runner.release()
        for spare in self.spares.values():
            spare.release()
            _kill_runner(spare)
        self.spares.clear()

    def _report_fds(self) -> list[int]:
        runners = [c.runner for c in self.children.values()] + list(self.spares.values())
        return [r.reports for r in runners if not r.closed and r.reports >= 0]

    def _idle_timeout(self) -> float:
        """Until the next heartbeat is due (leases, timeouts and the preemption check run then)."""
        due = self.last_worker_heartbeat + self.options.heartbeat_s
        for child in self.children.values():
            due = min(due, child.last_heartbeat + self.options.heartbeat_s)
            if child.job.timeout_s:
                due = min(due, child.started + child.job.timeout_s)
        return max(0.01, min(self.options.poll_s, due - time.monotonic()))

    def _after_database_error(self, exc: SQLAlchemyError, failures: int) -> float:
        """The database is unreachable, locked, or lost its tables: keep the jobs running and try
        again soon. The wait stays well under the lease (at most half a heartbeat interval), and
        the first step that reaches the database renews every lease before anything else; a job
        whose lease could not be renewed in time is stopped meanwhile (`_guard_leases`)."""
        self.database_was_down = True
        message = str(exc).splitlines()[0]
        if _tables_missing(exc):
            self._recreate_tables(message)
        delay = min(self.options.heartbeat_s / 2, self.options.poll_s * 2 ** failures)
        log.warning("database error (%s); retrying in %.1fs", message, delay)
        return delay

    def _recreate_tables(self, message: str) -> None:
        """The database was dropped and created again (its tables are gone): build them again and
        register this worker anew. The jobs it was running are no longer in any queue: stopped."""
        from ..store.migrate import ensure_schema

        try:
            ensure_schema(self.queue.engine)
        except Exception as exc:  # noqa: BLE001 - still unreachable: the next step tries again
            log.warning("cannot recreate the queue's tables yet (%s)", str(exc).splitlines()[0])
            return
        log.error("the queue database lost its tables (%s): created them again; this worker registers "
                  "anew, and the %d job(s) it was running, gone from the queue, are stopped",
                  message, len(self.children))
        for child in self.children.values():
            self._signal(child, "lease_lost", time.monotonic(), signal.SIGKILL)
        self.worker_id = None

    def _nothing_left(self) -> bool:
        """After a step that claimed nothing: True when no job can start here any more.

        With no job running anywhere and none runnable now, nothing can unblock a queued job (its
        dependencies or GPU needs will not change), so the queue is empty for us. A job running
        elsewhere may still succeed, fail into a retry, or have its lease expire, so we wait. The
        runnable check closes the gap where another worker finished a job after our claim.
        """
        if self.queue.is_drained() or self._max_jobs_reached():
            return True
        counts = self.queue.status_counts()
        if counts.get(RUNNING):
            return False
        if self.queue.top_waiting_rank(len(self._gpu_slots())) is not None:
            return False
        if counts.get(QUEUED):
            log.warning("%d queued job(s) cannot run on this worker (%s); `sched status` says why",
                        counts[QUEUED], f"{len(self._gpu_slots())} GPU(s)")
        return True

    def _gpu_slots(self) -> list[Slot]:
        return [slot for slot in self.slots if slot.gpu is not None]

    def _cpu_slots(self) -> list[Slot]:
        return [slot for slot in self.slots if slot.gpu is None]

    def _max_jobs_reached(self) -> bool:
        return self.options.max_jobs is not None and self.claimed >= self.options.max_jobs

    # ---- one step -----------------------------------------------------------------------------

    def run_once(self, now: float | None = None) -> bool:
        """One step of the loop. Returns True when something happened (a job started or ended)."""
        now = time.monotonic() if now is None else now
        self._local_duties(now)  # first: none of it needs the database
        self.start()
        if self.database_was_down:  # back after an outage: renew every lease before anything else
            self._renew_leases(now, force=True)
            self._requeue_lost_claims()
            self.database_was_down = False
        changed = self._reap_finished()
        self._renew_leases(now)
        self._local_duties(now)
        if not (self.stopping or self.draining) and self._can_claim(now) and not self._max_jobs_reached():
            self._deadline_pass(now, job_ended=changed)
            changed |= self._claim_for_free_slots(now)
            if not changed:
                self._preempt_for_waiting_jobs(now)
        if self.options.warm and not self.stopping:
            self._keep_spares()
        return changed

    def _requeue_lost_claims(self) -> None:
        """A claim the database committed while its reply was lost in the outage: the job is ours in
        the queue but never started here. Queued again at once, its attempt not counted (it never
        ran), instead of waiting for its lease to run out and spending one."""
        with self._lock:
            mine = set(self.children)
        for job_id in self.queue.running_on(self.worker_id) - mine:
            if self.queue.preempt(job_id, self.worker_id, message=(
                    "queued again: this worker's claim of it was lost in a database outage (attempt not counted)")):
                log.warning("job #%d: its claim's reply was lost in the database outage; queued again "
                            "(attempt not counted)", job_id)

    def _deadline_pass(self, now: float, *, job_ended: bool) -> None:
        """The deadline policy's pass (scheduler/deadline/planner.py) before claiming: every
        PASS_EVERY_S, and after a job ended while a campaign has a deadline. Each decision it
        writes is a line in this log."""
        due = now - self.last_deadline_pass >= PASS_EVERY_S or (job_ended and self.deadlines_seen)
        if not due:
            return
        self.last_deadline_pass = now
        try:
            with self.queue.write() as conn:
                lines = plan_pass(conn, self.queue.clock.now(conn), had_deadlines=self.deadlines_seen)
        except OUTAGE_ERRORS as exc:
            log.warning("deadline pass skipped: %s", str(exc).splitlines()[0])
            return
        self.deadlines_seen = lines is not None
        for line in lines or []:
            log.info("%s", line)
        if self.deadlines_seen:
            self._refresh_urgency()

    def _refresh_urgency(self) -> None:
        """A running job the pass marked urgent (or no longer) ranks so in preemption: a tune on a
        deliverable's path is not asked to yield to a job off it."""
        with self._lock:
            children = list(self.children.values())
        urgent = self.queue.urgent_jobs([c.job.id for c in children])
        for child in children:
            child.job.urgent = child.job.id in urgent

    def _reap_finished(self) -> bool:
        changed = False
        for job_id, child in list(self.children.items()):
            code = _ending(child)
            if code is None:
                continue
            again = bool(child.done and child.done[1]) and child.stop_reason is None
            if not again:
                # Whatever the job left running (a server, `cmd &`, a daemon of a runner that died
                # abruptly) would hold the slot's GPU after the slot is given to the next job.
                self._kill_group(child, signal.SIGKILL)
            if child.done is None or child.stop_reason is not None:
                # The runner did not end the job itself (killed, crashed): find its processes by token.
                kill_all(processes_with(RUN_TOKEN, child.token))
            final = self._record_ending(child, code)
            with self._lock:
                del self.children[job_id]  # only once recorded: a database error retries the step
            self._after_runner(child.lane, child.runner, again, child.job.kind)
            if final is not None and child.job.hooks:
                run_hooks(self.queue, child.job.id, final)
            changed = True
        reap_hooks()
        return changed

    def _after_runner(self, slot_name: str, runner: RunnerProc, again: bool, kind: str) -> None:
        """A runner that may take another job becomes the slot's spare (if it has none), with what
        its job imported counted among what it holds."""
        if again and not self.stopping and slot_name not in self.spares:
            runner.job_id = None
            runner.modules = tuple(dict.fromkeys([*runner.modules, *_kind_modules(kind)]))
            self.spares[slot_name] = runner
            return
        runner.release()
        if runner.proc.poll() is None and not again:
            try:
                runner.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                _kill_runner(runner)

    def _keep_spares(self) -> None:
        """One idle runner per slot, its imports done and the database open before the next claim.
        A slot whose job's kind is reusable needs none: that job's runner comes back as the spare."""
        from ..store.engine import without_password

        for slot in self.slots:
            child = next((c for c in self.children.values() if c.lane == slot.name), None)
            if child is not None and _reusable(child.job.kind) and child.stop_reason is None \
                    and self._runner_covers_next(child):
                continue
            spare = self.spares.get(slot.name)
            if spare is not None:
                spare.messages()  # notices `ready`, or that it died
                if spare.alive():
                    continue
                log.warning("spare runner %d on %s ended on its own (exit %s); starting another", spare.pid,
                            slot.name, spare.proc.poll())
                spare.release()
            try:
                spare = start_runner(self._runner_env(slot), self._preload())
                self.spares[slot.name] = spare
                spare.open_database(*without_password(self.queue.url))
            except OSError as exc:
                log.warning("cannot start a spare runner on %s: %s", slot.name, exc)
                self.spares.pop(slot.name, None)

    def _runner_covers_next(self, child: Child) -> bool:
        """Whether the runner of a reusable job already holds what the queue's next jobs import, so
        that it can take the next job itself and the slot needs no spare. A baseline's runner does
        not hold the torch a fine-tune after it needs: without a spare importing it meanwhile, that
        fine-tune would pay the imports."""
        held = {*child.runner.modules, *_kind_modules(child.job.kind)}  # its job imports its own
        return set(self._preload(max_age_s=NEXT_IMPORTS_FRESH_S)) <= held

    def _preload(self, max_age_s: float = 0.0) -> tuple[str, ...]:
        """What the queue's next jobs' kinds import (torch and transformers for the ML kinds), and
        the kinds' own modules (a fine-tune's params model alone takes tens of ms to build); a
        reading up to `max_age_s` old will do."""
        now = time.monotonic()
        if self.next_imports is None or now - self.next_imports[0] > max_age_s:
            modules: dict[str, None] = {}
            for name in self.queue.upcoming_kinds(limit=10):
                modules.update(dict.fromkeys(_kind_modules(name)))
            self.next_imports = (now, tuple(modules))
        return self.next_imports[1]

    def _record_ending(self, child: Child, code: int) -> str | None:
        """Record how the child ended; returns the job's final state (None: queued again, or no
        longer this worker's)."""
        # Why we stopped it comes first: a job that honours a timeout or cancel by raising
        # Preempted (exit 75) has still timed out or been cancelled, not been preempted.
        job, reason = child.job, child.stop_reason
        if reason == "lease_lost":
            log.warning("%s: lease lost; another worker owns it now", job.label)
            return None
        if code == 0:
            if self.queue.succeed(job.id, self.worker_id):
                log.info("%s succeeded", job.label)
                return SUCCEEDED
            log.warning("%s finished, but the job is no longer this worker's (cancelled or requeued "
                        "meanwhile); its result is not recorded", job.label)
            return None
        if reason == "lease_expiring":
            # Stopped for want of the database, not for anything the job did: no attempt spent.
            if self.queue.preempt(job.id, self.worker_id, message=(
                    "preempted: its worker could not reach the database to renew the lease, and stopped it "
                    "before the lease ran out")):
                log.info("%s queued again after the database outage (attempt not counted)", job.label)
            else:
                log.warning("%s: another worker has it now (its lease ran out during the outage)", job.label)
            return None
        if reason == "cancel":
            done = self.queue.finish_cancel(job.id, self.worker_id, exit_code=code)
            log.info("%s cancelled", job.label)
            return CANCELLED if done else None
        if reason == "timeout":
            return self._fail(job, KILLED, f"timed out after {job.timeout_s:g}s", code)
        if code == CUDA_UNUSABLE_EXIT and child.placement is not None:
            self._stop_gpu_jobs(child)
            code = INPUT_ERROR_EXIT
        if code == GPU_OOM_EXIT and child.placement is not None and child.placement.share_mib is not None:
            self.queue.requeue_exclusive(job.id, self.worker_id, message=(
                f"out of GPU memory beside other jobs ({fmt_mib(child.placement.share_mib)} share on "
                f"{child.placement.slot}): queued again for a whole GPU, attempt not counted"))
            log.warning("%s ran out of GPU memory on a shared GPU; queued again for a whole GPU", job.label)
            return None
        if reason in ("shutdown", "preempt") or code == PREEMPTED_EXIT:
            self.queue.preempt(job.id, self.worker_id, message=_preempt_message(reason))
            log.info("%s preempted; queued again", job.label)
            return None
        if code < 0:
            return self._fail(job, KILLED, f"killed by signal {signal.Signals(-code).name}", code)
        # A wrong input (missing file, bad label, unknown model) fails the same way every time.
        return self._fail(job, FAILED, self._error_message(job, code), code, permanent=code == INPUT_ERROR_EXIT)

    def _stop_gpu_jobs(self, child: Child) -> None:
        """CUDA failed to start for a job on this worker's GPUs (a driver too old for torch's CUDA,
        a broken install): every GPU job here would fail the same way, or, worse, train on the CPU
        while holding a GPU. This worker takes no more GPU jobs (other workers may); its CPU slots go on."""
        reason = self._error_message(child.job, CUDA_UNUSABLE_EXIT)
        if self.gpu_fault is None:
            log.error("CUDA is not usable on this worker (%s): it takes no more GPU jobs until restarted; "
                      "CPU slots go on", reason)
        self.gpu_fault = reason
        self._publish_reservation(None)  # it keeps no GPUs for a job it will not start

    def _fail(self, job: ClaimedJob, kind: str, message: str, code: int | None,
              permanent: bool = False) -> str | None:
        status = self.queue.fail(job.id, self.worker_id, kind=kind, message=message, exit_code=code,
                                 permanent=permanent)
        if status == QUEUED:
            log.warning("%s %s (attempt %d of %d), will retry: %s", job.label, kind, job.attempts,
                        job.max_attempts, message)
            return None
        why = " (an input error: not retried)" if permanent and job.attempts < job.max_attempts else ""
        log.error("%s %s%s: %s", job.label, kind, why, message)
        return status

    def _error_message(self, job: ClaimedJob, code: int) -> str:
        """The reason its runner reported (database first: the run folder may be gone)."""
        return self.queue.child_error(job.id) or _error_file_message(job) or \
            f"exited with code {code} (see {job.log_path})"

    def _renew_leases(self, now: float, *, force: bool = False) -> None:
        if force or now - self.last_worker_heartbeat >= self.options.heartbeat_s:
            self.last_worker_heartbeat = now
            # Idle workers heartbeat too, so `sched status` can show them and their GPUs.
            self.queue.worker_heartbeat(self.worker_id, gpu_stats=self._gpu_stats(), problem=self.problem)
            self._cap_logs()
        for child in list(self.children.values()):
            if not force and now - child.last_heartbeat < self.options.heartbeat_s:
                continue
            child.last_heartbeat = now
            sent = time.monotonic()  # the database set the lease from its clock after this moment
            reply = self.queue.heartbeat(child.job.id, self.worker_id, lease_s=self.options.lease_s)
            if not reply.lease_held:
                self._signal(child, "lease_lost", now, signal.SIGKILL)
                continue
            child.renewed_at = sent
            if reply.cancel_requested and child.stop_reason != "cancel":
                self._signal(child, "cancel", now)

    def _gpu_stats(self) -> list[dict] | None:
        """NVML's readings of this worker's GPUs for `sched status`, each marked when another
        program holds it (no sched job there, memory used beyond the headroom) or when CUDA failed here."""
        readings = gpu_readings([slot.gpu for slot in self._gpu_slots()])
        if readings is None and self.gpu_fault is not None:  # no NVML: still say why no GPU job runs
            readings = [{"gpu": slot.gpu} for slot in self._gpu_slots()]
        if readings is None:
            return None
        held = {i for c in self.children.values() if c.placement is not None for i in c.placement.gpus}
        for reading in readings:
            if "lost" in reading:
                continue
            if reading["gpu"] not in held and reading.get("mem_used", 0) > self.options.gpu_headroom_mib:
                reading["outside"] = True
            if self.gpu_fault is not None:
                reading["fault"] = self.gpu_fault
        return readings

    def _guard_leases(self, now: float) -> None:
        """A job whose lease this worker has not renewed (the database unreachable or too slow) is
        stopped, and killed before the lease runs out: another worker's reaper may then run it
        again, and two copies must never run. The time left is counted from the moment the last
        renewal that succeeded was sent, on this host's monotonic clock, so it errs early."""
        lease = self.options.lease_s
        margin = min(1.0, lease / 10)
        for child in self.children.values():
            if child.stop_reason in ("lease_lost", "lease_expiring") or child.done is not None:
                continue
            dead_by = child.renewed_at + lease - margin
            if now < dead_by - min(self.options.stop_grace_s, lease / 2):
                continue
            log.warning("%s: lease not renewed for %.1fs (the database is unreachable); stopping it before the "
                        "lease runs out, so no other worker runs it twice", child.job.label, now - child.renewed_at)
            self._signal(child, "lease_expiring", now)
            child.kill_at = dead_by

    def _enforce_limits(self, now: float) -> None:
        for child in self.children.values():
            timeout = child.job.timeout_s
            if timeout and child.stop_reason is None and now - child.started > timeout:
                self._signal(child, "timeout", now)
            grace_over = child.term_sent_at is not None and now - child.term_sent_at > self.options.stop_grace_s
            if (grace_over or (child.kill_at is not None and now >= child.kill_at)) and not child.killed:
                self._kill_group(child, signal.SIGKILL)
                kill_all(processes_with(RUN_TOKEN, child.token))  # whatever left its process group
                child.killed = True

    def _stop_children(self, now: float) -> None:
        for child in self.children.values():
            if child.stop_reason is None:
                self._signal(child, "shutdown", now)

    def _signal(self, child: Child, reason: str, now: float, sig: int = signal.SIGTERM) -> None:
        """Stop a child's whole process group (the job and anything it started).

        SIGUSR1 is a polite request to the job alone (its runner sets `should_stop`); programs the
        job started would die of it. Whatever is still alive after the grace period gets SIGKILL.
        """
        child.stop_reason = reason
        child.term_sent_at = now
        if sig == signal.SIGUSR1:
            try:
                os.kill(child.proc.pid, sig)
            except ProcessLookupError:
                pass
        else:
            self._kill_group(child, sig)
        child.killed = sig == signal.SIGKILL

    @staticmethod
    def _kill_group(child: Child, sig: int) -> None:
        try:
            os.killpg(child.proc.pid, sig)
        except ProcessLookupError:
            pass

    def _preempt_for_waiting_jobs(self, now: float) -> None:
        """Ask one preemptible job to stop when a higher-priority job waits for its place.

        The job sees `ctx.should_stop()` (SIGUSR1), ends as preempted and is queued again; the
        next claim takes the waiting job. Checked once per heartbeat interval: on the CPU slots
        when none is free, on the GPUs when the reserved job would fit without such jobs.
        """
        if now - self.last_preempt_check < self.options.heartbeat_s:
            return
        self.last_preempt_check = now
        victim = self._gpu_victim() or self._cpu_victim()
        if victim is not None:
            child, waiting = victim
            log.info("%s: asking it to yield %s to a job of %s", child.job.label, child.lane, rank_text(waiting))
            self._signal(child, "preempt", now, signal.SIGUSR1)

    def _yielding(self, child: Child, priority: int) -> bool:
        return child.job.preemptible and child.stop_reason is None and child.job.rank < priority

    def _cpu_victim(self) -> tuple[Child, int] | None:
        cpu_slots = {slot.name for slot in self._cpu_slots()}
        on_cpu = [c for c in self.children.values() if c.lane in cpu_slots and c.placement is None]
        if not on_cpu or len(on_cpu) < len(cpu_slots):
            return None  # a free CPU slot could take the waiting job; the claim found nothing for it
        waiting = self.queue.top_waiting_rank(0)
        if waiting is None:
            return None
        victims = sorted((c for c in on_cpu if self._yielding(c, waiting)), key=lambda c: c.job.rank)
        return (victims[0], waiting) if victims else None

    def _gpu_victim(self) -> tuple[Child, int] | None:
        """The lowest-priority preemptible GPU job to stop, when the reserved job would fit once
        every such job below its priority were gone."""
        held = self.reservation
        if held is None or not held.by_preemption or held.by_leaving:
            return None  # no preemption helps, or the jobs already stopping make room enough
        victims = [c for c in self.children.values() if c.placement is not None and self._yielding(c, held.priority)]
        on_kept = [c for c in victims if set(c.placement.gpus) & set(held.gpus)]
        victims = on_kept or victims  # the GPUs it keeps are the ones it will run on
        if not victims:
            return None
        return min(victims, key=lambda c: c.job.rank), held.priority

    # ---- claiming -----------------------------------------------------------------------------

    def _claim_for_free_slots(self, now: float) -> bool:
        started = self._claim_for_cpu_slots(now)
        if self._gpu_slots() and not self._max_jobs_reached() and self.gpu_fault is None:
            started |= self._claim_on_gpus(now)
        return started

    def _claim_for_cpu_slots(self, now: float) -> bool:
        started = False
        busy = {c.lane for c in self.children.values() if c.placement is None}
        for slot in self._cpu_slots():
            if slot.name in busy or self._max_jobs_reached():
                continue
            job = self.queue.claim(self.worker_id, slot.name, 0, lease_s=self.options.lease_s,
                                   runs_root=self.options.runs_root)
            if job is None:
                break  # nothing runnable now; the other free slots would find nothing either
            started |= self._start(job, slot, None, now)
        return started

    def _claim_on_gpus(self, now: float) -> bool:
        """One claim pass over this worker's GPUs (scheduler/execute/placement.py)."""
        # A pass even when every GPU is busy: it renews the reservation (for `sched status` and
        # for preemption) from the queue as it is now.
        claim_pass = ClaimPass(self._gpus_now(list(self.children.values())), self.options.gpu_headroom_mib,
                               self.options.gpu_context_mib)
        limit = GPU_CANDIDATES_LIMIT
        if self.options.max_jobs is not None:
            limit = min(limit, self.options.max_jobs - self.claimed)
        claimed = self.queue.claim_on_gpus(self.worker_id, claim_pass, lease_s=self.options.lease_s,
                                           runs_root=self.options.runs_root, limit=limit)
        self._publish_reservation(claim_pass.reservation)
        by_index = {slot.gpu: slot for slot in self._gpu_slots()}
        started = False
        for job, placement in claimed:
            started |= self._start(job, by_index[placement.gpus[0]], placement, now)
        return started

    def _gpus_now(self, children: list[Child]) -> list[Gpu]:
        """This worker's GPUs: memory from the inventory, and what these children hold on them."""
        indices = [slot.gpu for slot in self._gpu_slots()]
        read = {gpu.index: gpu for gpu in self.inventory(indices)}
        gpus = {i: read.get(i) or Gpu(i, None) for i in indices}  # no reading: known only as whole
        for child in children:
            if child.placement is None:
                continue
            for index in child.placement.gpus:
                gpus[index].held.append(Held(child.placement.share_mib, child.job.rank, child.job.preemptible,
                                             leaving=child.stop_reason is not None))
        return [gpus[i] for i in indices]

    def _publish_reservation(self, reservation: Reservation | None) -> None:
        """Say in the database (for `sched status`) and once in the log which job the free GPUs wait for."""
        def shown(held: Reservation | None) -> dict | None:
            return held.as_json() if held is not None and held.gpus else None

        before, self.reservation = self.reservation, reservation
        if shown(before) == shown(reservation):
            return
        self.queue.set_reservation(self.worker_id, shown(reservation))
        if shown(reservation) is not None:
            log.info("reserving %s for %s #%d (%s, needs %d GPU(s)): lower-priority jobs do not "
                     "start there", ", ".join(f"gpu{i}" for i in reservation.gpus), reservation.name,
                     reservation.job_id, rank_text(reservation.priority), reservation.needs)

    def _start(self, job: ClaimedJob, slot: Slot, placement: Placement | None, now: float) -> bool:
        """Hand a claimed job to a runner; False when it could not start (recorded as failed)."""
        self.claimed += 1
        try:
            runner, warm = self._spawn(job, slot, placement)
        except UnsafeRunFolder as exc:
            self._fail(job, FAILED, f"could not start the job: {exc}", None, permanent=True)
            return False
        except OSError as exc:
            if exc.errno in RUNS_FOLDER_ERRORS:  # the machine's fault, not the job's: put it back
                self.claimed -= 1
                self._runs_folder_failed(job, exc)
                return False
            self._fail(job, FAILED, f"could not start the job: {exc}", None)
            return False
        with self._lock:
            self.children[job.id] = Child(job, runner, now, now, token=self._run_token(job), lane=slot.name,
                                          placement=placement, renewed_at=now)
        where = slot.name if placement is None else placement.slot + (
            f" ({fmt_mib(placement.share_mib)} share)" if placement.share_mib is not None else "")
        log.info("%s started on %s (attempt %d of %d, %s runner)", job.call, where, job.attempts,
                 job.max_attempts, "warm" if warm else "new")
        return True

    def _runs_folder_failed(self, job: ClaimedJob, exc: OSError) -> None:
        """Starting a job failed on the runs folder (full, read-only, not ours): the job goes back
        without spending an attempt and the worker claims nothing until the folder works again."""
        self.queue.preempt(job.id, self.worker_id, message=f"put back: its worker could not start it ({exc})")
        self._set_problem(self._runs_problem(exc))

    def _runs_problem(self, exc: OSError | None = None) -> str | None:
        """Why the runs folder cannot take a job now (None: it can)."""
        root = Path(self.options.runs_root)
        try:
            root.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(root).free
        except OSError as error:
            return f"{root}/ cannot be used ({error.strerror or error})"
        if exc is not None and exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
            return f"{root}/ is not writable ({exc.strerror})"
        if (exc is not None and exc.errno in (errno.ENOSPC, errno.EDQUOT)) or free < self.options.min_free_mib * 2**20:
            return f"{root}/ is full ({free:,} bytes free; a job starts with at least {self.options.min_free_mib} MiB)"
        return None

    def _can_claim(self, now: float) -> bool:
        """Whether this worker may claim now: its runs folder has room and its database file is the
        one it started with. A problem is logged and shown in `sched status` until it clears (a
        replaced database file does not clear: the worker must be restarted)."""
        if self.problem is not None and self.problem.startswith(DB_FILE_PROBLEM):
            return False
        problem = self._database_file_problem() or self._runs_problem()
        if problem != self.problem:
            if problem is None:
                log.warning("claiming again (it was: %s)", self.problem)
            else:
                log.error("not claiming: %s", problem)
            self._set_problem(problem)
        return problem is None

    def _set_problem(self, problem: str | None) -> None:
        if problem == self.problem:
            return
        self.problem = problem
        self.queue.worker_heartbeat(self.worker_id, problem=problem)

    def _database_file_problem(self) -> str | None:
        """A SQLite database file deleted or replaced under a running worker: new submits go to the
        new file, which this worker does not read, so it must not go on running the old queue."""
        if self.db_file is None:
            return None
        if _file_identity(self.queue.url) != self.db_file:
            return (f"{DB_FILE_PROBLEM} {self.queue.url.removeprefix('sqlite:///')} was deleted or replaced; "
                    "restart the worker to work on the new one")
        return None

    def _cap_logs(self) -> None:
        """Each running job's log keeps at most max_log_mib: its head and its tail, with a marker."""
        limit = self.options.max_log_mib * 2**20
        for child in list(self.children.values()):
            try:
                cap_log(child.job.log_path, limit)
            except OSError as exc:
                log.warning("%s: cannot cap its log (%s)", child.job.label, exc)

    def _device_names(self) -> dict[int, str]:
        """How a job's CUDA_VISIBLE_DEVICES names each GPU: as the worker's allocation does."""
        return {slot.gpu: slot.device_name for slot in self._gpu_slots()}

    def _run_token(self, job: ClaimedJob) -> str:
        return f"{self.token}-{job.id}-{job.attempts}"

    def _runner_env(self, slot: Slot) -> dict[str, str]:
        """A runner's environment before any job: the slot's (its GPU, its CPU threads)."""
        from ..store.engine import without_password

        env = {**os.environ, **slot.child_env(slot.gpus), "PYTHONUNBUFFERED": "1"}
        env.pop(RUN_TOKEN, None)
        if env.get("SCHED_DB"):  # a password in the worker's own SCHED_DB reaches runners only by their stdin
            env["SCHED_DB"] = without_password(env["SCHED_DB"])[0]
        return env

    def _take_runner(self, slot: Slot, gpu_job: bool) -> tuple[RunnerProc, bool]:
        """The slot's spare when it is alive (a GPU job may take any GPU slot's: its devices are set
        when it is handed over, and spares never start CUDA), else a new runner; (runner, warm)."""
        names = [slot.name] + ([s.name for s in self._gpu_slots() if s.name != slot.name] if gpu_job else [])
        for name in names:
            spare = self.spares.pop(name, None)
            if spare is None:
                continue
            spare.messages()
            if spare.alive():
                return spare, True
            spare.release()
        return start_runner(self._runner_env(slot)), False

    def _spawn(self, job: ClaimedJob, slot: Slot, placement: Placement | None) -> tuple[RunnerProc, bool]:
        """Hand a claimed job to a runner; (runner, whether it was warm)."""
        from ..store.engine import without_password

        claimed_at = time.time()  # just after the claim: where a start-up profile begins
        make_run_folder(Path(self.options.runs_root), Path(job.output_dir))
        runner, warm = self._take_runner(slot, placement is not None)
        where = slot.name if placement is None else placement.slot
        # Before the runner writes there; never through a link planted in the run folder.
        fd = os.open(job.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        with open(fd, "a", encoding="utf-8") as log_file:
            log_file.write(header(job, where, socket.gethostname(), warm=warm,
                                  when=time.strftime("%Y-%m-%d %H:%M:%S")))
        # The job's environment gets the database URL without its password (programs print their
        # environment, crash reports copy it); the runner gets the password through its stdin.
        url, password = without_password(self.queue.url)
        devices = slot.child_env(0) if placement is None else placement_env(
            placement.gpus, placement.share_mib, self._device_names(), self.options.gpu_context_mib)
        env = {**devices, "SCHED_DB": url, RUN_TOKEN: self._run_token(job),
               "SCHED_STOP_GRACE_S": f"{self.options.stop_grace_s:g}"}
        try:
            runner.hand(job, env, password, reuse=self.options.warm, claimed_at=claimed_at)
        except OSError:  # the runner died just now: a new one
            runner.release()
            _kill_runner(runner)
            runner, warm = start_runner(self._runner_env(slot)), False
            runner.hand(job, env, password, reuse=self.options.warm, claimed_at=claimed_at)
        return runner, warm


DB_FILE_PROBLEM = "its database file"
GUARD_S = 0.2  # how often the guard thread enforces stops, grace periods, timeouts and leases
# Starting a job failed because of the runs folder, not the job: full, read-only, no permission.
RUNS_FOLDER_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EPERM)


class UnsafeRunFolder(Exception):
    """A run folder (or a folder above it, under the runs root) is a symbolic link or not a folder."""


def make_run_folder(root: Path, folder: Path) -> None:
    """Create `folder` under `root` one level at a time, never following a link: a link planted in
    runs/ would otherwise take the job's log and files wherever it points."""
    import stat

    root.mkdir(parents=True, exist_ok=True)
    try:
        parts = folder.relative_to(root).parts
    except ValueError:
        parts = None
    if parts is None:  # a run folder outside the runs root (an older row): plain creation
        folder.mkdir(parents=True, exist_ok=True)
        return
    current = root
    for part in parts:
        current = current / part
        try:
            os.mkdir(current)
        except FileExistsError:
            pass
        mode = os.lstat(current).st_mode
        if stat.S_ISLNK(mode) or not stat.S_ISDIR(mode):
            raise UnsafeRunFolder(f"{current} is a symbolic link or not a folder; remove it and retry the job")


def cap_log(path: str, limit: int) -> bool:
    """Keep a log under `limit` bytes: its first half-limit, a marker, and its last quarter-limit.
    The runner appends (O_APPEND), so its next writes land after the kept tail. True if cut."""
    size = os.stat(path).st_size
    if size <= limit:
        return False
    head, tail = limit // 2, limit // 4
    with open(path, "rb") as fh:
        fh.seek(size - tail)
        kept = fh.read(tail)
    marker = f"\n[... sched: {size - head - len(kept):,} bytes of this log left out (max_log_size) ...]\n".encode()
    os.truncate(path, head)
    with open(path, "ab") as fh:
        fh.write(marker + kept)
    return True


def _file_identity(url: str | None) -> tuple[int, int] | None:
    """(device, inode) of a SQLite database file; None for other databases, or when it is missing."""
    from ..store.engine import sqlite_path

    try:
        path = sqlite_path(url) if url else None
    except Exception:  # noqa: BLE001 - not a URL we can read a file from
        return None
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return (-1, -1)  # missing: differs from any identity taken at start
    return st.st_dev, st.st_ino


def _host_label() -> str:
    """This host, and the Slurm job the worker runs in with its end time (`sched status` shows
    the time left): `node7 (slurm job 1234 until 2026-12-04T18:00:00)`."""
    from .slurm import slurm_job_end, slurm_job_here

    host, job = socket.gethostname(), slurm_job_here()
    if job is None:
        return host
    end = slurm_job_end(job)
    return f"{host} (slurm job {job}" + (f" until {end})" if end else ")")


def _ending(child: Child) -> int | None:
    """The job's exit code once its runner reported it (or exited without reporting), else None."""
    for message in child.runner.messages():
        if "done" in message and message["done"] == child.job.id:
            child.done = (int(message["exit"]), bool(message.get("again")))
    if child.done is not None:
        return child.done[0]
    code = child.runner.proc.poll()
    if code is None:
        return None
    for message in child.runner.messages():  # it may have reported just before it exited
        if "done" in message and message["done"] == child.job.id:
            child.done = (int(message["exit"]), bool(message.get("again")))
    return child.done[0] if child.done is not None else code


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _kind_modules(name: str) -> list[str]:
    """What a kind's jobs import: its preloads, then its own module (a kind's run() may be any
    callable); nothing for a kind this worker does not know."""
    from jobs.registry import known_kind

    kind = known_kind(name)
    if kind is None:
        return []
    return [*kind.preload, getattr(kind.run, "__module__", None) or "jobs"]


def _reusable(kind: str) -> bool:
    from jobs.registry import known_kind

    found = known_kind(kind)
    return found is not None and found.reusable


def _kill_runner(runner: RunnerProc) -> None:
    try:
        os.killpg(runner.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        runner.proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _preempt_message(reason: str | None) -> str:
    if reason == "shutdown":
        return "preempted: its worker was stopped (SIGTERM/SIGINT)"
    return "preempted: stopped on request so a higher-priority job could run"


def _error_file_message(job: ClaimedJob) -> str | None:
    try:
        return json.loads((Path(job.output_dir) / ERROR_FILE).read_text())["message"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _tables_missing(exc: SQLAlchemyError) -> bool:
    """The error says the queue's tables do not exist (PostgreSQL: UndefinedTable; SQLite)."""
    text = str(exc)
    return "sched_" in text and ("does not exist" in text or "no such table" in text)

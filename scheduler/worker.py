"""The worker loop: one slot per GPU, one child process per job, the parent owns the database.

`run_once()` is one step (reap finished children, renew leases, enforce timeouts and cancels,
claim for free slots); `run()` repeats it. Tests drive `run_once` directly instead of sleeping.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from jobs.proc import kill_all, processes_with

from .fmt import visible
from .hooks import reap as reap_hooks
from .hooks import run_hooks
from .jobqueue import DEFAULT_LEASE_S, ClaimedJob, JobQueue
from .runner import ERROR_FILE, INPUT_ERROR_EXIT, PREEMPTED_EXIT
from .slots import Slot, gpu_readings
from .store.states import CANCELLED, FAILED, KILLED, QUEUED, RUNNING, SUCCEEDED, WorkerState

RUN_TOKEN = "SCHED_RUN_TOKEN"  # in every job process's environment: finds what a dead runner left
PASSWORD_FD = "SCHED_DB_PASSWORD_FD"  # the runner reads the database password from this pipe

log = logging.getLogger("sched.worker")


@dataclass
class Child:
    """A job running in a child process on one slot."""

    job: ClaimedJob
    proc: subprocess.Popen
    started: float
    last_heartbeat: float
    stop_reason: str | None = None  # why we signalled it: cancel, timeout, shutdown, lease_lost
    term_sent_at: float | None = None
    killed: bool = False
    token: str = ""  # RUN_TOKEN of this attempt's processes


@dataclass
class WorkerOptions:
    runs_root: Path = Path("runs")
    lease_s: float = DEFAULT_LEASE_S
    heartbeat_s: float = 10.0  # renew leases this often; keep well under lease_s
    poll_s: float = 0.5  # idle wait between steps in run()
    stop_grace_s: float = 10.0  # SIGTERM, then SIGKILL after this long
    reaper_s: float = 15.0  # how often run() requeues jobs whose lease expired
    max_jobs: int | None = None  # stop claiming after this many jobs


@dataclass
class WorkerLoop:
    queue: JobQueue
    slots: list[Slot]
    options: WorkerOptions = field(default_factory=WorkerOptions)
    worker_id: int | None = None
    children: dict[str, Child] = field(default_factory=dict)  # slot name -> child
    claimed: int = 0
    stopping: bool = False
    last_worker_heartbeat: float = float("-inf")
    last_preempt_check: float = float("-inf")
    database_was_down: bool = False  # the next step renews every lease before anything else
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:12])  # this worker's part of RUN_TOKEN

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> int:
        if self.worker_id is None:
            self.worker_id = self.queue.register_worker(socket.gethostname(), os.getpid(),
                                                        [s.name for s in self.slots])
            log.info("worker %s started on %s with slots %s", self.worker_id, socket.gethostname(),
                     ", ".join(s.name for s in self.slots))
        return self.worker_id

    def request_stop(self, *_args) -> None:
        """Stop claiming; ask running jobs to stop; they are queued again as preempted."""
        if not self.stopping:
            log.warning("stopping: asking %d running job(s) to stop", len(self.children))
        self.stopping = True

    def run(self, *, until_empty: bool = False) -> None:
        """Run steps until stopped (SIGTERM/SIGINT), or until nothing is left when `until_empty`."""
        from .reaper import start_reaper

        self.start()
        # Signals reach the main thread only; a loop run elsewhere (an embedding program) is stopped
        # with request_stop().
        main = threading.current_thread() is threading.main_thread()
        previous = {sig: signal.signal(sig, self.request_stop) for sig in (signal.SIGTERM, signal.SIGINT)} \
            if main else {}
        reaper = start_reaper(self.queue, self.options.reaper_s, worker_id=self.worker_id,
                              lease_s=self.options.lease_s)
        failures = 0
        try:
            while True:
                if self.stopping and not self.children:
                    break
                try:
                    busy = self.run_once()
                    if until_empty and not self.children and not busy and self._nothing_left():
                        break
                    failures = 0
                except SQLAlchemyError as exc:
                    failures += 1
                    time.sleep(self._after_database_error(exc, failures))
                    continue
                if not busy:
                    time.sleep(self.options.poll_s)
        finally:
            for child in self.children.values():  # only after an unexpected error: leave nothing behind
                self._kill_group(child, signal.SIGKILL)
                kill_all(processes_with(RUN_TOKEN, child.token))
            reaper.shutdown(wait=False)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.queue.worker_heartbeat(self.worker_id, state=WorkerState.STOPPED.value)
            log.info("worker %s stopped after %d job(s)", self.worker_id, self.claimed)

    def _after_database_error(self, exc: SQLAlchemyError, failures: int) -> float:
        """The database is unreachable, locked, or lost its tables: keep the jobs running and try
        again soon. The wait stays well under the lease (at most half a heartbeat interval), and
        the first step that reaches the database renews every lease before anything else, so an
        outage longer than the lease does not cost this worker its jobs."""
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
        from .store.migrate import ensure_schema

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
        if self.queue.status_counts().get(RUNNING):
            return False
        return self.queue.top_waiting_priority(max(slot.gpus for slot in self.slots)) is None

    def _max_jobs_reached(self) -> bool:
        return self.options.max_jobs is not None and self.claimed >= self.options.max_jobs

    # ---- one step -----------------------------------------------------------------------------

    def run_once(self, now: float | None = None) -> bool:
        """One step of the loop. Returns True when something happened (a job started or ended)."""
        now = time.monotonic() if now is None else now
        self.start()
        if self.database_was_down:  # back after an outage: renew every lease before anything else
            self._renew_leases(now, force=True)
            self.database_was_down = False
        changed = self._reap_finished()
        self._renew_leases(now)
        self._enforce_limits(now)
        if self.stopping:
            self._stop_children(now)
        elif not self._max_jobs_reached():
            changed |= self._claim_for_free_slots(now)
            if not changed:
                self._preempt_for_waiting_jobs(now)
        return changed

    def _reap_finished(self) -> bool:
        changed = False
        for slot_name, child in list(self.children.items()):
            code = child.proc.poll()
            if code is None:
                continue
            # Whatever the job left running (a server, `cmd &`, a daemon of a runner that died
            # abruptly) would hold the slot's GPU after the slot is given to the next job.
            self._kill_group(child, signal.SIGKILL)
            kill_all(processes_with(RUN_TOKEN, child.token))
            final = self._record_ending(child, code)
            del self.children[slot_name]  # only once recorded: a database error retries the step
            if final is not None:
                run_hooks(self.queue, child.job.id, final)
            changed = True
        reap_hooks()
        return changed

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
        if reason == "cancel":
            done = self.queue.finish_cancel(job.id, self.worker_id, exit_code=code)
            log.info("%s cancelled", job.label)
            return CANCELLED if done else None
        if reason == "timeout":
            return self._fail(job, KILLED, f"timed out after {job.timeout_s:g}s", code)
        if reason in ("shutdown", "preempt") or code == PREEMPTED_EXIT:
            self.queue.preempt(job.id, self.worker_id, message=_preempt_message(reason))
            log.info("%s preempted; queued again", job.label)
            return None
        if code < 0:
            return self._fail(job, KILLED, f"killed by signal {signal.Signals(-code).name}", code)
        # A wrong input (missing file, bad label, unknown model) fails the same way every time.
        return self._fail(job, FAILED, self._error_message(job, code), code, permanent=code == INPUT_ERROR_EXIT)

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
            gpus = [slot.gpu for slot in self.slots if slot.gpu is not None]
            self.queue.worker_heartbeat(self.worker_id, gpu_stats=gpu_readings(gpus))
        for child in self.children.values():
            if not force and now - child.last_heartbeat < self.options.heartbeat_s:
                continue
            child.last_heartbeat = now
            reply = self.queue.heartbeat(child.job.id, self.worker_id, lease_s=self.options.lease_s)
            if not reply.lease_held:
                self._signal(child, "lease_lost", now, signal.SIGKILL)
            elif reply.cancel_requested and child.stop_reason != "cancel":
                self._signal(child, "cancel", now)

    def _enforce_limits(self, now: float) -> None:
        for child in self.children.values():
            timeout = child.job.timeout_s
            if timeout and child.stop_reason is None and now - child.started > timeout:
                self._signal(child, "timeout", now)
            if child.term_sent_at is not None and not child.killed \
                    and now - child.term_sent_at > self.options.stop_grace_s:
                self._kill_group(child, signal.SIGKILL)
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
        """Ask one preemptible job to stop when a higher-priority job waits and no slot is free.

        The job sees `ctx.should_stop()` (SIGUSR1), ends as preempted and is queued again; the
        next claim on its slot takes the waiting job. Checked once per heartbeat interval.
        """
        if now - self.last_preempt_check < self.options.heartbeat_s:
            return
        self.last_preempt_check = now
        free_gpus = [slot.gpus for slot in self.slots if slot.name not in self.children]
        backfill = sorted(((slot, child) for slot in self.slots
                           if (child := self.children.get(slot.name)) is not None
                           and child.job.preemptible and child.stop_reason is None),
                          key=lambda pair: pair[1].job.priority)
        for slot, child in backfill:
            if any(gpus >= slot.gpus for gpus in free_gpus):
                continue  # a free slot could take the waiting job; the claim found nothing for it
            waiting = self.queue.top_waiting_priority(slot.gpus)
            if waiting is not None and waiting > child.job.priority:
                log.info("%s: asking it to yield %s to a job of priority %d", child.job.label, slot.name, waiting)
                self._signal(child, "preempt", now, signal.SIGUSR1)
                return

    # ---- claiming -----------------------------------------------------------------------------

    def _claim_for_free_slots(self, now: float) -> bool:
        started = False
        for slot in self.slots:
            if slot.name in self.children or self._max_jobs_reached():
                continue
            job = self.queue.claim(self.worker_id, slot.name, slot.gpus, lease_s=self.options.lease_s,
                                   runs_root=self.options.runs_root)
            if job is None:
                break  # nothing runnable now; the other free slots would find nothing either
            self.claimed += 1
            try:
                proc = self._spawn(job, slot)
            except OSError as exc:  # runs folder not writable, disk full, ...
                self._fail(job, FAILED, f"could not start the job: {exc}", None)
                continue
            self.children[slot.name] = Child(job, proc, now, now, token=self._run_token(job))
            log.info("%s started on %s (attempt %d of %d)", job.call, slot.name, job.attempts,
                     job.max_attempts)
            started = True
        return started

    def _run_token(self, job: ClaimedJob) -> str:
        return f"{self.token}-{job.id}-{job.attempts}"

    def _spawn(self, job: ClaimedJob, slot: Slot) -> subprocess.Popen:
        from .store.engine import without_password

        output_dir = Path(job.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        # The job's environment gets the database URL without its password (programs print their
        # environment, crash reports copy it); the runner reads the password from a pipe.
        url, password = without_password(self.queue.url)
        env = {**os.environ, **slot.child_env(job.gpus), "SCHED_DB": url, "PYTHONUNBUFFERED": "1",
               RUN_TOKEN: self._run_token(job)}
        env.pop(PASSWORD_FD, None)
        pass_fds: tuple[int, ...] = ()
        if password is not None:
            read_end, write_end = os.pipe()
            os.write(write_end, password.encode())
            os.close(write_end)
            env[PASSWORD_FD], pass_fds = str(read_end), (read_end,)
        try:
            with open(job.log_path, "a", encoding="utf-8") as log_file:
                log_file.write(f"=== {visible(job.call)} attempt {job.attempts}/{job.max_attempts} on "
                               f"{socket.gethostname()} {slot.name} at {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n")
                log_file.flush()
                # A new session makes the child a process-group leader: timeout, cancel and shutdown
                # signal the whole group, so programs the job started go too.
                return subprocess.Popen(
                    [sys.executable, "-m", "scheduler.runner", str(job.id), str(os.getpid())],
                    stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                    start_new_session=True, cwd=os.getcwd(), pass_fds=pass_fds,
                )
        finally:
            for fd in pass_fds:
                os.close(fd)


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

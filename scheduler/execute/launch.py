"""Runner processes seen from the worker: start one (as a slot's spare, before any job is claimed),
hand it a job, read what it reports. The protocol is in `scheduler.execute.runner`.

A spare imports what the next jobs need while the slot is still busy, so a claimed job starts at
once; a runner whose job's kind is reusable (shell and the other light kinds) takes the slot's
next job in the same process, so a queue of short jobs costs no interpreter start per job.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field

from ..fmt import visible


@dataclass
class RunnerProc:
    """One runner: idle (a spare), or running `job_id`."""

    proc: subprocess.Popen
    reports: int  # read end of the runner's report pipe (non-blocking)
    modules: tuple[str, ...] = ()  # what it holds: its preloads, and what the reusable jobs it ran imported
    job_id: int | None = None
    ready: bool = False
    closed: bool = False  # its report pipe reached end of file: it exited (or is exiting)
    _pending: bytes = field(default=b"", repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None and not self.closed

    def hand(self, job, env: dict[str, str], password: str | None, *, reuse: bool,
             claimed_at: float | None = None) -> None:
        """Give it a job (it reads its stdin whenever its imports are done). `claimed_at`: when the
        worker claimed it (wall clock), where a start-up profile begins (pipeline/startup.py)."""
        order = {"job": {"id": job.id, "name": job.name, "kind": job.kind, "params": job.params,
                         "attempts": job.attempts, "output_dir": job.output_dir, "group_name": job.group_name},
                 "log_path": job.log_path, "env": env, "password": password, "reuse": reuse,
                 "claimed_at": claimed_at}
        self.proc.stdin.write(json.dumps(order) + "\n")
        self.proc.stdin.flush()
        self.job_id = job.id

    def open_database(self, url: str, password: str | None) -> None:
        """Have a spare open the queue's database now, before a job is claimed (it does so once its
        imports are done): the job's first report then finds it open."""
        self.proc.stdin.write(json.dumps({"database": url, "password": password}) + "\n")
        self.proc.stdin.flush()

    def messages(self) -> list[dict]:
        """What it reported since the last call (never blocks)."""
        if self.closed:
            return []
        try:
            chunk = os.read(self.reports, 65536)
        except BlockingIOError:
            return []
        if not chunk:
            self.closed = True
        self._pending += chunk
        *lines, self._pending = self._pending.split(b"\n")
        found = [json.loads(line) for line in lines if line.strip()]
        self.ready = self.ready or any("ready" in m for m in found)
        return found

    def release(self) -> None:
        """No more jobs: close its stdin (it exits when idle); the report pipe is closed."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        if self.reports >= 0:
            os.close(self.reports)
            self.reports = -1
            self.closed = True


def start_runner(env: dict[str, str], modules: tuple[str, ...] = (), *, log=subprocess.DEVNULL) -> RunnerProc:
    """A runner in its own process group (stop signals reach everything it starts), importing
    `modules` before it waits for a job. Its output goes to `log` until a job's log takes over.

    It stays in the worker's session: Linux's autogroup shares the CPU equally between sessions
    whatever their threads' priorities, so a spare in a session of its own, importing torch while
    the slot's job trains on every core, would take a core from the job (its steps twice as slow
    on 2 cores, and far worse for OpenMP threads waiting on each other). In one session the spare's
    lower-priority import thread (runner.py) yields to the job instead."""
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scheduler.execute.runner", "--serve", str(os.getpid()), str(write_end), *modules],
            stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, env=env, text=True,
            process_group=0, cwd=os.getcwd(), pass_fds=(write_end,))
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    return RunnerProc(proc, read_end, tuple(modules))


def header(job, slot_name: str, host: str, warm: bool, when: str) -> str:
    """The line each attempt starts with in the job's log."""
    how = "warm runner" if warm else "new runner"
    return (f"=== {visible(job.call)} attempt {job.attempts}/{job.max_attempts} on {host} {slot_name} "
            f"at {when} ({how}) ===\n")

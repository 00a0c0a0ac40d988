"""A queue of N echo jobs drained by real daemons: `sched worker --until-empty` processes, or huey's consumer.

What each side does per job:
- sched: a `shell` job with params `{argv: [echo, I]}` (sched's cheapest real kind). A worker claims
  it (SQLite), gives it to a runner process (its slot's warm spare; `shell` runners are reused from
  job to job), which makes the job's run folder and log file and runs `echo I` as a child process
  writing to that log; the worker records the success (finished_at, the busy bucket).
- huey: a task `run_argv(["echo", I])` (bench/peers.py): a consumer thread dequeues it (SqliteHuey),
  runs `echo I` with subprocess.run (output to the consumer's log file) and stores the result.

Both queues are SQLite files in WAL mode with synchronous=NORMAL (huey's `--huey-sync default`:
its own FULL). Every job is submitted (sched: `JobQueue.submit` in batches; huey: one enqueue per
task, it has no batch) BEFORE the clock starts. The clock starts when the daemons are launched and
stops at the last completion each side recorded (sched: the largest `finished_at`; huey: the
largest finish time its tasks return), so the daemons' start-up is inside the window, as it is for
a user running `sched worker --until-empty`; the first completion is reported too, and the rate
after it ("steady").
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench import peers
from bench.benchlib import ROOT, sched_cmd
from bench.procs import Failed, finished_span, stop, wait_for

SUBMIT_CHUNK = 5000
TIMEOUT_S = 3600.0


@dataclass
class Drain:
    wall_s: float  # launch -> last completion
    first_s: float  # launch -> first completion
    jobs: int
    problems: str = ""  # sched: jobs that did not succeed exactly once; huey: tasks without a result

    @property
    def steady_rate(self) -> float:
        """Jobs per second after the first completion."""
        span = self.wall_s - self.first_s
        return (self.jobs - 1) / span if span > 0 else float("nan")


def sched_drain(workdir: Path, jobs: int, workers: int, slots: int, poll: float) -> Drain:
    """`workers` processes of `sched worker --gpus none --cpu-slots SLOTS --until-empty` drain `jobs` echo jobs."""
    from scheduler.jobqueue import JobQueue, JobSpec

    url = f"sqlite:///{workdir}/sched.db"
    queue = JobQueue(url)
    try:
        for start in range(0, jobs, SUBMIT_CHUNK):
            queue.submit([JobSpec(f"echo-{i}", "shell", {"argv": ["echo", str(i)]})
                          for i in range(start, min(jobs, start + SUBMIT_CHUNK))])
        logs = [workdir / f"worker-{k}.log" for k in range(workers)]
        argv = sched_cmd("--db", url, "worker", "--gpus", "none", "--cpu-slots", str(slots), "--until-empty",
                         "--runs", str(workdir / "runs"))
        outs = [open(log, "w") for log in logs]  # noqa: SIM115 - closed below
        t0 = time.time()
        procs = [subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
                 for out in outs]
        try:
            for proc, log in zip(procs, logs):
                wait_for(lambda proc=proc: proc.poll() is not None, TIMEOUT_S, poll, "sched worker --until-empty")
                if proc.returncode != 0:
                    raise Failed(f"sched worker exited with code {proc.returncode}:\n"
                                 f"{log.read_text(errors='replace')[-2000:]}")
        finally:
            for proc, out in zip(procs, outs):
                stop(proc, signal.SIGTERM)
                out.close()
        first, last = finished_span(queue)
        return Drain(last - t0, first - t0, jobs, _sched_problems(queue, jobs))
    finally:
        queue.dispose()


def _sched_problems(queue, jobs: int) -> str:
    """'' when every job succeeded after exactly one attempt, else what went wrong."""
    from sqlalchemy import func, select

    from scheduler.store.schema import jobs as table

    with queue.read() as conn:
        states = dict(conn.execute(select(table.c.status, func.count()).group_by(table.c.status)).all())
        attempts = conn.scalar(select(func.sum(table.c.attempts)))
    if states == {"succeeded": jobs} and attempts == jobs:
        return ""
    return f"states {states}, {attempts} attempts for {jobs} jobs"


def huey_drain(workdir: Path, jobs: int, threads: int, sync: str, delay: float, poll: float) -> Drain:
    """huey's consumer (one process, `threads` worker threads) drains `jobs` echo tasks."""
    path = str(workdir / "huey.db")
    huey = peers.make_huey(path, sync)
    results = [huey.run_argv(["echo", str(i)]) for i in range(jobs)]  # enqueued before the clock
    log = workdir / "consumer.log"
    argv = [sys.executable, "-m", "bench.peers", "consume", path, sync, str(threads), "thread", str(delay)]
    with open(log, "w") as out:
        t0 = time.time()
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_for(lambda: huey.storage.result_store_size() >= jobs, TIMEOUT_S, poll, "huey consumer", proc, log)
        finally:
            stop(proc, signal.SIGINT)  # huey's graceful shutdown
    try:
        finished = [r.get() for r in results]  # each task returns when it finished; an error raises
        problems = "" if len(finished) == jobs and None not in finished else "tasks without a result"
    except Exception as exc:  # noqa: BLE001 - a failed task: report it, do not crash the bench
        finished, problems = [t0], f"a task failed: {exc}"
    huey.storage.close()
    return Drain(max(finished) - t0, min(finished) - t0, jobs, problems)

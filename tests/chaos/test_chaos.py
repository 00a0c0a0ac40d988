"""Chaos: workers killed with SIGKILL at random while they drain a queue, on SQLite and PostgreSQL.

Every few seconds, and at each quarter of the queue done, a random worker is killed and a new one
started. At the end every job must have
succeeded, none may have started more often than the queue counted (a double claim), and a killed
worker's jobs must be queued again within about one lease. Size it with SCHED_CHAOS_JOBS and
SCHED_CHAOS_KILL_S; `pytest tests/chaos -s` prints the figures:
jobs, kills, duplicates, lost, and the longest time from a kill to the requeue of its jobs.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from scheduler.jobqueue import JobQueue, JobSpec

pytestmark = pytest.mark.chaos

ROOT = Path(__file__).resolve().parents[2]
JOBS = int(os.environ.get("SCHED_CHAOS_JOBS", "40"))
KILL_EVERY_S = float(os.environ.get("SCHED_CHAOS_KILL_S", "2.5"))
WORKERS = 3
LEASE_S = 2.0


def _start_worker(url: str, runs: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "scheduler.cli", "--db", url, "worker", "--gpus", "none", "--cpu-slots", "2",
         "--lease", str(LEASE_S), "--heartbeat", "0.3", "--runs", str(runs)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _holding(queue: JobQueue, pids: list[int]) -> set[int]:
    """The pids among `pids` of workers that run a job now."""
    from sqlalchemy import select

    from scheduler.store.schema import jobs, workers

    with queue.read() as conn:
        return set(conn.execute(select(workers.c.pid).join(jobs, jobs.c.worker_id == workers.c.id)
                                .where(workers.c.pid.in_(pids), jobs.c.status == "running")).scalars())


class _Requeues:
    """Watches the jobs a killed worker held and records how long until each left it."""

    def __init__(self, url: str):
        self.queue = JobQueue(url)
        self.waits: list[float] = []
        self.held: list[int] = []  # per kill, how many running jobs the dead worker held
        self.requeued: Counter[int] = Counter()  # per kill (its index), how many of them left it
        self.pending: list[tuple[float, int, int, int]] = []  # (kill time, kill, job id, dead worker id)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def killed(self, worker_pid: int) -> None:
        from sqlalchemy import select

        from scheduler.store.schema import jobs, workers

        now = time.monotonic()
        with self.queue.read() as conn:
            held = conn.execute(select(jobs.c.id, jobs.c.worker_id).join(workers, workers.c.id == jobs.c.worker_id)
                                .where(workers.c.pid == worker_pid, jobs.c.status == "running")).all()
        with self.lock:
            kill = len(self.held)
            self.held.append(len(held))
            self.pending.extend((now, kill, job_id, worker_id) for job_id, worker_id in held)

    def _check(self) -> None:
        with self.lock:
            pending = list(self.pending)
        left = []
        for entry in pending:
            since, kill, job_id, worker_id = entry
            row = self.queue.get(job_id)
            if row.status != "running" or row.worker_id != worker_id:
                left.append(entry)
                self.waits.append(time.monotonic() - since)
                self.requeued[kill] += 1
        with self.lock:
            self.pending = [entry for entry in self.pending if entry not in left]

    def _watch(self) -> None:
        while not self.stop.is_set():
            self._check()
            time.sleep(0.1)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self._check()  # a last look: jobs requeued since the watcher's last pass
        self.queue.dispose()


def test_exactly_once_while_workers_are_killed_at_random(db_url, tmp_path):
    queue = JobQueue(db_url)
    marker = tmp_path / "starts.txt"
    queue.submit([JobSpec(name=f"chaos-{i}", kind="sleep", params={"seconds": 0.3, "marker": str(marker)},
                          max_attempts=20, priority=i % 5) for i in range(JOBS)])
    runs = tmp_path / "runs"
    workers = [_start_worker(db_url, runs) for _ in range(WORKERS)]
    requeues = _Requeues(db_url)
    rng = random.Random(0)
    kills = 0
    deadline = time.monotonic() + 240
    next_kill = time.monotonic() + KILL_EVERY_S
    # Fast workers drain the queue in a few seconds: a kill is also due at each quarter of the jobs
    # done, so every run kills at least three workers mid-queue whatever the machine's speed.
    progress_marks = [JOBS * quarter // 4 for quarter in (1, 2, 3)]
    try:
        while (done := queue.status_counts().get("succeeded", 0)) < JOBS:
            assert time.monotonic() < deadline, f"not drained: {queue.status_counts()}"
            progress_due = bool(progress_marks) and done >= progress_marks[0]
            if progress_due:
                progress_marks = [mark for mark in progress_marks if mark > done]
            if progress_due or time.monotonic() >= next_kill:
                # a worker that holds a job when one does: a kill is there to test the requeue
                holding = _holding(queue, [w.pid for w in workers])
                victims = [i for i, w in enumerate(workers) if w.pid in holding] or list(range(len(workers)))
                victim = workers.pop(rng.choice(victims))
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                requeues.killed(victim.pid)
                kills += 1
                workers.append(_start_worker(db_url, runs))
                next_kill = time.monotonic() + KILL_EVERY_S
            time.sleep(0.1)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=30)
        requeues.close()
    starts = Counter(marker.read_text().split())
    rows = {row.name: row for row in (queue.get(f"chaos-{i}") for i in range(JOBS))}
    duplicates = sorted(name for name, row in rows.items() if starts[name] > row.attempts)
    lost = sorted(name for name, row in rows.items() if row.status != "succeeded")
    longest = max(requeues.waits, default=0.0)
    print(f"\nchaos on {db_url.split(':')[0]}: {JOBS} jobs, {kills} kills, {sum(starts.values())} starts, "
          f"{len(duplicates)} duplicates, {len(lost)} lost, {len(requeues.waits)} jobs requeued after a kill, "
          f"longest kill-to-requeue {longest:.1f}s (lease {LEASE_S:g}s)")
    assert kills >= 3
    assert duplicates == [] and lost == []
    # every kill that caught a worker running jobs saw each of them queued again, and some kill did
    holding_kills = [kill for kill, held in enumerate(requeues.held) if held]
    assert holding_kills, f"no kill caught a worker running a job: {requeues.held}"
    assert all(requeues.requeued[kill] == requeues.held[kill] for kill in holding_kills), \
        (requeues.held, dict(requeues.requeued), requeues.pending)
    assert longest <= LEASE_S * 2 + 2  # the lease, the reaper's interval, and this watcher's polling
    queue.dispose()

"""Chaos, outage round: three workers drain a queue on PostgreSQL while the database is cut off
from all of them (a real TCP proxy between them and the server) for longer than the lease, twice.

Each job appends "<pid> <time>" to its own trace file at every tick, so two copies of a job that
ran at once show as overlapping spans. At the end every job must have succeeded exactly once, no
two copies of a job may have overlapped (duplicates), none may be lost, and the outages must have
spent no attempt (a job stopped for want of the database is queued again as preempted).
`pytest tests/chaos/test_outage_round.py -s` prints the figures; SCHED_CHAOS_OUTAGE_JOBS sizes it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scheduler.jobqueue import JobQueue, JobSpec
from tests.conftest import drop_pg_database, fresh_pg_database
from tests.proxy import Proxy

pytestmark = pytest.mark.chaos

ROOT = Path(__file__).resolve().parents[2]
JOBS = int(os.environ.get("SCHED_CHAOS_OUTAGE_JOBS", "36"))
LEASE_S = 3.0
OUTAGE_S = LEASE_S + 2.0


def _worker(url: str, runs: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "scheduler.cli", "--db", url, "worker", "--gpus", "none", "--cpu-slots", "2",
         "--lease", str(LEASE_S), "--heartbeat", "0.3", "--grace", "1", "--runs", str(runs)],
        cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "SCHED_KINDS": "tests.outage_kind"})


def _overlaps(trace: Path) -> int:
    """How many copies of the job ran while another copy was still running."""
    spans: dict[str, list[float]] = {}
    for line in trace.read_text().splitlines():
        pid, at = line.split()
        spans.setdefault(pid, []).append(float(at))
    ordered = sorted((min(t), max(t)) for t in spans.values())
    return sum(1 for (_, end), (start, _) in zip(ordered, ordered[1:]) if start < end)


def test_an_outage_longer_than_the_lease_runs_no_job_twice_and_spends_no_attempt(pg_server, tmp_path):
    url, name = fresh_pg_database(pg_server)
    proxy = Proxy(5432)
    from sqlalchemy.engine import make_url

    through = make_url(url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    queue = JobQueue(url)
    traces = tmp_path / "traces"
    traces.mkdir()
    queue.submit([JobSpec(name=f"t{i}", kind="ticker", max_attempts=3,
                          params={"steps": 15, "every": 0.1, "trace": str(traces / f"t{i}")})
                  for i in range(JOBS)])
    workers = [_worker(through, tmp_path / "runs", tmp_path / f"w{i}.log") for i in range(3)]
    outages = 0
    try:
        for quarter in (0.25, 0.6):
            deadline = time.monotonic() + 120
            while queue.status_counts().get("succeeded", 0) < JOBS * quarter:
                assert time.monotonic() < deadline, "the workers stopped draining"
                time.sleep(0.1)
            proxy.cut()
            outages += 1
            time.sleep(OUTAGE_S)
            proxy.restore()
        deadline = time.monotonic() + 240
        while queue.status_counts().get("succeeded", 0) < JOBS:
            assert time.monotonic() < deadline, f"not drained: {queue.status_counts()}"
            time.sleep(0.2)
    finally:
        for proc in workers:
            proc.terminate()
        for proc in workers:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        proxy.close()
    rows = [queue.get(f"t{i}") for i in range(JOBS)]
    duplicates = sum(_overlaps(traces / f"t{i}") for i in range(JOBS))
    lost = sum(r.status == "lost" for r in rows)
    spent = sum(r.attempts - 1 for r in rows)
    preempted = sum(1 for i in range(JOBS) if len({line.split()[0] for line in
                                                   (traces / f"t{i}").read_text().splitlines()}) > 1)
    print(f"\noutage round: jobs {JOBS}, outages {outages} of {OUTAGE_S:g}s (lease {LEASE_S:g}s), "
          f"jobs stopped and run again {preempted}, duplicates {duplicates}, lost {lost}, "
          f"attempts spent by outages {spent}")
    queue.dispose()
    drop_pg_database(name)
    assert all(r.status == "succeeded" for r in rows)
    assert duplicates == 0 and lost == 0 and spent == 0
    assert preempted >= 1  # the outages did meet running jobs

"""Queue speed on SQLite: claim+finish latency with a deep queue, and a many-process drain rate.

    python bench/bench_queue.py [--jobs 100000] [--drain-jobs 10000] [--processes 8]

Prints the median claim+succeed time of one job with 100,000 queued (target <= 5 ms) and the rate
at which 8 processes drain 10,000 no-op jobs (target >= 500 jobs/s, zero double claims), beside a
one-process drain of the same jobs as the baseline.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert  # noqa: E402

from scheduler.jobqueue import JobQueue  # noqa: E402
from scheduler.store.engine import db_now  # noqa: E402
from scheduler.store.schema import jobs  # noqa: E402


def fill(queue: JobQueue, count: int, prefix: str) -> None:
    """Insert `count` queued no-op jobs fast (one executemany per 10,000)."""
    with queue.write() as s:
        now = db_now(s)
        for start in range(0, count, 10_000):
            s.execute(insert(jobs), [dict(name=f"{prefix}-{i}", kind="echo", params={}, priority=i % 10,
                                         gpus=0, tags=[], status="queued", attempts=0, max_attempts=1,
                                         created_at=now)
                                    for i in range(start, min(count, start + 10_000))])


def claim_latency(url: str, depth: int, samples: int) -> list[float]:
    queue = JobQueue(url)
    fill(queue, depth, "deep")
    worker = queue.register_worker("bench", 0, ["cpu0"])
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        job = queue.claim(worker, "cpu0", 0)
        queue.succeed(job.id, worker)
        times.append(time.perf_counter() - t0)
    queue.dispose()
    return times


def _drainer(url: str, out) -> None:
    queue = JobQueue(url)
    worker = queue.register_worker("bench", 0, ["cpu0"])
    ran = []
    while True:
        job = queue.claim(worker, "cpu0", 0)
        if job is None:
            if not queue.status_counts().get("queued"):
                break
            continue
        ran.append(job.id)
        queue.succeed(job.id, worker)
    out.put(ran)


def drain_rate(url: str, jobs: int, processes: int) -> tuple[float, int, int]:
    queue = JobQueue(url)
    fill(queue, jobs, "drain")
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_drainer, args=(url, out)) for _ in range(processes)]
    for p in procs:
        p.start()
    # Start timing once the first job is claimed, so interpreter start-up is not counted.
    while not queue.status_counts().get("running") and not queue.status_counts().get("succeeded"):
        time.sleep(0.001)
    t0 = time.perf_counter()
    results = [out.get() for _ in procs]
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.join()
    runs = Counter(job_id for ran in results for job_id in ran)
    doubles = sum(n - 1 for n in runs.values() if n > 1)
    queue.dispose()
    return jobs / elapsed, doubles, jobs - len(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--drain-jobs", type=int, default=10_000)
    parser.add_argument("--processes", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        times = claim_latency(f"sqlite:///{tmp}/latency.db", args.jobs, args.samples)
        ms = sorted(t * 1000 for t in times)
        print(f"claim+succeed with {args.jobs:,} queued (SQLite): median {statistics.median(ms):.2f} ms, "
              f"p95 {ms[int(len(ms) * 0.95)]:.2f} ms over {len(ms)} jobs (target <= 5 ms)")
        base, base_doubles, _ = drain_rate(f"sqlite:///{tmp}/drain1.db", args.drain_jobs, 1)
        rate, doubles, missing = drain_rate(f"sqlite:///{tmp}/drain.db", args.drain_jobs, args.processes)
        print(f"drain of {args.drain_jobs:,} no-op jobs (SQLite): {args.processes} processes {rate:,.0f} jobs/s, "
              f"1 process {base:,.0f} jobs/s (ratio {rate / base:.2f}); double claims {doubles + base_doubles}, "
              f"jobs not run {missing} (target >= 500 jobs/s, 0 double claims)")


if __name__ == "__main__":
    main()

"""`sched status` speed with a large database: 100,000 jobs in every state, with metrics.

    python bench/bench_status.py [--jobs 100000]

Prints the time of one status snapshot + render (target < 0.3 s), beside the same on a database of
1,000 jobs as the baseline (the ratio shows how little the size matters).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402
from sqlalchemy import insert, select  # noqa: E402

from scheduler.jobqueue import JobQueue  # noqa: E402
from scheduler.render import status_view  # noqa: E402
from scheduler.store.engine import db_now  # noqa: E402
from scheduler.store.schema import jobs, metrics  # noqa: E402
from scheduler.views import status_snapshot  # noqa: E402

STATES = ["succeeded"] * 6 + ["queued"] * 2 + ["failed", "cancelled"]


def fill(queue: JobQueue, count: int) -> None:
    worker = queue.register_worker("bench", 0, ["gpu0", "gpu1"])
    with queue.write() as s:
        now = db_now(s)
        for start in range(0, count, 10_000):
            rows = []
            for i in range(start, min(count, start + 10_000)):
                state = STATES[i % len(STATES)]
                began = now - timedelta(seconds=(count - i) * 5)
                rows.append(dict(name=f"job-{i}", kind="finetune", params={"lr": 2e-5}, priority=i % 10, gpus=1,
                                 tags=["bench"], status=state, attempts=int(state != "queued"), max_attempts=1,
                                 created_at=began, started_at=None if state == "queued" else began,
                                 finished_at=None if state == "queued" else began + timedelta(seconds=4),
                                 slot=None if state == "queued" else "gpu0", worker_id=worker))
            s.execute(insert(jobs), rows)
        ids = s.execute(select(jobs.c.id).where(jobs.c.status == "succeeded")).all()
        s.execute(insert(metrics), [dict(job_id=i, key="val_accuracy", value=0.5, time=now) for (i,) in ids])


def time_status(url: str, repeats: int) -> list[float]:
    queue = JobQueue(url)
    console = Console(file=io.StringIO(), width=160)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        console.print(status_view(status_snapshot(queue, all_jobs=False)))
        times.append(time.perf_counter() - t0)
    queue.dispose()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for label, count in (("baseline", 1_000), ("large", args.jobs)):
            url = f"sqlite:///{tmp}/{label}.db"
            fill(JobQueue(url), count)
            results[label] = statistics.median(time_status(url, args.repeats))
        print(f"sched status (snapshot + render), SQLite: {args.jobs:,} jobs {results['large'] * 1000:.0f} ms, "
              f"1,000 jobs {results['baseline'] * 1000:.0f} ms (ratio {results['large'] / results['baseline']:.2f}); "
              "target < 300 ms")


if __name__ == "__main__":
    main()

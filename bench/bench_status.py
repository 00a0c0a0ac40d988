"""`sched status` (snapshot + render) on realistic histories: how the size and age of the history matter.

    python bench/bench_status.py [--jobs 100000] [--rounds 10] [--weeks 4] [--quick]

Three SQLite databases, each with one live worker (2 GPU slots, 2 jobs running) and 200 jobs
queued behind them, plus a history of finished jobs (finetune, shell, tapt, ensemble and tune;
85% succeeded, the rest failed, killed, cancelled or upstream_failed; 3 metric rows per
succeeded job):
- 1,000 finished jobs, all within the last day (the baseline),
- `--jobs` finished jobs, all within the last day (the worst case for the last-day windows),
- `--jobs` finished jobs spread evenly over `--weeks` weeks (a long campaign: few are recent).

Each round times one `sched status` (the same `status_snapshot(all_jobs=False)` + `status_view` +
rich render the command does, into a string) on every database, the order rotated; figures are
min and median over rounds. Issue 12's goal: 100,000 jobs finished in the last day as fast as 1,000.

The histories are bulk-loaded with plain INSERTs into sched's tables (jobs cannot be finished in
the past through the API). If a version of sched keeps status aggregates elsewhere, they must be
derivable from these rows; as a check, the script prints the busy share `sched status` shows for
the last day beside the share computed here from the rows, and flags a mismatch.
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchlib import header, ratio, rotated, summary, table  # noqa: E402
from scheduler.jobqueue import JobQueue  # noqa: E402

SLOTS = ["gpu0", "gpu1"]
KINDS = ["finetune"] * 12 + ["shell"] * 4 + ["tapt"] * 2 + ["ensemble", "tune"]
ENDINGS = ["succeeded"] * 85 + ["failed"] * 8 + ["killed"] * 2 + ["cancelled"] * 3 + ["upstream_failed"] * 2
QUEUED = 200
CHUNK = 10_000


def fill(url: str, finished: int, span: timedelta, seed: int = 0) -> float:
    """Write the history; returns the busy share of the last day that the rows imply."""
    from sqlalchemy import insert, select

    from scheduler.store.engine import db_now
    from scheduler.store.schema import jobs, metrics

    rng = random.Random(seed)
    queue = JobQueue(url)
    worker = queue.register_worker("bench-host", 1, SLOTS)
    busy_day = 0.0
    with queue.write() as conn:
        now = db_now(conn)
        step = span / finished
        per_slot = step * len(SLOTS)  # jobs end one `step` apart, alternating slots
        for start in range(0, finished, CHUNK):
            rows = []
            for i in range(start, min(finished, start + CHUNK)):
                state = ENDINGS[rng.randrange(len(ENDINGS))]
                ended = now - span + step * (i + 1) - timedelta(seconds=30)
                ran = state != "upstream_failed" and not (state == "cancelled" and rng.random() < 0.5)
                began = ended - per_slot * rng.uniform(0.5, 0.95) if ran else None
                slot = SLOTS[i % len(SLOTS)] if ran else None
                if ran and ended > now - timedelta(days=1):
                    busy_day += (ended - max(began, now - timedelta(days=1))).total_seconds()
                rows.append(dict(name=f"job-{i}", kind=KINDS[i % len(KINDS)], params={"lr": 2e-5, "seed": i},
                                 priority=rng.choice((0, 10, 100)), gpus=1, tags=["bench"], status=state,
                                 attempts=int(ran), max_attempts=1, preemptible=False,
                                 created_at=(began or ended) - timedelta(minutes=5), started_at=began,
                                 finished_at=ended, slot=slot, worker_id=worker if ran else None,
                                 exit_code=None if not ran else (0 if state == "succeeded" else 1),
                                 failure_kind=state if state in ("failed", "killed") else None,
                                 message=None if state == "succeeded" else f"{state} (bench)"))
            conn.execute(insert(jobs), rows)
        running = [dict(name=f"running-{k}", kind="finetune", params={"lr": 2e-5}, priority=50, gpus=1, tags=["bench"],
                      status="running", attempts=1, max_attempts=2, preemptible=False,
                      created_at=now - timedelta(minutes=20), started_at=now - timedelta(minutes=10 + k),
                      slot=SLOTS[k], worker_id=worker, lease_until=now + timedelta(minutes=1),
                      progress_done=10.0 * (k + 1), progress_total=100.0) for k in range(len(SLOTS))]
        queued = [dict(name=f"queued-{k}", kind=KINDS[k % len(KINDS)], params={"lr": 2e-5}, priority=k % 3, gpus=1,
                       tags=["bench"], status="queued", attempts=0, max_attempts=1, preemptible=False,
                       created_at=now - timedelta(minutes=5)) for k in range(QUEUED)]
        conn.execute(insert(jobs), running)
        conn.execute(insert(jobs), queued)
        for k in range(len(SLOTS)):
            busy_day += (timedelta(minutes=10 + k)).total_seconds()
        ids = [i for (i,) in conn.execute(select(jobs.c.id).where(jobs.c.status == "succeeded"))]
        for start in range(0, len(ids), CHUNK):
            conn.execute(insert(metrics), [
                dict(job_id=j, key=key, value=0.5, step=s, split=split, time=now)
                for j in ids[start:start + CHUNK]
                for key, s, split in (("loss", 1, "train"), ("loss", 2, "train"), ("val_accuracy", None, None))])
    queue.dispose()
    return busy_day / (len(SLOTS) * 86_400)


def status_once(queue: JobQueue, console) -> dict:
    """What `sched status` does (scheduler/cli/watch.py, the plain view), rendered into a string."""
    from scheduler.render import status_view
    from scheduler.views import status_snapshot

    snap = status_snapshot(queue, all_jobs=False)
    console.print(status_view(snap))
    return snap


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=100_000)
    p.add_argument("--baseline", type=int, default=1_000)
    p.add_argument("--weeks", type=float, default=4.0)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--quick", action="store_true", help="10,000 jobs, 3 rounds (a smoke run)")
    args = p.parse_args()
    if args.quick:  # smaller defaults; options given on the command line still win
        p.set_defaults(jobs=10_000, rounds=3)
        args = p.parse_args()
    return args


def main() -> int:
    args = parse_args()
    from rich.console import Console

    header(f"sched status (snapshot + render) on realistic histories, SQLite; {args.rounds} rounds, order rotated")
    histories = [(f"{args.baseline:,} jobs, all in the last day", args.baseline, timedelta(hours=23)),
                 (f"{args.jobs:,} jobs, all in the last day", args.jobs, timedelta(hours=23)),
                 (f"{args.jobs:,} jobs over {args.weeks:g} weeks", args.jobs, timedelta(weeks=args.weeks))]
    mismatch = False
    with tempfile.TemporaryDirectory(prefix="sched-bench-status-") as tmp:
        dbs, expected = [], {}
        for k, (label, count, span) in enumerate(histories):
            url = f"sqlite:///{tmp}/history-{k}.db"
            t0 = time.perf_counter()
            expected[label] = fill(url, count, span)
            print(f"  {label}: bulk-loaded in {time.perf_counter() - t0:.1f} s")
            dbs.append((label, JobQueue(url)))
        console = Console(file=io.StringIO(), width=160, force_terminal=False)
        shown = {}
        for label, queue in dbs:  # one untimed call each: connections, statement caches, kind imports
            shown[label] = (status_once(queue, console).get("busy") or {}).get("last_day")
        times: dict[str, list[float]] = {label: [] for label, _ in dbs}
        for r in range(args.rounds):
            for label, queue in rotated(dbs, r):
                t0 = time.perf_counter()
                status_once(queue, console)
                times[label].append(time.perf_counter() - t0)
                console.file.seek(0)
                console.file.truncate()
        base = summary(times[dbs[0][0]])["median"]
        rows = []
        for label, values in times.items():
            s = summary(values)
            got, want = shown[label], expected[label]
            check = "n/a" if got is None else f"{got:.3f} / {want:.3f}"
            if got is not None and abs(got - want) > 0.01:
                mismatch = True
                check += " MISMATCH"
            rows.append([label, f"{s['min'] * 1e3:.0f}", f"{s['median'] * 1e3:.0f}", ratio(s["median"], base), check])
        print(table(rows, ["history", "min ms", "median ms", "vs baseline", "busy last day: shown / rows"]))
        for _, queue in dbs:
            queue.dispose()
    print(f"goal: {args.jobs:,} jobs finished in the last day as fast as {args.baseline:,} (ratio ~1.0x)")
    if mismatch:
        print("WARNING: the busy share sched shows does not match the loaded rows: status reads state these "
              "bulk-loaded rows do not fill, so the figures above are not comparable")
    return 0


if __name__ == "__main__":
    sys.exit(main())

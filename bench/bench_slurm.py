"""sched's workers as Slurm jobs against workers started directly, on a local Slurm
(bash scripts/slurm-local.sh start) and the local PostgreSQL:

  python bench/bench_slurm.py [--jobs 200] [--rounds 3]

- start latency: from `sched submit` of one echo job to its start (the database's started_at),
  through a worker job submitted with it (`sched slurm up`, the Slurm scheduling and the worker's
  start-up included) and through a worker already running;
- drain: N echo jobs through 2 Slurm worker jobs against 2 `sched worker` processes started
  directly, the same options on both sides, interleaved, min and median of the rounds.
Each round uses a fresh PostgreSQL database.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchlib import busy_note, load_average  # noqa: E402
from scheduler.jobqueue import JobQueue, JobSpec  # noqa: E402
from tests.conftest import PG_URL, drop_pg_database, fresh_pg_database  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORKER_ARGS = ["--gpus", "none", "--lease", "10", "--heartbeat", "1", "--grace", "2"]


def sched(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "scheduler.cli", *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr)
    return done.stdout


def wait(predicate, timeout=300.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(0.05)


def no_worker_jobs() -> bool:
    return not subprocess.run(["squeue", "-h", "--me", "--name", "sched-worker"], capture_output=True,
                              text=True).stdout.strip()


def started_after(queue: JobQueue, name: str, submitted_db) -> float:
    return (queue.get(name).started_at - submitted_db).total_seconds()


def db_now(queue: JobQueue):
    from scheduler.store.engine import db_now as now

    with queue.read() as conn:
        return now(conn)


def start_latency(runs: Path) -> tuple[float, float]:
    url, name = fresh_pg_database(PG_URL)
    try:
        queue = JobQueue(url)
        t0 = db_now(queue)
        queue.submit([JobSpec(name="first", kind="echo", params={})])
        sched("--db", url, "slurm", "up", "--workers", "1", "--cpus-per-task", "1", "--runs", str(runs),
              "--idle-exit", "20s", "--lease", "10", "--grace", "2")
        wait(lambda: queue.get("first").status == "succeeded")
        cold = started_after(queue, "first", t0)
        t1 = db_now(queue)
        queue.submit([JobSpec(name="second", kind="echo", params={})])
        wait(lambda: queue.get("second").status == "succeeded")
        warm = started_after(queue, "second", t1)
        subprocess.run(["scancel", "--me", "--name", "sched-worker"], check=False)
        wait(no_worker_jobs)
        queue.dispose()
        return cold, warm
    finally:
        drop_pg_database(name)


def drain(side: str, jobs: int, runs: Path) -> float:
    url, name = fresh_pg_database(PG_URL)
    procs = []
    try:
        queue = JobQueue(url)
        queue.submit([JobSpec(name=f"e{i}", kind="echo", params={}) for i in range(jobs)])
        start = time.monotonic()
        if side == "slurm":
            sched("--db", url, "slurm", "up", "--workers", "2", "--cpus-per-task", "1", "--runs", str(runs),
                  "--idle-exit", "3s", "--lease", "10", "--grace", "2")
        else:
            procs = [subprocess.Popen([sys.executable, "-m", "scheduler.cli", "--db", url, "worker", *WORKER_ARGS,
                                       "--runs", str(runs), "--until-empty"], cwd=ROOT,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)]
        wait(lambda: queue.status_counts().get("succeeded", 0) == jobs)
        took = time.monotonic() - start
        if side == "slurm":
            wait(no_worker_jobs)
        for p in procs:
            p.wait(timeout=60)
        queue.dispose()
        return jobs / took
    finally:
        drop_pg_database(name)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    runs = Path(tempfile.mkdtemp(prefix="bench-slurm-")) / "runs"
    note = busy_note()
    if note:
        print(note)
    colds, warms, rates = [], [], {"slurm": [], "direct": []}
    for r in range(args.rounds):
        cold, warm = start_latency(runs)
        colds.append(cold)
        warms.append(warm)
        for side in (("slurm", "direct") if r % 2 == 0 else ("direct", "slurm")):
            rates[side].append(drain(side, args.jobs, runs))

    def line(label, values, unit):
        return f"{label:<52} min {min(values):7.2f} {unit}   median {statistics.median(values):7.2f} {unit}"

    print(f"Slurm workers on a one-node local Slurm (scripts/slurm-local.sh), PostgreSQL; {args.rounds} rounds, "
          f"interleaved; load average at the end {load_average()}")
    print(line("submit -> start, through a newly submitted worker job", colds, "s"))
    print(line("submit -> start, through a running worker", warms, "s"))
    print(line(f"drain {args.jobs} echo jobs, 2 Slurm worker jobs", rates["slurm"], "jobs/s"))
    print(line(f"drain {args.jobs} echo jobs, 2 workers started directly", rates["direct"], "jobs/s"))
    print("(drain time counts from the submit of the worker jobs: Slurm's scheduling and the workers' start-up "
          "are in it, as a user waits for them)")


if __name__ == "__main__":
    main()

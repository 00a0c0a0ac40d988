"""Start-up of the `sched` CLI as whole processes, next to `python -c pass` in the same run.

    python bench/bench_startup.py [--repeats 10] [--jobs 100000]

Times, interleaved and repeated (best and median of N runs each):
- `python -c pass`                      the interpreter's own floor
- `sched --help`                        what every command pays before it does anything
- `sched status` on an empty database
- `sched status --json` on a database of `--jobs` jobs (mixed states, all finished in the last day)

The large database is written with the sqlite3 module (plain SQL against the table columns), so
the same script measures any version of sched that keeps those columns.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATES = ["succeeded"] * 6 + ["queued"] * 2 + ["failed", "cancelled"]


def sched(*args: str) -> list[str]:
    return [sys.executable, "-m", "scheduler.cli", *args]


def fill(path: Path, count: int) -> None:
    """`count` jobs in mixed states, every finished one within the last day, plus a metric each."""
    subprocess.run(sched("--db", f"sqlite:///{path}", "init"), check=True, cwd=ROOT, capture_output=True)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    conn = sqlite3.connect(path)
    rows, metrics = [], []
    for i in range(count):
        state = STATES[i % len(STATES)]
        began = now - timedelta(seconds=(count - i) * 0.8)  # all within the last day
        done = state != "queued"
        rows.append((i + 1, f"job-{i}", "finetune", json.dumps({"lr": 2e-5}), i % 10, state, 1,
                     json.dumps(["bench"]), int(done), 1, 0, 0, fmt(began), fmt(began) if done else None,
                     fmt(began + timedelta(seconds=0.7)) if done else None, "gpu0" if done else None))
        if state == "succeeded":
            metrics.append((i + 1, "val_accuracy", 0.5, fmt(began)))
    conn.executemany(
        "INSERT INTO sched_jobs (id, name, kind, params, priority, status, gpus, tags, attempts, max_attempts,"
        " preemptible, cancel_requested, created_at, started_at, finished_at, slot)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    conn.executemany("INSERT INTO sched_metrics (job_id, key, value, time) VALUES (?,?,?,?)", metrics)
    conn.commit()
    conn.close()


def fmt(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")


def run_once(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {done.stderr.decode()[-500:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        empty, large = Path(tmp, "empty.db"), Path(tmp, "large.db")
        subprocess.run(sched("--db", f"sqlite:///{empty}", "init"), check=True, cwd=ROOT, capture_output=True)
        fill(large, args.jobs)
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "sched --help": sched("--help"),
            "sched status (empty db)": sched("--db", f"sqlite:///{empty}", "status"),
            f"sched status --json ({args.jobs:,} jobs)": sched("--db", f"sqlite:///{large}", "status", "--json"),
        }
        env_note = f"{os.cpu_count()} cores, Python {sys.version.split()[0]}"
        times: dict[str, list[float]] = {label: [] for label in commands}
        run_once(commands["sched --help"])  # warm the page cache once; every run after is measured
        for round_ in range(args.repeats):
            order = list(commands.items())
            order = order[round_ % len(order):] + order[:round_ % len(order)]  # rotate who goes first
            for label, cmd in order:
                times[label].append(run_once(cmd))
    print(f"start-up as whole processes, {args.repeats} runs each, interleaved ({env_note})")
    print(f"{'command':<40} {'best':>8} {'median':>8}")
    for label, values in times.items():
        print(f"{label:<40} {min(values):>7.3f}s {statistics.median(values):>7.3f}s")


if __name__ == "__main__":
    main()

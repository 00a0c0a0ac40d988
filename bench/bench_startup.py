"""Start-up of the installed `sched` command as whole processes, next to `python -c pass` in the same run.

    python bench/bench_startup.py [--quick] [--repeats 10] [--jobs 100000] [--imports]

Times, interleaved in rotated order and repeated (min and median of N runs each):
- `python -c pass`                       the interpreter's own floor
- `sched --help`                         what every command pays before it does anything
- `sched status` and `sched status --json`, each on an empty database and on one of `--jobs` jobs:
  the same command on both sizes

`sched` is the console script pip installed for this Python (the `sched` entry point users run),
with this tree on PYTHONPATH so it runs this checkout's code; every command, `python -c pass`
included, runs with the same environment. When `shutil.which("sched")` is a wrapper rather than
that script (a pyenv shim adds pyenv's own start-up, about 0.1 s, to any command), the output says
so and times the script the wrapper runs, as it times the interpreter itself for `python -c pass`.

The large database is BULK-LOADED: written with plain INSERTs through the sqlite3 module (jobs in
mixed states, every finished one within the last day, a metric per success, the busy buckets
rebuilt as a migration would), not by `sched submit`, and the output says so in capitals.

`--imports` also prints where `sched status` spends its import time on the empty database
(`python -X importtime`, top-level modules by cumulative time). Prints figures; no assertion on time.
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchlib import ROOT, header, ratio, rotated, summary, table  # noqa: E402
from bench.procs import sched_script, tree_env  # noqa: E402

STATES = ["succeeded"] * 6 + ["queued"] * 2 + ["failed", "cancelled"]
GOAL_S = 0.25  # issue 23: `sched status` on an empty database, median


# ---- the databases ---------------------------------------------------------------------------------

def init(sched: str, path: Path) -> None:
    subprocess.run([sched, "--db", f"sqlite:///{path}", "init"], check=True, cwd=ROOT, capture_output=True,
                   env=tree_env())


def bulk_load(path: Path, count: int) -> float:
    """`count` jobs in mixed states, every finished one within the last day, plus a metric per success,
    with plain INSERTs; then the busy buckets rebuilt from them. Returns the seconds it took."""
    t0 = time.perf_counter()
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    rows, metrics = [], []
    for i in range(count):
        state = STATES[i % len(STATES)]
        began = now - timedelta(seconds=(count - i) * 0.8 * 100_000 / max(count, 100_000))  # all within a day
        done = state != "queued"
        rows.append((i + 1, f"job-{i}", "finetune", json.dumps({"lr": 2e-5}), i % 10, state, 1,
                     json.dumps(["bench"]), int(done), 1, 0, 0, fmt(began), fmt(began) if done else None,
                     fmt(began + timedelta(seconds=0.7)) if done else None, "gpu0" if done else None))
        if state == "succeeded":
            metrics.append((i + 1, "val_accuracy", 0.5, fmt(began)))
    conn = sqlite3.connect(path)
    conn.executemany(
        "INSERT INTO sched_jobs (id, name, kind, params, priority, status, gpus, tags, attempts, max_attempts,"
        " preemptible, cancel_requested, created_at, started_at, finished_at, slot)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    conn.executemany("INSERT INTO sched_metrics (job_id, key, value, time) VALUES (?,?,?,?)", metrics)
    conn.commit()
    conn.close()
    rebuild_busy(path)
    return time.perf_counter() - t0


def rebuild_busy(path: Path) -> None:
    """The busy buckets (`sched status`' GPU share) from the loaded rows, as the migration that added
    them does for data written around the queue's API."""
    from scheduler.jobqueue import JobQueue
    from scheduler.store.busy import rebuild

    queue = JobQueue(f"sqlite:///{path}")
    with queue.write() as conn:
        rebuild(conn)
    queue.dispose()


def fmt(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")


# ---- timing ----------------------------------------------------------------------------------------

def run_once(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {done.stderr.decode()[-500:]}")
    return elapsed


def import_profile(cmd: list[str], env: dict[str, str], top: int = 12) -> list[str]:
    """Top-level imports of `cmd` by cumulative time (`python -X importtime`)."""
    done = subprocess.run([sys.executable, "-X", "importtime", *cmd], cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, env=env)
    found = []
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\S.*)$", line)  # no indent: imported at top level
        if match:
            found.append((int(match.group(1)), match.group(2)))
    total = sum(us for us, _ in found)
    lines = [f"{us / 1000:8.1f} ms  {name}" for us, name in sorted(found, reverse=True)[:top]]
    return [f"import time of `sched status` (empty db), top-level modules, {total / 1000:.0f} ms in all "
            "(-X importtime adds its own overhead):", *lines]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=10, help="runs of each command, interleaved")
    p.add_argument("--jobs", type=int, default=100_000, help="jobs in the large (BULK-LOADED) database")
    p.add_argument("--imports", action="store_true", help="also print the import profile of `sched status`")
    p.add_argument("--quick", action="store_true", help="3 runs each, 10,000 jobs (figures not comparable)")
    args = p.parse_args()
    if args.quick:  # smaller defaults; options given on the command line still win
        p.set_defaults(repeats=3, jobs=10_000)
        args = p.parse_args()
    return args


def main() -> int:
    args = parse_args()
    sched, note = sched_script()
    env = tree_env()
    header(f"start-up of the installed `sched` command as whole processes, next to `python -c pass`; "
           f"{args.repeats} runs each, interleaved, order rotated")
    print(f"sched: {sched} (PYTHONPATH={ROOT}: this checkout's code); python: {sys.executable}")
    if note:
        print(note)
    with tempfile.TemporaryDirectory(prefix="sched-bench-startup-") as tmp:
        empty, large = Path(tmp, "empty.db"), Path(tmp, "large.db")
        init(sched, empty)
        init(sched, large)
        seconds = bulk_load(large, args.jobs)
        size = f"{args.jobs:,} jobs, BULK-LOADED"
        print(f"large database: {size} with plain INSERTs (not `sched submit`) in {seconds:.1f} s")
        commands = [("python -c pass", [sys.executable, "-c", "pass"]),
                    ("sched --help", [sched, "--help"])]
        for what in (["status"], ["status", "--json"]):
            for label, path in (("empty db", empty), (size, large)):
                commands.append((f"sched {' '.join(what)} ({label})", [sched, "--db", f"sqlite:///{path}", *what]))
        for _, cmd in commands:
            run_once(cmd, env)  # warm the page cache once; every run after is measured
        times: dict[str, list[float]] = {label: [] for label, _ in commands}
        for round_ in range(args.repeats):
            for label, cmd in rotated(commands, round_):
                times[label].append(run_once(cmd, env))
        profile = import_profile(commands[2][1], env) if args.imports else []
    floor = summary(times["python -c pass"])["median"]
    rows = []
    for label, values in times.items():
        s = summary(values)
        rows.append([label, f"{s['min']:.3f}", f"{s['median']:.3f}", ratio(s["median"], floor)])
    print()
    print(table(rows, ["command", "min s", "median s", "median vs python -c pass"]))
    status_empty = summary(times["sched status (empty db)"])["median"]
    print(f"goal (issue 23): `sched status` on an empty database <= {GOAL_S:.2f} s median on this machine; "
          f"now {status_empty:.3f} s")
    for line in profile:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

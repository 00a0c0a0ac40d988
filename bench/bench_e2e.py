"""End to end: N `true` jobs through one real sched worker, a huey consumer, and `xargs -P` (the floor).

    python bench/bench_e2e.py [--jobs 300] [--rounds 3] [--quick]

Each contender runs the program `true` N times, one at a time (and `xargs -P 2` two at a time):
- sched: one worker, `python -m scheduler.cli --db URL worker --gpus none --cpu-slots 1`, jobs of
  kind `shell` with params `{argv: [true]}` (each job is a runner child that runs `true`). When
  the worker has warm spares (a `--no-warm` option), it runs twice: as it starts by default and
  with `--no-warm`.
- huey: its own consumer (`Huey.create_consumer`, 1 worker thread, the default worker type, and
  `-d 0.01`: a first idle-polling interval of 10 ms instead of 0.1 s, as a latency-minded user sets
  it) on a SqliteHuey file, running a task that does `subprocess.run(["true"])` and checks the exit
  code. sched's worker has no such interval to set: an idle worker wakes on events, not on a poll
  (scheduler/wakeup.py): its runner's report pipe when a job ends, and the database changing when
  a job is submitted (SQLite `PRAGMA data_version` read every 50 ms, PostgreSQL LISTEN); its
  `poll_s` (0.5 s) only bounds one wait when nothing happens.
- `xargs -P 1` and `xargs -P 2` running `true`: the cost of spawning the process and nothing else.

Wall time runs from the submit of the first job to the moment the last one is recorded done: the
largest `finished_at` of the sched jobs (the database clock, which is this machine's clock), and
the largest finish time the huey tasks return; completion is only polled (every `--poll` seconds)
to know when to read those, so the poll interval does not round the figures. Both sides submit
the same way, inside that window: one job per call, as the daemon already runs (sched:
`JobQueue.submit([job])`; huey: one enqueue per task, its only way), so each may start a job while
the next is being submitted. The worker and the consumer are started, connected and have finished
one probe job before the clock starts, so neither pays its own start-up. Contenders alternate in
every round with the order rotated; the figures are min and median over rounds, and the ratios use
medians.

Issue 12's goals: sched within 3x of huey, within 10x of `xargs -P` (1 slot against `-P 1`).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import peers  # noqa: E402
from bench.benchlib import ROOT, header, ratio, rotated, sched_cmd, summary, table, warm_flags  # noqa: E402
from bench.procs import Failed, finished_span, stop, wait_for  # noqa: E402
from scheduler.jobqueue import JobQueue, JobSpec  # noqa: E402

START_TIMEOUT_S = 180.0


def run_sched(workdir: Path, jobs: int, poll: float, flags: list[str]) -> float:
    url = f"sqlite:///{workdir}/sched.db"
    queue = JobQueue(url)
    log = workdir / "worker.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(sched_cmd("--db", url, "worker", "--gpus", "none", "--cpu-slots", "1",
                                          "--runs", str(workdir / "runs"), *flags),
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        queue.submit([JobSpec("probe", "shell", {"argv": ["true"]})])
        wait_for(lambda: queue.status_counts().get("succeeded", 0) == 1, START_TIMEOUT_S, poll,
                 "sched worker start-up", proc, log)
        specs = [JobSpec(f"true-{i}", "shell", {"argv": ["true"]}) for i in range(jobs)]
        t0 = time.time()
        ids = [queue.submit([spec])[0] for spec in specs]  # one per call, as huey's side enqueues

        def done() -> bool:
            counts = queue.status_counts()
            ended_badly = sum(n for state, n in counts.items() if state not in ("queued", "running", "succeeded"))
            if ended_badly:
                raise Failed(f"sched: jobs ended without success: {counts} (see {log})")
            return counts.get("succeeded", 0) == jobs + 1

        wait_for(done, 3600, poll, "sched jobs", proc, log)
        return finished_span(queue, ids)[1] - t0
    finally:
        stop(proc, signal.SIGTERM)
        queue.dispose()


def run_huey(workdir: Path, jobs: int, poll: float, sync: str, delay: float) -> float:
    path = str(workdir / "huey.db")
    huey = peers.make_huey(path, sync)
    log = workdir / "consumer.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bench.peers", "consume", path, sync, "1", "thread", str(delay)],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        probe = huey.run_argv(["true"])
        wait_for(lambda: huey.storage.result_store_size() == 1, START_TIMEOUT_S, poll, "huey consumer start-up",
                 proc, log)
        probe.get()  # pops the probe's result: the store is empty again
        t0 = time.time()
        results = [huey.run_argv(["true"]) for _ in range(jobs)]  # one per call: huey has no batch enqueue
        wait_for(lambda: huey.storage.result_store_size() >= jobs, 3600, poll, "huey tasks", proc, log)
        # Each task returns the time it finished; a failed one stores an error, which get() raises.
        return max(r.get() for r in results) - t0
    finally:
        stop(proc, signal.SIGINT)  # huey's graceful shutdown signal
        huey.storage.close()


def run_xargs(jobs: int, parallel: int) -> float:
    lines = "".join(f"{i}\n" for i in range(jobs)).encode()
    t0 = time.perf_counter()
    subprocess.run(["xargs", "-P", str(parallel), "-n", "1", "true"], input=lines, check=True)
    return time.perf_counter() - t0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=300)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--poll", type=float, default=0.05, help="seconds between completion checks (both queues)")
    p.add_argument("--xargs", default="1,2", help="xargs -P values")
    p.add_argument("--huey-sync", choices=("normal", "default"), default="normal",
                   help="huey's synchronous pragma: NORMAL like sched (default), or SQLite's default FULL")
    p.add_argument("--huey-delay", type=float, default=0.01,
                   help="the huey consumer's first idle-polling interval (its -d; huey's default is 0.1 s)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds the sched rounds may take in all: a 10-job pilot measures sched's time per job and "
                        "--jobs is lowered to fit (never below 20), and the output says so")
    p.add_argument("--quick", action="store_true", help="20 jobs, 2 rounds (a smoke run)")
    p.add_argument("--dir", default=None, help="folder for databases and run folders (default: temporary)")
    args = p.parse_args()
    if args.quick:  # smaller defaults; options given on the command line still win
        p.set_defaults(jobs=20, rounds=2)
        args = p.parse_args()
    return args


def main() -> int:
    args = parse_args()
    if not peers.available():
        print(f"bench_e2e: {peers.HUEY_MISSING}")
        return 2
    header(f"end to end: `true` jobs, one at a time; {args.rounds} rounds, order rotated")
    warm = warm_flags()
    contenders = []
    if warm is None:
        print("sched worker: default flags; warm: not available in this version (no --no-warm option)")
        contenders.append(("sched worker, 1 CPU slot", lambda d: run_sched(d, args.jobs, args.poll, [])))
    else:
        cold_flags, warm_flags_ = warm
        contenders.append((f"sched worker, 1 CPU slot, warm {' '.join(warm_flags_)}".rstrip(),
                           lambda d: run_sched(d, args.jobs, args.poll, warm_flags_)))
        contenders.append((f"sched worker, 1 CPU slot, cold {' '.join(cold_flags)}",
                           lambda d: run_sched(d, args.jobs, args.poll, cold_flags)))
    contenders.append((f"huey {peers.version()} consumer, 1 thread",
                       lambda d: run_huey(d, args.jobs, args.poll, args.huey_sync, args.huey_delay)))
    for k in (int(x) for x in args.xargs.split(",")):
        contenders.append((f"xargs -P {k} true", lambda d, k=k: run_xargs(args.jobs, k)))
    if args.budget:
        with tempfile.TemporaryDirectory(dir=args.dir, prefix="sched-bench-e2e-") as tmp:
            pilot = run_sched(Path(tmp), 10, args.poll, warm[1] if warm else [])
        sched_runs = sum(name.startswith("sched") for name, _ in contenders) * args.rounds
        fit = int(args.budget / (sched_runs * pilot / 10))
        print(f"pilot: 10 jobs through sched in {pilot:.2f} s (not counted)")
        if fit < args.jobs:
            args.jobs = max(20, fit)
            print(f"NOTE: --jobs lowered to {args.jobs} to fit --budget {args.budget:.0f} s; the goal's figure is "
                  "for 300 jobs (python bench/bench_e2e.py)")
    walls: dict[str, list[float]] = {name: [] for name, _ in contenders}
    for r in range(args.rounds):
        for name, fn in rotated(contenders, r):
            with tempfile.TemporaryDirectory(dir=args.dir, prefix="sched-bench-e2e-") as tmp:
                walls[name].append(fn(Path(tmp)))
            print(f"  round {r + 1}: {name}: {walls[name][-1]:.2f} s", flush=True)
    med = {name: summary(v)["median"] for name, v in walls.items()}
    huey_name = next(n for n in walls if n.startswith("huey"))
    floor = next(n for n in walls if n.startswith("xargs -P 1"))
    rows = []
    for name, values in walls.items():
        s = summary(values)
        rows.append([name, f"{s['min']:.2f}", f"{s['median']:.2f}", f"{s['median'] / args.jobs * 1e3:.1f}",
                     ratio(s["median"], med[huey_name]), ratio(s["median"], med[floor])])
    print(f"\n{args.jobs} jobs, wall seconds from the first submit to the last completion; both queues submitted "
          "one job per call inside that window, the daemon already running (xargs: no queue)")
    print(table(rows, ["contender", "min s", "median s", "ms/job", "vs huey", "vs xargs -P 1"]))
    for name in (n for n in walls if n.startswith("sched")):
        print(f"goal ({name}): <= 3x huey, <= 10x xargs -P 1; now {ratio(med[name], med[huey_name])}, "
              f"{ratio(med[name], med[floor])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

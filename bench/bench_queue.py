"""Queue operations, sched against huey's SqliteHuey in the same run: submit, claim+finish, drain.

    python bench/bench_queue.py [--quick] [--only a,b,c,d,e] [--rounds 5] [--pg postgresql://...]

(a) Submit rate through the API: `JobQueue.submit()` on batches and on one job per call, against
    huey's enqueue (one task per call: huey has no batch enqueue). A fresh database per measurement.
(b) Claim+finish latency with `--depth` jobs queued: `claim()` + `succeed()` of one job, against
    huey's `dequeue()` + `execute()` (runs the no-op task and stores its result), on queues of the
    same depth. Per-operation min, median and p95.
(c) QUEUE-LEVEL drain, no worker: 1 and 8 processes each call `claim()` + `succeed()` in a loop
    until the queue is empty (no worker, no runner process, no run folder or log); huey's side runs
    the same loop over `dequeue()` + `execute()`. Every job must run exactly once in sched (the
    script exits 1 otherwise); duplicates and missing jobs are reported for both.
(d) REAL-WORKER drain: `--worker-jobs` echo jobs drained by 1 and 4 `sched worker --until-empty`
    processes (and by one worker with 4 CPU slots), against huey's own consumer with 1 and 4
    threads running a task that runs `echo` as a subprocess (bench/worker_drain.py says what each
    side does per job). Submitted before the clock on both sides; the daemons' start-up is inside it.
(e) CLI submit: `sched submit` of a queue file whose matrix makes `--cli-jobs` echo jobs, as a
    whole process (the installed `sched` command), against a whole Python process that enqueues as
    many huey tasks; beside them, the same jobs through `JobQueue.submit()` (one batch) and huey's
    enqueue loop inside this process (no interpreter start-up on either).

Fairness: both on SQLite files in the same folder (sched: WAL + synchronous=NORMAL, its own engine;
huey: SqliteHuey's WAL, with synchronous=NORMAL to match, see bench/peers.py; `--huey-sync default`
for its untouched defaults). Contenders are interleaved in every round and the order rotates; the
figures are min (best) and median over rounds. In (c) processes are started and connected before
the clock starts (a barrier), so interpreter start-up is not counted for either.

The deep queues are built by real `submit()` in batches of 10,000 when the submit rate measured in
(a) makes that fit in `--fill-budget` seconds; otherwise they are bulk-loaded with plain INSERTs
(the output says BULK-LOADED) and `submit()` is timed only in (a). huey's deep queue is always
bulk-loaded with the exact rows its enqueue writes.

`--pg URL` adds sched on PostgreSQL to (a)-(c) (fresh databases on that server, dropped at the
end); huey has no PostgreSQL store, so those rows have no peer. Prints figures; no assertion on time.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import peers  # noqa: E402
from bench.benchlib import ROOT, PgDatabases, header, ratio, rotated, summary, table  # noqa: E402
from bench.procs import sched_script, tree_env  # noqa: E402
from bench.worker_drain import huey_drain, sched_drain  # noqa: E402
from scheduler.jobqueue import JobQueue, JobSpec  # noqa: E402

SECTIONS = "abcde"

FILL_CHUNK = 10_000
SLOT = "cpu0"


def specs(prefix: str, start: int, count: int) -> list[JobSpec]:
    return [JobSpec(name=f"{prefix}-{i}", kind="shell", params={"argv": ["true"]}) for i in range(start, start + count)]


# ---- filling queues -------------------------------------------------------------------------------

def fill_sched(url: str, count: int, prefix: str, mode: str) -> float:
    """Queue `count` no-op jobs; returns the seconds it took. mode "submit": real submit() in
    batches of 10,000; "bulk": plain INSERTs of the rows submit() would write."""
    queue = JobQueue(url)
    t0 = time.perf_counter()
    if mode == "submit":
        for start in range(0, count, FILL_CHUNK):
            queue.submit(specs(prefix, start, min(FILL_CHUNK, count - start)))
    else:
        from sqlalchemy import insert

        from scheduler.store.engine import db_now
        from scheduler.store.schema import jobs

        with queue.write() as conn:
            now = db_now(conn)
            for start in range(0, count, FILL_CHUNK):
                conn.execute(insert(jobs), [
                    dict(name=s.name, kind=s.kind, params=s.params, priority=s.priority, gpus=s.gpus, tags=[],
                         status="queued", attempts=0, max_attempts=s.max_attempts, timeout_s=None,
                         preemptible=False, created_at=now)
                    for s in specs(prefix, start, min(FILL_CHUNK, count - start))])
    elapsed = time.perf_counter() - t0
    queue.dispose()
    return elapsed


def fill_huey(path: str, sync: str, count: int) -> float:
    """Bulk-load `count` no-op tasks: the rows huey's own enqueue writes, in one transaction."""
    huey = peers.make_huey(path, sync)
    t0 = time.perf_counter()
    rows = [("bench", huey.serialize_task(huey.noop.s(i)), 0) for i in range(count)]
    with huey.storage.db(commit=True) as curs:
        curs.executemany("insert into task (queue, data, priority) values (?, ?, ?)", rows)
    elapsed = time.perf_counter() - t0
    huey.storage.close()
    return elapsed


# ---- (a) submit ---------------------------------------------------------------------------------------

def time_sched_submit(url: str, count: int, per_call: int) -> float:
    """Seconds to submit `count` jobs, `per_call` per submit(); building the JobSpecs is timed too,
    as huey's side times building its task objects."""
    queue = JobQueue(url)
    t0 = time.perf_counter()
    for start in range(0, count, per_call):
        queue.submit(specs("s", start, min(per_call, count - start)))
    elapsed = time.perf_counter() - t0
    queue.dispose()
    return elapsed


def time_huey_enqueue(path: str, sync: str, count: int) -> float:
    huey = peers.make_huey(path, sync)
    t0 = time.perf_counter()
    for i in range(count):
        huey.noop(i)
    elapsed = time.perf_counter() - t0
    huey.storage.close()
    return elapsed


# ---- (b) claim + finish --------------------------------------------------------------------------------

class SchedOps:
    def __init__(self, url: str):
        self.queue = JobQueue(url)
        self.worker = self.queue.register_worker("bench", os.getpid(), [SLOT])

    def block(self, ops: int) -> list[float]:
        times = []
        for _ in range(ops):
            t0 = time.perf_counter()
            job = self.queue.claim(self.worker, SLOT, 0)
            self.queue.succeed(job.id, self.worker)
            times.append(time.perf_counter() - t0)
        return times


class HueyOps:
    def __init__(self, path: str, sync: str):
        self.huey = peers.make_huey(path, sync)

    def block(self, ops: int) -> list[float]:
        times = []
        for _ in range(ops):
            t0 = time.perf_counter()
            task = self.huey.dequeue()
            self.huey.execute(task)  # what huey's consumer does: run it, store its result
            times.append(time.perf_counter() - t0)
        return times


# ---- (c) drain ---------------------------------------------------------------------------------------

def _sched_drainer(url: str, barrier, out) -> None:
    queue = JobQueue(url)
    worker = queue.register_worker("bench", os.getpid(), [SLOT])
    ran = []
    barrier.wait()
    while True:
        job = queue.claim(worker, SLOT, 0)
        if job is None:
            if not queue.status_counts().get("queued"):
                break
            continue
        ran.append(job.id)
        queue.succeed(job.id, worker)
    out.put((ran, time.monotonic()))
    queue.dispose()


def _huey_drainer(path: str, sync: str, barrier, out) -> None:
    huey = peers.make_huey(path, sync)
    ran = []
    barrier.wait()
    while True:
        task = huey.dequeue()
        if task is None:
            break
        huey.execute(task)
        ran.append(task.args[0])
    out.put((ran, time.monotonic()))


def drain(target, args: tuple, processes: int) -> tuple[float, list[list]]:
    """Start `processes` drainers, release them together, return (seconds to empty, what each ran)."""
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(processes + 1), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, barrier, out)) for _ in range(processes)]
    for p in procs:
        p.start()
    barrier.wait()
    t0 = time.monotonic()
    results = [out.get(timeout=3600) for _ in procs]
    for p in procs:
        p.join()
    return max(end for _, end in results) - t0, [ran for ran, _ in results]


def exactly_once(ran: list[list], expected: set) -> tuple[int, int]:
    runs = Counter(x for r in ran for x in r)
    duplicates = sum(n - 1 for n in runs.values() if n > 1)
    return duplicates, len(expected - set(runs))


def sched_job_ids(url: str) -> set[int]:
    from sqlalchemy import select

    from scheduler.store.schema import jobs

    queue = JobQueue(url)
    with queue.read() as conn:
        ids = set(conn.scalars(select(jobs.c.id)))
    queue.dispose()
    return ids


# ---- (e) the CLI submit -----------------------------------------------------------------------------

HUEY_ENQUEUE_SCRIPT = """
import sys
from bench.peers import make_huey
huey = make_huey(sys.argv[1], sys.argv[2])
for i in range(int(sys.argv[3])):
    huey.run_argv(["echo", str(i)])
"""


def matrix_file(path: Path, count: int) -> Path:
    """A queue file whose one entry's matrix makes `count` shell jobs running `echo I`."""
    values = ", ".join(str(i) for i in range(count))
    path.write_text("jobs:\n"
                    "  - name: \"echo-{i}\"\n"
                    "    kind: shell\n"
                    f"    matrix: {{i: [{values}]}}\n"
                    "    params: {argv: [echo, \"n{i}\"]}\n")
    return path


def time_process(argv: list[str]) -> float:
    """Seconds a whole process takes (interpreter start-up and imports included)."""
    t0 = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, env=tree_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} ... failed: {done.stderr.decode(errors='replace')[-800:]}")
    return elapsed


def cli_submit(sched: str, queue_file: Path, new_url) -> float:
    url = new_url("cli")
    JobQueue(url).dispose()  # an existing queue, as users submit to: made before the clock
    return time_process([sched, "--db", url, "submit", str(queue_file)])


def huey_enqueue_process(path: str, sync: str, count: int) -> float:
    peers.make_huey(path, sync).storage.close()  # its tables made before the clock, as sched's
    return time_process([sys.executable, "-c", HUEY_ENQUEUE_SCRIPT, path, sync, str(count)])


def api_submit(url: str, count: int) -> float:
    """One `submit()` of `count` echo jobs (the queue opened before the clock)."""
    queue = JobQueue(url)
    t0 = time.perf_counter()
    queue.submit([JobSpec(f"echo-{i}", "shell", {"argv": ["echo", f"n{i}"]}) for i in range(count)])
    elapsed = time.perf_counter() - t0
    queue.dispose()
    return elapsed


def huey_enqueue_loop(path: str, sync: str, count: int) -> float:
    huey = peers.make_huey(path, sync)
    t0 = time.perf_counter()
    for i in range(count):
        huey.run_argv(["echo", str(i)])
    elapsed = time.perf_counter() - t0
    huey.storage.close()
    return elapsed


# ---- main ----------------------------------------------------------------------------------------------

def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes for a smoke run (figures not comparable)")
    p.add_argument("--only", default=",".join(SECTIONS), help="sections to run, e.g. d,e (default: all of a,b,c,d,e)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds per measure")
    p.add_argument("--submit-batch", type=int, default=1000, help="(a) jobs per submit() batch")
    p.add_argument("--submit-single", type=int, default=200, help="(a) one-job submit() calls timed per round")
    p.add_argument("--huey-enqueue", type=int, default=1000, help="(a) huey enqueues timed per round")
    p.add_argument("--depth", type=int, default=100_000, help="(b) jobs queued while claim+finish is timed")
    p.add_argument("--latency-ops", type=int, default=200, help="(b) claim+finish operations per round")
    p.add_argument("--drain-jobs", type=int, default=10_000, help="(c) jobs per queue-level drain")
    p.add_argument("--processes", default="1,8", help="(c) drainer process counts")
    p.add_argument("--worker-jobs", type=int, default=5000, help="(d) echo jobs per real-worker drain")
    p.add_argument("--parallel", default="1,4",
                   help="(d) sched worker processes (1 CPU slot each) and huey consumer threads; for each count "
                        "above 1, one sched worker with that many CPU slots too")
    p.add_argument("--cli-jobs", type=int, default=1000, help="(e) jobs in the queue file / huey tasks enqueued")
    p.add_argument("--huey-delay", type=float, default=0.01,
                   help="(d) the huey consumer's first idle-polling interval (its -d; huey's default is 0.1 s)")
    p.add_argument("--fill-budget", type=float, default=240.0,
                   help="seconds submit() may take to build the deep queue; beyond it, bulk-load")
    p.add_argument("--fill", choices=("auto", "submit", "bulk"), default="auto")
    p.add_argument("--pg", metavar="URL", help="also run sched on this PostgreSQL server in (a)-(c) (fresh databases)")
    p.add_argument("--huey-sync", choices=("normal", "default"), default="normal",
                   help="huey's synchronous pragma: NORMAL like sched (default), or SQLite's default FULL")
    p.add_argument("--dir", default=None, help="folder for the SQLite files (default: a temporary folder)")
    args = p.parse_args()
    if args.quick:  # smaller defaults; options given on the command line still win
        p.set_defaults(rounds=3, submit_batch=200, submit_single=30, huey_enqueue=200, depth=20_000, latency_ops=50,
                       drain_jobs=1000, worker_jobs=300, cli_jobs=200)
        args = p.parse_args()
    args.processes = [int(x) for x in args.processes.split(",")]
    args.parallel = [int(x) for x in args.parallel.split(",")]
    args.only = {x.strip() for x in args.only.split(",")}
    if args.only - set(SECTIONS):
        p.error(f"--only takes letters of {','.join(SECTIONS)}")
    return args


class Bench:
    """One run: its folder, databases and options; each section is a method."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.pg = PgDatabases(args.pg) if args.pg else None
        self.tmp = tempfile.TemporaryDirectory(dir=args.dir, prefix="sched-bench-queue-")
        self.files = iter(range(10**9))
        self.backends = [("SQLite", self.sqlite_url)] + ([("PostgreSQL", self.pg.new)] if self.pg else [])
        self.sched_batch_rate: float | None = None
        self.failed = False

    def sqlite_url(self, label: str) -> str:
        return f"sqlite:///{self.tmp.name}/{label}-{next(self.files)}.db"

    def huey_file(self, label: str) -> str:
        return f"{self.tmp.name}/huey-{label}-{next(self.files)}.db"

    def workdir(self, label: str) -> Path:
        path = Path(self.tmp.name, f"{label}-{next(self.files)}")
        path.mkdir()
        return path

    def close(self) -> None:
        self.tmp.cleanup()
        if self.pg:
            self.pg.close()

    # ---- (a)
    def submit(self) -> None:
        args = self.args
        contenders = []
        for label, new_url in self.backends:
            contenders.append((f"sched {label}, submit() {args.submit_batch} jobs per call", args.submit_batch,
                               lambda new_url=new_url: time_sched_submit(new_url("submit"), args.submit_batch,
                                                                         args.submit_batch)))
            contenders.append((f"sched {label}, submit() 1 job per call", args.submit_single,
                               lambda new_url=new_url: time_sched_submit(new_url("single"), args.submit_single, 1)))
        contenders.append(("huey enqueue, 1 task per call (no batch API)", args.huey_enqueue,
                           lambda: time_huey_enqueue(self.huey_file("enqueue"), args.huey_sync, args.huey_enqueue)))
        times: dict[str, list[float]] = {name: [] for name, _, _ in contenders}
        for r in range(args.rounds):
            for name, _, fn in rotated(contenders, r):
                times[name].append(fn())
        rates = {name: (n / min(times[name]), n / summary(times[name])["median"]) for name, n, _ in contenders}
        huey_rate = rates[contenders[-1][0]][1]
        print("(a) submit rate through the API, inside this process, fresh database each time")
        print(table([[name, f"{best:,.0f}", f"{med:,.0f}", ratio(med, huey_rate)]
                     for name, (best, med) in rates.items()],
                    ["contender", "best jobs/s", "median jobs/s", "median vs huey"]))
        self.sched_batch_rate = rates[contenders[0][0]][1]
        # The goal compares like with like, one job per call on both sides; sched's batches are shown
        # against huey's single calls too, since huey has no batch enqueue to set beside them.
        print(f"goal: submit >= 0.5x huey's enqueue rate, one job per call on both sides: now "
              f"{ratio(rates[contenders[1][0]][1], huey_rate)}; sched's {args.submit_batch}-job batches against "
              f"huey's one task per call (huey has no batch enqueue; not like for like): "
              f"{ratio(self.sched_batch_rate, huey_rate)}\n")

    def fill_mode(self) -> str:
        if self.args.fill != "auto":
            return self.args.fill
        if self.sched_batch_rate is None:  # (a) not run: one uncounted batch gives the rate
            self.sched_batch_rate = self.args.submit_batch / time_sched_submit(
                self.sqlite_url("probe"), self.args.submit_batch, self.args.submit_batch)
        return "submit" if self.args.depth / self.sched_batch_rate <= self.args.fill_budget else "bulk"

    # ---- (b)
    def latency(self) -> None:
        args, mode = self.args, self.fill_mode()
        ops = []
        for label, new_url in self.backends:
            url = new_url("deep")
            seconds = fill_sched(url, args.depth, "deep", mode)
            how = ("by submit() in batches of 10,000" if mode == "submit" else
                   "BULK-LOADED with plain INSERTs (submit() at the rate measured in (a) would take "
                   f"~{args.depth / self.sched_batch_rate:,.0f} s)")
            print(f"sched {label} deep queue: {args.depth:,} jobs {how}: {seconds:.1f} s")
            ops.append((f"sched {label}: claim() + succeed()", SchedOps(url)))
        path = self.huey_file("deep")
        seconds = fill_huey(path, args.huey_sync, args.depth)
        print(f"huey deep queue: {args.depth:,} tasks bulk-loaded with the rows its enqueue writes: {seconds:.1f} s")
        ops.append(("huey: dequeue() + execute() (result stored)", HueyOps(path, args.huey_sync)))
        for _, op in ops:
            op.block(5)  # warm connections and statement caches; not counted
        samples: dict[str, list[float]] = {name: [] for name, _ in ops}
        for r in range(args.rounds):
            for name, op in rotated(ops, r):
                samples[name].extend(op.block(args.latency_ops))
        huey_med = summary(samples[ops[-1][0]])["median"]
        print(f"(b) claim+finish latency per job, ~{args.depth:,} queued, "
              f"{args.rounds} x {args.latency_ops} operations")
        rows = []
        for name, values in samples.items():
            s = summary(values)
            rows.append([name, f"{s['min'] * 1e3:.2f}", f"{s['median'] * 1e3:.2f}", f"{s['p95'] * 1e3:.2f}",
                         ratio(s["median"], huey_med)])
        print(table(rows, ["contender", "min ms", "median ms", "p95 ms", "median vs huey"]))
        print(f"goal: within 2x of huey; now {ratio(summary(samples[ops[0][0]])['median'], huey_med)}\n")

    # ---- (c)
    def queue_drain(self) -> None:
        args, mode = self.args, self.fill_mode()
        configs = []
        for procs in args.processes:
            for label, new_url in self.backends:
                configs.append((f"sched {label}", procs, new_url))
            configs.append(("huey", procs, None))
        drains: dict[tuple[str, int], list[float]] = {(name, p): [] for name, p, _ in configs}
        checks: dict[tuple[str, int], list[tuple[int, int]]] = {(name, p): [] for name, p, _ in configs}
        for r in range(args.rounds):
            for name, procs, new_url in rotated(configs, r):
                if new_url is None:
                    path = self.huey_file("drain")
                    fill_huey(path, args.huey_sync, args.drain_jobs)
                    seconds, ran = drain(_huey_drainer, (path, args.huey_sync), procs)
                    expected = set(range(args.drain_jobs))
                else:
                    url = new_url("drain")
                    fill_sched(url, args.drain_jobs, "drain", mode)
                    seconds, ran = drain(_sched_drainer, (url,), procs)
                    expected = sched_job_ids(url)
                drains[(name, procs)].append(seconds)
                checks[(name, procs)].append(exactly_once(ran, expected))
        print(f"(c) QUEUE-LEVEL drain, no worker: {args.drain_jobs:,} no-op jobs "
              f"({'submit()' if mode == 'submit' else 'BULK-LOADED'} queues), N processes each calling "
              "claim() + succeed() (huey: dequeue() + execute()) until empty; no worker, no runner, no run folder "
              "or log: the queue's own cost, not what a worker drains (that is (d))")
        rows, goal = [], []
        for (name, procs), values in drains.items():
            s = summary(values)
            huey_s = summary(drains[("huey", procs)])
            dup = sum(d for d, _ in checks[(name, procs)])
            miss = sum(m for _, m in checks[(name, procs)])
            if name.startswith("sched") and (dup or miss):
                self.failed = True
            rows.append([f"{name}, {procs} process{'es' if procs > 1 else ''}",
                         f"{args.drain_jobs / s['min']:,.0f}", f"{args.drain_jobs / s['median']:,.0f}",
                         ratio(huey_s["median"], s["median"]), str(dup), str(miss)])
            if name == "sched SQLite":
                goal.append(f"{procs} proc: {ratio(huey_s['median'], s['median'])}")
        print(table(rows, ["contender", "best jobs/s", "median jobs/s", "median vs huey", "duplicates", "missing"]))
        print(f"goal: queue-level drain rate within 2x of huey (>= 0.5x); now {', '.join(goal)}")
        print("exactly-once (sched): " + ("VIOLATED: see duplicates/missing above" if self.failed else
                                          f"every job ran once in all {len(configs) * args.rounds} drains"))
        if (os.cpu_count() or 1) < max(args.processes):
            print(f"note: {os.cpu_count()} cores; {max(args.processes)} processes contend for the cores and for "
                  "SQLite's single writer, so more processes cannot beat one here")
        print()

    # ---- (d)
    def worker_drain(self) -> None:
        args = self.args
        poll = 0.05
        configs = []  # (label, side, count, runs)
        for n in args.parallel:
            configs.append((f"sched, {n} worker{'s' if n > 1 else ''} x 1 CPU slot", "sched", n,
                            lambda d, n=n: sched_drain(d, args.worker_jobs, n, 1, poll)))
            if n > 1:
                configs.append((f"sched, 1 worker x {n} CPU slots", "sched", n,
                                lambda d, n=n: sched_drain(d, args.worker_jobs, 1, n, poll)))
            configs.append((f"huey consumer, {n} thread{'s' if n > 1 else ''}", "huey", n,
                            lambda d, n=n: huey_drain(d, args.worker_jobs, n, args.huey_sync, args.huey_delay, poll)))
        results: dict[str, list] = {label: [] for label, *_ in configs}
        for r in range(args.rounds):
            for label, _, _, fn in rotated(configs, r):
                results[label].append(fn(self.workdir("worker-drain")))
                print(f"  round {r + 1}: {label}: {results[label][-1].wall_s:.2f} s", flush=True)
        huey_of = {n: summary([d.wall_s for d in results[label]])["median"]
                   for label, side, n, _ in configs if side == "huey"}
        print(f"(d) REAL-WORKER drain: {args.worker_jobs:,} echo jobs, submitted before the clock; the clock runs "
              "from launching the daemons to the last completion each side recorded (their start-up included)")
        print("    per job, sched: worker claims a `shell` job, a runner process (reused, warm spare) makes its run "
              "folder and log and runs `echo I` as a child, the worker records success; huey: a consumer thread "
              "dequeues, runs `echo I` with subprocess.run, stores the result")
        print(f"    durability: both SQLite WAL; sched synchronous=NORMAL, huey "
              f"{'synchronous=NORMAL (as sched)' if args.huey_sync == 'normal' else 'synchronous=FULL (its default)'}; "
              f"huey consumer -d {args.huey_delay}, sched worker with its default flags")
        rows, problems = [], []
        for label, side, n, _ in configs:
            walls = summary([d.wall_s for d in results[label]])
            first = summary([d.first_s for d in results[label]])["median"]
            steady = statistics.median(d.steady_rate for d in results[label])
            rows.append([label, f"{args.worker_jobs / walls['min']:,.0f}", f"{args.worker_jobs / walls['median']:,.0f}",
                         ratio(huey_of[n], walls["median"]), f"{first:.2f}", f"{steady:,.0f}"])
            problems += [f"{label}: {d.problems}" for d in results[label] if d.problems]
        print(table(rows, ["contender", "best jobs/s", "median jobs/s", "median vs huey", "first done s",
                           "steady jobs/s"]))
        print("    vs huey: against the consumer with as many threads as sched has workers or slots; first done: "
              "launch to the first completion (start-up); steady: jobs/s after it")
        if problems:
            self.failed = True
            print("PROBLEMS: " + "; ".join(problems))
        else:
            print(f"every job succeeded exactly once in all {len(configs) * args.rounds} drains (sched: one attempt "
                  "each; huey: a result each)")
        if (os.cpu_count() or 1) < max(args.parallel):
            print(f"note: {os.cpu_count()} cores: {max(args.parallel)} workers or threads share them")
        print()

    # ---- (e)
    def cli_submit(self) -> None:
        args = self.args
        sched, note = sched_script()
        queue_file = matrix_file(Path(self.tmp.name, "matrix.yaml"), args.cli_jobs)
        n = args.cli_jobs
        contenders = [
            ("sched submit FILE (process)", "cli", lambda: cli_submit(sched, queue_file, self.sqlite_url)),
            ("python script: huey enqueue loop (process)", "huey-cli",
             lambda: huey_enqueue_process(self.huey_file("cli"), args.huey_sync, n)),
            ("sched JobQueue.submit(), one batch (in process)", "api", lambda: api_submit(self.sqlite_url("api"), n)),
            ("huey enqueue loop (in process)", "huey-api",
             lambda: huey_enqueue_loop(self.huey_file("api"), args.huey_sync, n)),
        ]
        times: dict[str, list[float]] = {key: [] for _, key, _ in contenders}
        for r in range(args.rounds):
            for _, key, fn in rotated(contenders, r):
                times[key].append(fn())
        med = {key: summary(values)["median"] for key, values in times.items()}
        print(f"(e) submit as users do it: `sched submit` of a queue file whose matrix makes {n:,} `shell` echo jobs "
              f"(the {sched} command), against a python script enqueuing {n:,} huey echo tasks one per call; "
              "(process) rows are whole processes, interpreter start-up, imports and checks included; (in process) "
              "rows are the same jobs through each library's API in this warm process; each time a fresh queue, "
              "made before the clock (users submit to an existing queue)")
        print("    'vs huey, alike': process against huey's process, in process against huey's in process; "
              "'vs huey loop': against huey's in-process enqueue loop")
        if note:
            print("    " + note)
        rows = []
        for label, key, _ in contenders:
            s = summary(times[key])
            peer = "huey-cli" if key in ("cli", "huey-cli") else "huey-api"
            rows.append([label, f"{n / s['min']:,.0f}", f"{n / s['median']:,.0f}", f"{s['median']:.3f}",
                         ratio(med[peer], s["median"]), ratio(med["huey-api"], s["median"])])
        print(table(rows, ["contender", "best jobs/s", "median jobs/s", "median s", "vs huey, alike",
                           "vs huey loop"]))
        print()


def main() -> int:
    args = parse_args()
    if not peers.available():
        print(f"bench_queue: {peers.HUEY_MISSING}")
        return 2
    bench = Bench(args)
    huey_sync = ("synchronous=NORMAL, as sched" if args.huey_sync == "normal"
                 else "SQLite's default synchronous=FULL")
    header(f"queue operations: sched (SQLite WAL, synchronous=NORMAL) vs huey {peers.version()} SqliteHuey "
           f"(WAL, {huey_sync}); SQLite files in {bench.tmp.name}")
    if bench.pg:
        print("PostgreSQL: sched only (huey has no PostgreSQL store), in (a)-(c)")
    print(f"sections {','.join(sorted(args.only))}; {args.rounds} rounds per measure, contenders interleaved, "
          "order rotated each round; best = min time\n")
    sections = {"a": bench.submit, "b": bench.latency, "c": bench.queue_drain, "d": bench.worker_drain,
                "e": bench.cli_submit}
    try:
        for key in SECTIONS:
            if key in args.only:
                sections[key]()
    finally:
        bench.close()
    return 1 if bench.failed else 0


if __name__ == "__main__":
    sys.exit(main())

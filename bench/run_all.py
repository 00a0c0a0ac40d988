"""Every bench in turn, with moderate settings, and the machine they ran on: one command for docs/benchmarks.md.

    python bench/run_all.py [--quick] [--only queue,e2e] [--skip finetune] [--pg URL] [--out FILE]

Runs, in this order (each as its own process, output streamed as it comes):
  startup   bench/bench_startup.py --repeats 10 --imports
  queue     bench/bench_queue.py --rounds 3            (+ --pg URL when given)
  e2e       bench/bench_e2e.py --jobs 300 --rounds 3 --budget 300
  gap       bench/bench_gap.py --rounds 2
  finetune  bench/bench_finetune.py --rounds 3
  jobstart  bench/profile_startup.py --rounds 3        (a warm fine-tune's start-up, by phase)
  status    bench/bench_status.py --rounds 10
  packing   bench/bench_packing.py                    (a simulation: seconds, no GPU needed)

About 25-35 minutes on an idle 2-core machine today (the e2e bench lowers its job count to fit its
budget while per-job start-up is slow, and says so). Figures are only fit to publish from an idle
machine: every bench prints the load average it started under and warns when the machine is busy.
Before each bench this waits (up to `--settle` seconds) for the previous bench's own load to leave
the 1-minute average, so that warning means other work, not the bench before; a bench that still
starts busy says so, and its figures are not published.
`--quick` runs every bench's smoke settings (minutes; figures not comparable). Needs huey for the
queue and e2e benches: pip install -e '.[bench]'.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchlib import ROOT, busy_note, load_average, machine_lines, settle  # noqa: E402

BENCHES = {
    "startup": (["bench/bench_startup.py", "--repeats", "10", "--imports"], ["bench/bench_startup.py", "--quick"]),
    "queue": (["bench/bench_queue.py", "--rounds", "3"], ["bench/bench_queue.py", "--quick"]),
    "e2e": (["bench/bench_e2e.py", "--jobs", "300", "--rounds", "3", "--budget", "300"],
            ["bench/bench_e2e.py", "--quick"]),
    "gap": (["bench/bench_gap.py", "--rounds", "2"], ["bench/bench_gap.py", "--quick"]),
    "finetune": (["bench/bench_finetune.py", "--rounds", "3"], ["bench/bench_finetune.py", "--quick"]),
    "jobstart": (["bench/profile_startup.py", "--rounds", "3"], ["bench/profile_startup.py", "--quick"]),
    "status": (["bench/bench_status.py", "--rounds", "10"], ["bench/bench_status.py", "--quick"]),
    "packing": (["bench/bench_packing.py"], ["bench/bench_packing.py"]),  # deterministic: quick is the same
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="every bench's smoke settings (figures not comparable)")
    p.add_argument("--only", default=None, help=f"comma-separated subset of: {', '.join(BENCHES)}")
    p.add_argument("--skip", default="", help="comma-separated benches to leave out")
    p.add_argument("--pg", metavar="URL", help="also run the queue bench on this PostgreSQL server")
    p.add_argument("--out", default=None, help="also write everything printed to this file")
    p.add_argument("--settle", type=float, default=240.0,
                   help="seconds to wait at most, before each bench, for the load to fall below the warning level")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    chosen = args.only.split(",") if args.only else list(BENCHES)
    unknown = [b for b in chosen + [s for s in args.skip.split(",") if s] if b not in BENCHES]
    if unknown:
        print(f"unknown bench(es): {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
        return 2
    chosen = [b for b in chosen if b not in args.skip.split(",")]
    out = open(args.out, "w", encoding="utf-8") if args.out else None

    def emit(line: str = "") -> None:
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()

    emit("sched benchmarks: python bench/run_all.py" + (" --quick" if args.quick else ""))
    for line in machine_lines():
        emit(line)
    results = {}
    started = time.perf_counter()
    for name in chosen:
        argv = list(BENCHES[name][1 if args.quick else 0])
        if name == "queue" and args.pg:
            argv += ["--pg", args.pg]
        emit()
        waited = settle(0 if args.quick else args.settle)
        if waited >= 1:
            emit(f"(waited {waited:.0f} s for the load to settle: load average {load_average()})")
        if busy_note() and not args.quick:
            emit(f"(still busy after {args.settle:.0f} s: this bench's figures are not fit to publish)")
        emit(f"=== {name}: python {' '.join(argv)}")
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, *argv], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        for line in proc.stdout:
            emit(line.rstrip("\n"))
        code = proc.wait()
        results[name] = (code, time.perf_counter() - t0)
        emit(f"=== {name}: exit {code}, {results[name][1]:.0f} s")
    emit()
    emit(f"done in {time.perf_counter() - started:.0f} s; load average at the end {load_average()}")
    for name, (code, seconds) in results.items():
        emit(f"  {name:<9} {'ok' if code == 0 else f'FAILED (exit {code})':<16} {seconds:6.0f} s")
    if out:
        out.close()
    return 0 if all(code == 0 for code, _ in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Where a warm fine-tune's start-up goes: its phases from the claim to the first training step,
next to what a plain Trainer script spends on the same model after its imports.

    python bench/profile_startup.py [--rows 4000] [--rounds 3] [--cprofile] [--no-plain] [--quick]

Runs the fine-tune of bench_finetune.py (bench/finetune_runs.py): a queue file of two identical
`finetune` jobs submitted to a running `sched worker` with SCHED_PROFILE_STARTUP=1, the second
(on the warm spare) profiled; `--rounds` such pairs. The runner writes the phases to the job's log
(pipeline/startup.py); this prints their medians, and the same for bench/plain_trainer.py runs.

The job's own work is what the plain script also does: building the model (`from_pretrained`) and
the first optimizer step, as long as they take in the plain script (the medians of its runs, which
alternate with sched's). Everything else from the claim on is what sched adds ("beyond own work"),
including anything that makes those two phases slower in sched than in the plain script (on a
machine with few cores, the slot's next spare runner importing torch beside the job); issue 23's
goal is at most 0.3 s of it. With --no-plain, own work is sched's own two phases, which hides such
a slow-down: the line says so. `--cprofile` also prints the top functions of a cProfile of
the last measured job's start-up (SCHED_PROFILE_STARTUP=cprofile: `startup.prof` in its run folder).
"""

from __future__ import annotations

import argparse
import os
import pstats
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchlib import header, summary, table  # noqa: E402
from bench.finetune_runs import Run, SchedWorker, bench_env, has_gpu, job_params, prepare, run_plain  # noqa: E402

OWN_WORK = ("model loaded", "first training step")  # phases a plain script pays as well


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=4000, help="training rows (the job holds out 10%% more for eval)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--rounds", type=int, default=3, help="profiled jobs (each after an uncounted one)")
    p.add_argument("--model", default="tiny", help='"tiny" (built locally) or a local model folder')
    p.add_argument("--gpus", default=None, help="the worker's --gpus: none or one GPU index (default: 0 if present)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads of both sides")
    p.add_argument("--cprofile", action="store_true", help="also print a cProfile of the last job's start-up")
    p.add_argument("--no-plain", action="store_true", help="skip the plain Trainer script")
    p.add_argument("--workdir", default=None, help="scratch folder (default: temporary)")
    p.add_argument("--quick", action="store_true", help="800 rows, 2 rounds")
    args = p.parse_args()
    if args.quick:  # smaller defaults; options given on the command line still win
        p.set_defaults(rows=800, rounds=2)
        args = p.parse_args()
    args.gpus = args.gpus or ("0" if has_gpu() else "none")
    return args


def phase_table(runs: list[Run]) -> tuple[list[list[str]], float, float]:
    """Rows (phase, median s, min s), the median total, and the median of the own-work phases."""
    names = [phase for phase, _ in runs[0].phases]
    rows = [[p, f"{summary([dict(r.phases).get(p, 0.0) for r in runs])['median']:.3f}",
             f"{min(dict(r.phases).get(p, 0.0) for r in runs):.3f}"] for p in names]
    totals = [sum(s for _, s in r.phases) for r in runs]
    own = [sum(s for p, s in r.phases if p in OWN_WORK) for r in runs]
    return rows, summary(totals)["median"], summary(own)["median"]


def beyond_line(total: float, sched_own: float, plain_own: float | None) -> str:
    """What sched adds to the claim -> first step span, against the plain script's own work when
    it ran (sched's own phases otherwise, which cannot show them slowed down)."""
    own, source = ((plain_own, "the plain script's median") if plain_own is not None
                   else (sched_own, "sched's own phases, no plain run: hides a slower first step"))
    return (f"claim -> first step: {total:.3f} s median; beyond own work ({' + '.join(OWN_WORK)}, "
            f"{own:.3f} s, {source}): {total - own:.3f} s (goal <= 0.3 s)")


def print_cprofile(workdir: Path, rounds: int, top: int = 25) -> None:
    found = sorted(workdir.glob(f"runs/*ft{rounds}/startup.prof")) or sorted(workdir.glob("runs/**/startup.prof"))
    if not found:
        print("no startup.prof found (SCHED_PROFILE_STARTUP=cprofile)")
        return
    print(f"\ncProfile of the last profiled job's start-up ({found[-1]}), top {top} by cumulative time:")
    pstats.Stats(str(found[-1]), stream=sys.stdout).sort_stats("cumulative").print_stats(top)


def main() -> int:
    args = parse_args()
    header("start-up of a warm fine-tune: claim to first training step, by phase (SCHED_PROFILE_STARTUP=1)")
    tmp = tempfile.TemporaryDirectory(prefix="sched-profile-startup-") if args.workdir is None else None
    workdir = Path(args.workdir or tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    env = bench_env(workdir, args.threads)
    if args.cprofile:
        env["SCHED_PROFILE_STARTUP"] = "cprofile"
    worker = None
    try:
        prepare(args, workdir)
        print(f"model {args.model}; {'CPU' if args.gpus == 'none' else 'GPU ' + args.gpus}, {args.threads} threads; "
              f"{args.train_rows} train rows, {args.val_rows} val rows, batch {args.batch}, "
              f"max_length {args.max_length}")
        worker = SchedWorker(workdir, args.gpus, env)
        warm, plain = [], []
        for i in range(args.rounds):  # alternated: a drift in the machine's speed touches both sides
            warm.append(worker.run_pair(job_params(args))[1])
            if not args.no_plain:
                plain.append(run_plain(args, workdir, env, f"{i}"))
    except BaseException:
        if tmp is not None:
            tmp.cleanup()
        raise
    finally:
        if worker is not None:
            worker.close()
    rows, total, sched_own = phase_table(warm)
    print(f"\nsched: the second of two fine-tunes in one queue file (warm spare), {args.rounds} jobs")
    print(table(rows, ["phase (ends with)", "median s", "min s"]))
    if not all(r.warm for r in warm):
        print("WARNING: a profiled job did not start on a warm runner (see its log)")
    plain_own = None
    if plain:
        plain_rows, _, plain_own = phase_table(plain)
        after = summary([r.after_imports for r in plain])["median"]
        print(f"\nplain Trainer script, {args.rounds} runs (its first phase includes the interpreter's start)")
        print(table(plain_rows, ["phase (ends with)", "median s", "min s"]))
        print(f"end of imports -> first step: {after:.3f} s median")
    print("\n" + beyond_line(total, sched_own, plain_own))
    if args.cprofile:
        print_cprofile(workdir, worker.rounds)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fine-tune throughput and start-up: a `finetune` job through a warm `sched worker` against a plain
Hugging Face Trainer script, on the same model, rows, epochs, batch size, max_length and loss.

    python bench/bench_finetune.py [--rows 4000] [--epochs 2] [--batch 32] [--max-length 128]
                                   [--rounds 3] [--model tiny] [--gpus none|0] [--quick]

The sides (bench/finetune_runs.py says how each is run):
- sched: the job as users run it: a queue file of two identical `finetune` jobs submitted with
  `sched submit` to a running `sched worker` on one slot; the second job, which starts on the
  spare runner warmed while the first trained, is the one measured. Its samples/s is the
  Trainer's own figure the job records in the database; its start-up is the runner's profile
  in the job's log (SCHED_PROFILE_STARTUP=1), from the claim to the end of the first step.
- plain: bench/plain_trainer.py, a fresh `python` process: pandas, `tokenizer(...)`,
  `DataCollatorWithPadding`, `Trainer` with `train_sampling_strategy="group_by_length"`, on the
  job's own train/val rows written to CSV. Its start-up runs from the process's start (imports
  counted) and, beside it, from the end of its imports.

Same on both sides: the model folder (the tiny preset, built once, by default), the rows, epochs,
batch 32 and eval batch 64, max_length, lr, 10% warm-up, weight decay 0.01, linear schedule, seed 0,
precision (bf16 where the GPU computes it natively, else fp16 on a GPU, fp32 on the CPU), CPU
threads, an evaluation and a checkpoint each epoch with the best (accuracy) reloaded at the end, and
the loss: plain cross-entropy (sched's focal_gamma 0, label_smoothing 0, no SWA, no early stopping;
the Trainer's built-in loss on the plain side). Sched also does what it always does (the
tokenization cache, health checks, metrics and progress to the database, the final scoring of the
validation rows); the plain side's `trainer.evaluate()` at the end is not timed either.

Samples/s is rows x epochs / the Trainer's `train_runtime` on both sides. One uncounted round
first (the worker's first job, the page cache, the token cache); then `--rounds` rounds, the order
rotated each round. Figures: best and median; the ratio uses medians. Prints figures; not a test.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchlib import header, ratio, rotated, summary, table  # noqa: E402
from bench.finetune_runs import Run, SchedWorker, bench_env, has_gpu, job_params, prepare, run_plain  # noqa: E402

SCHED, PLAIN = "sched: finetune job, warm worker", "plain: Trainer script"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=4000, help="training rows (the job holds out 10%% more for eval)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--model", default="tiny", help='"tiny" (built locally) or a local model folder')
    p.add_argument("--gpus", default=None, help="the worker's --gpus: none (a CPU slot) or one GPU index "
                                                "(default: 0 when a GPU is present)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads of both sides")
    p.add_argument("--workdir", default=None, help="scratch folder (default: temporary)")
    p.add_argument("--quick", action="store_true", help="800 rows, 1 epoch, 3 rounds (a smoke run)")
    args = p.parse_args()
    if args.quick:  # smaller defaults; options given on the command line still win
        p.set_defaults(rows=800, epochs=1)
        args = p.parse_args()
    args.gpus = args.gpus or ("0" if has_gpu() else "none")
    return args


def describe(args) -> None:
    device = "CPU" if args.gpus == "none" else f"GPU {args.gpus}"
    print(f"model {args.model}; {device}, {args.threads} CPU threads; {args.train_rows} train rows, {args.val_rows} "
          f"val rows, {args.epochs} epoch(s), batch {args.batch}, max_length {args.max_length}, lr {args.lr}; "
          "loss: cross-entropy on both sides")
    print(f"  {SCHED}: `sched submit` of a queue file with two identical finetune jobs to a running `sched "
          "worker`; the second (on the warm spare) is measured; samples/s from its database metric, start-up "
          "from claim to first step (its log's profile)")
    print(f"  {PLAIN}: `python bench/plain_trainer.py` per run (pandas, tokenizer(), DataCollatorWithPadding, "
          "Trainer with group_by_length); start-up from process start (imports included) and after imports")


def one_round(name: str, worker: SchedWorker, args, workdir: Path, env, label: str) -> tuple[Run, Run | None]:
    """(the measured run, the sched pair's uncounted first job or None)."""
    if name == SCHED:
        lead, run = worker.run_pair(job_params(args))
        return run, lead
    return run_plain(args, workdir, env, label), None


def report(args, runs: dict[str, list[Run]], leads: list[Run]) -> None:
    plain_med = summary([r.samples_per_s for r in runs[PLAIN]])["median"]
    rows = []
    for name, got in runs.items():
        speed, start = summary([r.samples_per_s for r in got]), summary([r.to_first_step for r in got])
        rows.append([name, f"{speed['max']:.1f}", f"{speed['median']:.1f}", ratio(speed["median"], plain_med),
                     f"{start['min']:.2f}", f"{start['median']:.2f}"])
    print(f"\ntraining samples/s and seconds to the first training step, {args.rounds} rounds, order rotated")
    print(table(rows, ["contender", "best/s", "median/s", "vs plain", "start min s", "start median s"]))
    after = summary([r.after_imports for r in runs[PLAIN]])
    cold = summary([r.to_first_step for r in leads])
    print(f"start: sched from the claim (the runner's imports were done ahead); plain from process start, imports "
          f"included; plain after its imports: {after['min']:.2f} s min, {after['median']:.2f} s median")
    print(f"sched's uncounted first job of each pair (a runner started for it, imports included): "
          f"{cold['median']:.2f} s median from claim to first step")
    if not all(r.warm for r in runs[SCHED]):
        print("WARNING: a measured sched job did not start on a warm runner (see its log)")
    sched_med = summary([r.samples_per_s for r in runs[SCHED]])["median"]
    print(f"ratio sched/plain samples/s (medians): {ratio(sched_med, plain_med)}")
    print_phases(runs)


def print_phases(runs: dict[str, list[Run]]) -> None:
    """Median seconds of each start-up phase, per side (phases differ: each side's own, in order)."""
    for name, got in runs.items():
        names = [phase for phase, _ in got[0].phases]
        medians = [summary([dict(r.phases).get(p, 0.0) for r in got])["median"] for p in names]
        print(f"\n{name}: start-up phases, median seconds")
        print(table([[p, f"{m:.3f}"] for p, m in zip(names, medians)], ["phase (ends with)", "seconds"]))


def main() -> int:
    args = parse_args()
    header("fine-tune: a sched job through a warm worker vs a plain Trainer script (same loss, rows, model)")
    tmp = tempfile.TemporaryDirectory(prefix="sched-bench-finetune-") if args.workdir is None else None
    workdir = Path(args.workdir or tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    env = bench_env(workdir, args.threads)
    worker = None
    try:
        prepare(args, workdir)
        describe(args)
        worker = SchedWorker(workdir, args.gpus, env)
        contenders = [SCHED, PLAIN]
        for name in contenders:
            one_round(name, worker, args, workdir, env, "warmup")
        print("warm-up: one round of each side, not counted", flush=True)
        runs: dict[str, list[Run]] = {name: [] for name in contenders}
        leads: list[Run] = []
        for r in range(args.rounds):
            for name in rotated(contenders, r):
                run, lead = one_round(name, worker, args, workdir, env, f"{r}")
                runs[name].append(run)
                leads += [lead] if lead else []
                print(f"  round {r + 1}: {name}: {run.samples_per_s:.1f} samples/s, {run.to_first_step:.2f} s to the "
                      "first step", flush=True)
        report(args, runs, leads)
    finally:
        if worker is not None:
            worker.close()
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

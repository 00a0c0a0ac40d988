"""Benchmark: what the median pruner saves in a `tune` study, against the same study without pruning.

    python bench/bench_tune_pruning.py [--rows 1500] [--trials 10] [--epochs 3] [--sampler random]
                                       [--seed 7] [--workdir /tmp/sched-bench-tune]

Runs the real `tune` job (jobs/tune/, in this process, with a SQLite study) twice on the first
`--rows` rows of the shipped sample with the tiny model: once with `pruner: median` and once with
`pruner: none`, with the same sampler and seed. With the random sampler (the default) both studies
propose the same params trial for trial (each trial draws from seed + its number), so the
comparison is controlled: pruning can only save epochs, or lose the best trial by stopping it.
With `--sampler tpe` the proposals after the startup trials follow each study's own history.

Prints, per study: trial-epochs used (epochs actually trained, summed over trials), the best value
reached, and the trial-epochs each needed to first reach the no-pruning study's best value; then
the trial-epochs the pruner saved (over the whole study, and to reach that best value).
Prints figures; it is not a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATA = Path(__file__).resolve().parents[1] / "data"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1500, help="rows of data/reviews_train.csv (10%% held out)")
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--sampler", choices=("random", "tpe"), default="random")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--metric", choices=("val_accuracy", "val_f1"), default="val_f1")
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "sched-bench-tune"))
    return p.parse_args()


def build_model(args, root: Path) -> str:
    """One tiny model for both studies: building it trains a tokenizer, which is not bit-for-bit
    repeatable, so two builds would make the two studies differ beyond the pruner."""
    import pandas as pd

    from pipeline.models import resolve_model_source

    texts = pd.read_csv(DATA / "reviews_train.csv")["review"].head(args.rows).astype(str).tolist()
    return resolve_model_source("tiny", str(root), texts)


def run_study(args, pruner: str, workdir: Path, model: str) -> tuple[list, float]:
    """Run one tune job; returns (trials sorted by number, seconds)."""
    from functools import partial

    import optuna

    from jobs import tune
    from jobs.context import JobContext, MemoryReporter
    from scheduler.store.studies import open_storage

    params = tune.Params.model_validate({
        "n_trials": args.trials, "sampler": args.sampler, "seed": args.seed, "startup_trials": 4,
        "metric": args.metric, "pruner": pruner, "pruner_startup_trials": 3, "pruner_warmup_epochs": 1,
        "space": {"lr": {"type": "float", "low": 5e-4, "high": 1e-2, "log": True},
                  "batch_size": {"type": "categorical", "choices": [16, 32]},
                  "warmup_ratio": {"type": "float", "low": 0.0, "high": 0.2}},
        "finetune": {"model": model, "train": str(DATA / "reviews_train.csv"), "max_train_rows": args.rows,
                     "epochs": args.epochs, "max_length": 64, "precision": "fp32"},
    })
    url = f"sqlite:///{workdir / 'study.db'}"
    ctx = JobContext(job_id=1, name=f"bench-{pruner}", output_dir=workdir / "run", device="cpu",
                     reporter=MemoryReporter(), db_url=url, studies=partial(open_storage, url))
    start = time.perf_counter()
    tune.run(params, ctx)
    seconds = time.perf_counter() - start
    storage = tune.open_storage(url)
    study = optuna.load_study(study_name=ctx.name, storage=storage)
    trials = sorted(study.get_trials(deepcopy=True), key=lambda t: t.number)
    storage.engine.dispose()
    return trials, seconds


def epochs_of(trial) -> int:
    return len(trial.intermediate_values)


def epochs_to_reach(trials, target: float) -> int | None:
    """Trial-epochs spent until a complete trial first scored >= target (None: never)."""
    used = 0
    for trial in trials:
        used += epochs_of(trial)
        if trial.state.name == "COMPLETE" and trial.value is not None and trial.value >= target - 1e-12:
            return used
    return None


def show(name: str, trials, seconds: float) -> None:
    print(f"\n{name}: {seconds:.0f}s")
    print(f"  {'trial':>5} {'state':>8} {'epochs':>6} {'value':>7}  params")
    for t in trials:
        value = "" if t.value is None else f"{t.value:.4f}"
        last = max(t.intermediate_values.values(), default=float('nan'))
        shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items())
        print(f"  {t.number:>5} {t.state.name:>8} {epochs_of(t):>6} {value or f'({last:.4f})':>7}  {shown}")


def main() -> None:
    args = parse_args()
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    root = Path(args.workdir)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    os.environ["SCHED_CACHE_DIR"] = str(root / "token-cache")  # shared: both studies tokenize once
    model = build_model(args, root)
    results = {}
    for pruner in ("none", "median"):
        workdir = root / pruner
        workdir.mkdir(parents=True)
        results[pruner] = run_study(args, pruner, workdir, model)
        show(f"pruner: {pruner}", *results[pruner])

    plain, pruned = results["none"][0], results["median"][0]
    best_plain = max(t.value for t in plain if t.state.name == "COMPLETE")
    best_pruned = max((t.value for t in pruned if t.state.name == "COMPLETE"), default=float("nan"))
    used_plain, used_pruned = sum(map(epochs_of, plain)), sum(map(epochs_of, pruned))
    reach_plain, reach_pruned = epochs_to_reach(plain, best_plain), epochs_to_reach(pruned, best_plain)
    print(f"\n{args.trials} trials x {args.epochs} epochs, {args.rows} rows, sampler {args.sampler} "
          f"(seed {args.seed}), metric {args.metric}")
    print(f"{'':24} {'no pruning':>12} {'median':>12}")
    print(f"{'trial-epochs used':24} {used_plain:>12} {used_pruned:>12}")
    print(f"{'best value':24} {best_plain:>12.4f} {best_pruned:>12.4f}")
    print(f"{'pruned trials':24} {0:>12} {sum(t.state.name == 'PRUNED' for t in pruned):>12}")
    print(f"{'wall time (s)':24} {results['none'][1]:>12.0f} {results['median'][1]:>12.0f}")
    print(f"{'trial-epochs to reach':24} {reach_plain:>12} {str(reach_pruned) if reach_pruned else 'never':>12}"
          f"   (first complete trial >= {best_plain:.4f})")
    print(f"saved by the pruner: {used_plain - used_pruned} of {used_plain} trial-epochs over the study "
          f"({(used_plain - used_pruned) / used_plain:.0%})"
          + (f"; {reach_plain - reach_pruned} to reach the no-pruning best" if reach_pruned else
             "; it never reached the no-pruning best (it pruned that trial)"))


if __name__ == "__main__":
    main()

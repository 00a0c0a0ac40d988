"""Benchmark: every `ensemble` weighting strategy on the same few tiny fine-tunes, through the queue.

    python bench/ensemble_strategies.py [--rows 2000] [--epochs 2] [--max-length 64]
                                        [--workdir /tmp/sched-bench-ensemble]

Submits three tiny fine-tunes of the shipped sample (data/reviews_train.csv, first --rows rows,
different seeds and learning rates, one shared validation split) and one `ensemble` job per
strategy, runs a CPU worker until the queue is empty, then prints each ensemble's validation
accuracy next to the best member's. `val_accuracy_cv` is the cross-validated accuracy of fitted
weights (the fair number for `optimized`). Prints figures; it is not a test.
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

MEMBERS = {"ft-s1": {"seed": 1, "lr": 2e-3}, "ft-s2": {"seed": 2, "lr": 3e-3}, "ft-s3": {"seed": 3, "lr": 1e-3}}
STRATEGIES = {
    "accuracy": {"weighting": "accuracy"},
    "accuracy-logits": {"weighting": "accuracy", "vote": "logits"},
    "f1": {"weighting": "f1"},
    "uniform": {"weighting": "uniform"},
    "sharpened": {"weighting": "sharpened", "temperature": 0.01},
    "optimized-logloss": {"weighting": "optimized", "optimizer": "logloss"},
    "optimized-greedy": {"weighting": "optimized", "optimizer": "greedy"},
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=2000, help="max_train_rows of each fine-tune (10%% held out)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "sched-bench-ensemble"))
    return p.parse_args()


def main() -> None:
    from rich.console import Console
    from rich.table import Table

    from scheduler.jobqueue import JobQueue, JobSpec
    from scheduler.records import Records
    from scheduler.slots import parse_slots
    from scheduler.worker import WorkerLoop, WorkerOptions

    args = parse_args()
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.environ.setdefault("SCHED_CACHE_DIR", str(work / "token-cache"))
    queue = JobQueue(f"sqlite:///{work / 'experiments.db'}")
    common = {"model": "tiny", "max_train_rows": args.rows, "epochs": args.epochs, "batch_size": 32,
              "max_length": args.max_length, "precision": "fp32"}
    specs = [JobSpec(name, "finetune", {**common, **p}, priority=10) for name, p in MEMBERS.items()]
    specs += [JobSpec(f"ens-{name}", "ensemble", {"members": list(MEMBERS), **p}, after=list(MEMBERS))
              for name, p in STRATEGIES.items()]
    queue.submit(specs)
    started = time.monotonic()
    WorkerLoop(queue, parse_slots("none"), WorkerOptions(runs_root=work / "runs", poll_s=0.2)).run(until_empty=True)
    elapsed = time.monotonic() - started

    records = Records(queue)
    members = {n: records.job(n) for n in MEMBERS}
    failed = [n for n, r in members.items() if r.status != "succeeded"]
    if failed:
        sys.exit(f"fine-tune(s) {', '.join(failed)} did not succeed; see {work / 'runs'}")
    best_name, best = max(((n, r.metrics["val_accuracy"]) for n, r in members.items()), key=lambda x: x[1])
    console = Console(width=max(Console().width, 120))
    table = Table(title=f"Ensemble strategies on {len(MEMBERS)} tiny fine-tunes ({args.rows} rows, "
                        f"{args.epochs} epochs; {elapsed:.0f}s in all)", title_justify="left")
    for col in ("job", "val_accuracy", "vs best member", "val_f1", "val_log_loss", "val_accuracy_cv", "weights"):
        table.add_column(col, justify="left" if col in ("job", "weights") else "right")
    for name, r in members.items():
        m = r.metrics
        table.add_row(name, f"{m['val_accuracy']:.4f}", "", f"{m['val_f1']:.4f}", "", "",
                      f"seed {MEMBERS[name]['seed']}, lr {MEMBERS[name]['lr']:g}")
    for name in STRATEGIES:
        r = records.job(f"ens-{name}")
        if r.status != "succeeded":
            table.add_row(f"ens-{name}", r.status, "", "", "", "", "")
            continue
        m = r.metrics
        weights = [h["value"] for h in r.history if h["key"] == "weight"]
        cv = m.get("val_accuracy_cv")
        table.add_row(f"ens-{name}", f"{m['val_accuracy']:.4f}", f"{m['val_accuracy'] - best:+.4f}",
                      f"{m['val_f1']:.4f}", f"{m['val_log_loss']:.4f}", "" if cv is None else f"{cv:.4f}",
                      " ".join(f"{w:.2f}" for w in weights))
    console.print(table)
    console.print(f"best member: {best_name} ({best:.4f}); validation rows: the shared split of "
                  f"{args.rows} rows (val_fraction 0.1)")
    queue.dispose()


if __name__ == "__main__":
    main()

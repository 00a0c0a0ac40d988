"""`sched demo`: the campaign's shape (three fine-tunes, a TF-IDF baseline, an ensemble, its
predictions on a CSV, a short tune, a full-data retrain) on the tiny preset and the shipped data
sample, run to the end on this machine's CPU.

It runs a worker until the queue is empty, then prints the status and the leaderboard, and leaves
the database for `sched status`, `sched results` and `sched report`.
"""

from __future__ import annotations

import time
from pathlib import Path

from .errors import SchedError
from .jobqueue import JobQueue
from .plan import load_plan
from .render import plan_table, status_view
from .execute.slots import parse_slots
from .views import status_snapshot
from .execute.worker import WorkerLoop, WorkerOptions

DEMO_FILE = Path(__file__).with_name("demo.yaml")
DATA_DIR = Path(__file__).resolve().parents[1] / "data"


def demo_vars(run: str) -> dict:
    train, test = DATA_DIR / "reviews_train.csv", DATA_DIR / "reviews_test.csv"
    if not train.exists() or not test.exists():
        raise SchedError(f"the demo needs the data sample in {DATA_DIR} (reviews_train.csv, reviews_test.csv)")
    return {"run": run, "train": str(train), "test": str(test)}


def run_demo(queue: JobQueue, runs_root: Path, console) -> str:
    """Submit and run the demo campaign; returns its run prefix."""
    from .render import results_table
    from .results import leaderboard
    from .store.engine import shown_url

    run = time.strftime("demo-%m%d-%H%M%S")
    specs = load_plan(DEMO_FILE, demo_vars(run))
    queue.submit(specs)
    console.print(plan_table(specs, title=f"Demo campaign {run}", width=console.width))
    started = time.monotonic()
    WorkerLoop(queue, parse_slots("none"), WorkerOptions(runs_root=runs_root, poll_s=0.2)).run(until_empty=True)
    console.print(status_view(status_snapshot(queue, all_jobs=False), width=console.width))
    console.print(results_table(leaderboard(queue, tag=run), None, width=console.width))
    console.print(f"demo finished in {time.monotonic() - started:.0f}s; queue: "
                  f"{shown_url(queue.engine.url)}. Next: sched status, "
                  f"sched results --tag {run}, sched study {run}-tune, sched report", markup=False)
    return run

"""`sched demo`: a small campaign run end to end on this machine's CPU.

It shows the queue's behaviour (priorities, dependencies, a retry) with shell and diagnostic jobs;
it runs a worker until the queue is empty, then prints the status.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from rich.console import Console

from .jobqueue import JobQueue
from .plan import build_plan
from .render import plan_table, status_view
from .slots import parse_slots
from .views import status_snapshot
from .worker import WorkerLoop, WorkerOptions

DEMO_PLAN = {
    "vars": {"python": sys.executable},
    "defaults": {"max_attempts": 2, "tags": ["demo", "{run}"]},
    "jobs": [
        {"name": "{run}-prepare", "kind": "shell", "priority": 100,
         "params": {"argv": ["{python}", "-c", "print('preparing data')"]}},
        {"name": "{run}-train-{model}", "kind": "sleep", "priority": 50, "after": ["{run}-prepare"],
         "matrix": {"model": ["alpha", "beta", "gamma"]}, "params": {"seconds": 0.5}},
        {"name": "{run}-backfill", "kind": "echo", "priority": 0,
         "params": {"message": "low-priority work runs when nothing else waits", "metric": 1.0}},
        {"name": "{run}-summary", "kind": "echo", "priority": 10, "after": ["{run}-train-{model}"],
         "params": {"message": "all models trained", "write_file": "summary.txt"}},
    ],
}


def run_demo(queue: JobQueue, runs_root: Path, console: Console) -> None:
    tag = time.strftime("demo-%Y%m%d-%H%M%S")
    specs = build_plan(DEMO_PLAN, where="demo", extra_vars={"run": tag})
    queue.submit(specs)
    console.print(plan_table(specs, title=f"Demo campaign {tag}"))
    WorkerLoop(queue, parse_slots("none"), WorkerOptions(runs_root=runs_root, poll_s=0.1)).run(until_empty=True)
    console.print(status_view(status_snapshot(queue, all_jobs=False)))
    console.print(f"queue: {queue.engine.url.render_as_string(hide_password=True)}; "
                  "try `sched status`, `sched show " + specs[-1].name + "`")

"""The idle gap between two tiny fine-tunes on one slot: the first job's last step to the next one's first.

    python bench/bench_gap.py [--rows 400] [--rounds 2] [--quick]

Two `finetune` jobs (tiny preset, `--rows` rows, 1 epoch, a train-loss metric logged at every step)
run one after the other through one real worker on one slot. Every metric row carries the
database's clock (`sched_metrics.time`, written by the child through its job context), so

    gap = time of job B's first train-loss row (step 1) - time of job A's last train-loss row

and the job rows' `finished_at` (A) and `started_at` (B), same clock, split it into: A's tail (last
step -> A recorded ended: its final evaluation, saving, prediction, exit, the worker noticing),
the handoff (A ended -> B claimed), and B's head (B claimed -> first step: start-up, imports, data,
tokenizer and model, the first step itself).

Part of that is the jobs' own work. To separate it, the same job runs twice more inside this
process with torch already imported (no worker, no database), and its own head (run() called ->
first step) and tail (last step -> run() returned) are measured the same way; the second run
counts. "beyond own work" = gap - own head - own tail: what the scheduler adds.

Cold vs warm: when the worker has warm spares (a `--no-warm` option, issue 12), both run, rounds
alternating with the order rotated; otherwise only today's cold start runs and the output says
warm is not available. Issue 12's goal: warm gap <= 0.3 s beyond the jobs' own work.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchlib import (  # noqa: E402
    ROOT,
    WARM_UNAVAILABLE,
    header,
    rotated,
    sched_cmd,
    silenced,
    summary,
    table,
    warm_flags,
)
from scheduler.jobqueue import JobQueue, JobSpec  # noqa: E402

LOSS_KEY, LOSS_SPLIT = "loss", "train"  # pipeline/callbacks.py: the Trainer's per-step loss, split train


def job_params(args) -> dict:
    return {"model": "tiny", "max_train_rows": args.rows, "epochs": 1, "batch_size": args.batch,
            "max_length": args.max_length, "logging_steps": 1, "test": None, "metric_for_best": "accuracy",
            "save_total_limit": 1, "seed": 0}


def loss_times(queue: JobQueue, job_id: int) -> list[tuple[int, float]]:
    """(step, database time as epoch seconds) of a job's per-step train-loss rows, by step."""
    from sqlalchemy import select

    from scheduler.store.schema import metrics

    with queue.read() as conn:
        rows = conn.execute(select(metrics.c.step, metrics.c.time).where(
            metrics.c.job_id == job_id, metrics.c.key == LOSS_KEY, metrics.c.split == LOSS_SPLIT)).all()
    return sorted((step, _seconds(t)) for step, t in rows)


def _seconds(value) -> float:
    from datetime import datetime, timezone

    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)  # sched stores naive UTC
    return value.timestamp()


def run_pair(workdir: Path, args, flags: list[str]) -> dict[str, float]:
    """Two fine-tunes through one worker on one slot; the gap and its parts, in seconds."""
    url = f"sqlite:///{workdir}/gap.db"
    queue = JobQueue(url)
    gpus = 0 if args.gpus == "none" else 1
    a, b = queue.submit([JobSpec("gap-a", "finetune", job_params(args), gpus=gpus),
                         JobSpec("gap-b", "finetune", job_params(args), gpus=gpus)])
    log = workdir / "worker.log"
    env = {**os.environ, "SCHED_CACHE_DIR": str(workdir.parent / "token-cache")}
    with open(log, "w") as out:
        done = subprocess.run(sched_cmd("--db", url, "worker", "--gpus", args.gpus, "--cpu-slots", "1",
                                        "--until-empty", "--runs", str(workdir / "runs"), *flags),
                              cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=1800)
    rows = {job_id: queue.get(job_id) for job_id in (a, b)}
    if done.returncode != 0 or any(r.status != "succeeded" for r in rows.values()):
        states = {r.name: r.status for r in rows.values()}
        raise SystemExit(f"bench_gap: the jobs did not both succeed ({states}, worker exit {done.returncode}); "
                         f"see {log} and {workdir / 'runs'}")
    steps_a, steps_b = loss_times(queue, a), loss_times(queue, b)
    if not steps_a or not steps_b:
        raise SystemExit(f"bench_gap: no per-step '{LOSS_KEY}' rows (split {LOSS_SPLIT}) were logged; "
                         "the gap cannot be measured from metrics in this version")
    last_a, first_b = steps_a[-1][1], steps_b[0][1]
    ended_a, started_b = _seconds(rows[a].finished_at), _seconds(rows[b].started_at)
    step_times = [t2 - t1 for (_, t1), (_, t2) in zip(steps_b, steps_b[1:], strict=False)]
    queue.dispose()
    return {"gap": first_b - last_a, "tail": ended_a - last_a, "handoff": started_b - ended_a,
            "head": first_b - started_b, "step": summary(step_times)["median"] if step_times else float("nan")}


def own_work(args, workdir: Path, runs: int = 2) -> dict[str, float]:
    """Head and tail of the same job run in this process, torch already imported; the last run counts."""
    import torch

    from jobs import get_kind
    from jobs.context import JobContext, MemoryReporter

    class TimedReporter(MemoryReporter):
        def log_metric(self, job_id, key, value, step, split):
            super().log_metric(job_id, key, value, step, split)
            self.metrics[-1]["time"] = time.time()

    os.environ["SCHED_CACHE_DIR"] = str(workdir / "token-cache")
    torch.set_num_threads(max(1, os.cpu_count() or 1))  # what a 1-slot CPU worker gives its job
    kind = get_kind("finetune")
    result = {}
    for i in range(runs):
        reporter = TimedReporter()
        ctx = JobContext(job_id=i + 1, name=f"own-{i}", output_dir=workdir / f"own-{i}", device="cpu",
                         reporter=reporter)
        with silenced():
            t0 = time.time()
            kind.run(kind.parse(job_params(args)), ctx)
            t1 = time.time()
        steps = [m["time"] for m in reporter.metrics if m["key"] == LOSS_KEY and m["split"] == LOSS_SPLIT]
        result = {"head": steps[0] - t0, "tail": t1 - steps[-1]}
    return result


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=400, help="training rows per job (10%% of them held out)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2, help="rounds per mode (cold, warm)")
    p.add_argument("--gpus", default="none", help="the worker's --gpus (none: one CPU slot)")
    p.add_argument("--quick", action="store_true", help="200 rows, 1 round")
    p.add_argument("--dir", default=None, help="folder for the runs (default: temporary)")
    args = p.parse_args()
    if args.quick:  # smaller defaults; options given on the command line still win
        p.set_defaults(rows=200, rounds=1)
        args = p.parse_args()
    return args


def main() -> int:
    args = parse_args()
    header(f"idle gap between two tiny fine-tunes on one slot ({args.rows} rows, 1 epoch, batch {args.batch}, "
           f"max_length {args.max_length}, worker --gpus {args.gpus})")
    warm = warm_flags()
    if warm is None:
        print(WARM_UNAVAILABLE + "; measuring today's cold start only")
        modes = [("cold (default)", [])]
    else:
        modes = [(f"warm {' '.join(warm[1])}".rstrip(), warm[1]), (f"cold {' '.join(warm[0])}", warm[0])]
    results: dict[str, list[dict]] = {name: [] for name, _ in modes}
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="sched-bench-gap-") as tmp:
        for r in range(args.rounds):
            for name, flags in rotated(modes, r):
                workdir = Path(tmp, f"{r}-{name.split()[0]}")
                workdir.mkdir()
                results[name].append(run_pair(workdir, args, flags))
                print(f"  round {r + 1}: {name}: gap {results[name][-1]['gap']:.2f} s", flush=True)
        own = own_work(args, Path(tmp))
    rows = []
    for name, values in results.items():
        gap = summary([v["gap"] for v in values])
        parts = {k: summary([v[k] for v in values])["median"] for k in ("tail", "handoff", "head", "step")}
        rows.append([name, f"{gap['min']:.2f}", f"{gap['median']:.2f}", f"{parts['tail']:.2f}",
                     f"{parts['handoff']:.2f}", f"{parts['head']:.2f}", f"{parts['step'] * 1e3:.0f}",
                     f"{gap['median'] - own['head'] - own['tail']:.2f}"])
    print(f"\nseconds, {args.rounds} round(s) per mode; parts are medians (database clock, ms resolution)")
    print(table(rows, ["mode", "gap min", "gap median", "A tail", "handoff", "B head", "step ms",
                       "beyond own work"]))
    print(f"own work, same job in a warm process (no worker): head {own['head']:.2f} s (run() -> first step), "
          f"tail {own['tail']:.2f} s (last step -> run() returned)")
    print("goal: warm gap <= 0.3 s beyond the jobs' own work"
          + ("" if warm is not None else f" ({WARM_UNAVAILABLE})"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

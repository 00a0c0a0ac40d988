"""How far the forecast's duration estimates are from real runs: a small CPU campaign run twice.

    python bench/forecast_accuracy.py [--rows 2000] [--epochs 2]

The campaign (a baseline, three tiny fine-tunes of 1, 2 and 4 epochs on the same rows, an ensemble
of the four as the deliverable, under a 2h deadline) is submitted and drained by one CPU worker
twice, in one database. The members share their rows, so their validation split is the same and
the ensemble can weigh them (members split differently are refused). In the first
run the forecast knows only each job's `expected:` hint (a deliberately rough guess); in the
second it has the first run's durations as history, scaled by each job's rows x epochs. For each
job it prints the estimate stored just before the job started, where it came from, the real
duration and the error; then the mean absolute error of each run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchlib import ROOT, header, machine_lines, sched_cmd, table  # noqa: E402

CAMPAIGN = """\
campaign: accuracy-{run}
deadline: 2h
defaults:
  gpus: 0
  tags: ["{run}"]
  params:
    finetune: {{train: "{train}", test: "{test}", val_fraction: 0.2, lr: 2.0e-3, batch_size: 64,
               max_length: 64, precision: fp32, metric_for_best: accuracy, focal_gamma: 0.0}}
jobs:
  - {{name: "{run}-baseline", kind: baseline, expected: 30s, params: {{train: "{train}", test: "{test}",
      max_train_rows: {rows}, val_fraction: 0.2}}, tags: ["{run}", "{run}-member"]}}
  - name: "{run}-finetune-e{{n}}"
    kind: finetune
    matrix: {{n: [{few}, {epochs}, {many}]}}
    expected: 2m
    tags: ["{run}", "{run}-member"]
    params: {{model: tiny, max_train_rows: {rows}, epochs: "{{n}}"}}
  - name: "{run}-ensemble"
    kind: ensemble
    deliverable: true
    expected: 20s
    after: ["{run}-finetune-e{{n}}", "{run}-baseline"]
    params: {{member_tags: ["{run}-member"], weighting: accuracy}}
"""


def run_campaign(url: str, folder: Path, run: str, args) -> None:
    import subprocess

    queue_file = folder / f"{run}.yaml"
    queue_file.write_text(CAMPAIGN.format(run=run, train=ROOT / "data" / "reviews_train.csv",
                                          test=ROOT / "data" / "reviews_test.csv", rows=args.rows,
                                          few=max(1, args.epochs // 2), many=args.epochs * 2, epochs=args.epochs))
    for command in (["submit", str(queue_file)], ["worker", "--gpus", "none", "--until-empty",
                                                  "--runs", str(folder / "runs")]):
        subprocess.run(sched_cmd("--db", url, *command), check=True, capture_output=True, text=True)


def failures_of(url: str, run: str) -> list[str]:
    """"name: status" of each of the run's jobs that did not succeed (the figures need them all)."""
    from scheduler.jobqueue import JobQueue
    from scheduler.store.queries import list_jobs

    queue = JobQueue(url)
    try:
        with queue.read() as conn:
            return [f"{job.name}: {job.status}" for job in list_jobs(conn, name_like=run + "-%")
                    if job.status != "succeeded"]
    finally:
        queue.dispose()


def errors_of(url: str, run: str) -> list[dict]:
    from scheduler.deadline.planner import estimate_errors
    from scheduler.jobqueue import JobQueue

    queue = JobQueue(url)
    try:
        with queue.read() as conn:
            return [e for e in estimate_errors(conn) if e["name"].startswith(run + "-")]
    finally:
        queue.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000, help="training rows of every fine-tune and the baseline")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the middle fine-tune (the others: half, twice)")
    args = parser.parse_args()
    header("Forecast accuracy on real runs: one small CPU campaign, run twice")
    for line in machine_lines():
        print(line)
    with tempfile.TemporaryDirectory(prefix="sched-accuracy-") as tmp:
        folder = Path(tmp)
        url = f"sqlite:///{folder / 'experiments.db'}"
        results = {}
        for run in ("first", "second"):
            run_campaign(url, folder, run, args)
            failed = failures_of(url, run)
            if failed:
                print(f"PROBLEMS: the {run} run's jobs did not all succeed ({'; '.join(failed)})")
                return 1
            results[run] = errors_of(url, run)
    for run, rows in results.items():
        print(f"\n{run} run (estimates {'from `expected:` hints' if run == 'first' else 'from the first run'}):")
        print(table([[r["name"], r["source"], f"{r['estimate_s']:.1f}", f"{r['actual_s']:.1f}",
                      f"{r['error'] * 100:+.0f}%"] for r in sorted(rows, key=lambda r: r["id"])],
                    ["job", "estimate from", "estimate s", "actual s", "error"]))
        absolute = [abs(r["error"]) for r in rows if r["error"] is not None]
        if absolute:
            print(f"mean absolute error: {statistics.mean(absolute) * 100:.0f}% over {len(absolute)} jobs "
                  f"(median {statistics.median(absolute) * 100:.0f}%)")


if __name__ == "__main__":
    sys.exit(main())

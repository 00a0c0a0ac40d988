"""Benchmark: the demo's models and every ensemble strategy, scored on held-out rows no model saw.

    python bench/ensemble_strategies.py [--workdir /tmp/sched-bench-ensemble] [--boot 2000]

Runs the demo campaign's models through the queue exactly as `sched demo` configures them
(scheduler/demo.yaml: TAPT, the fine-tunes, the TF-IDF baseline, the demo's ensemble and its predict
step) except that TAPT reads only the train file, so no model, weighting or pretraining ever sees
data/reviews_test.csv. Then it adds one `ensemble` job per weighting strategy, over the fine-tunes
alone and over the fine-tunes plus the baseline, and scores every job's test predictions against
the labels of data/reviews_test.csv (the competition's test file has none; the sample's has).

Prints, computed from the files the jobs wrote (nothing here is typed in by hand):
- each model's and each ensemble's validation accuracy (out of fold for ensembles; in-sample too),
  and its held-out (test) accuracy and macro-F1;
- the demo's ensemble on held-out rows against its best member and the baseline;
- for fitted weightings, the out-of-fold validation accuracy against the held-out accuracy;
- a bootstrap 95% interval of (ensemble - best member) held-out accuracy, resampling test rows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STRATEGIES = {
    "accuracy": {"weighting": "accuracy"},
    "f1": {"weighting": "f1"},
    "uniform": {"weighting": "uniform"},
    "sharpened": {"weighting": "sharpened", "temperature": 0.01},
    "above_majority": {"weighting": "above_majority"},
    "optimized-logloss": {"weighting": "optimized", "optimizer": "logloss"},
    "optimized-greedy": {"weighting": "optimized", "optimizer": "greedy", "greedy_metric": "accuracy"},
}
FITTED = ("optimized-logloss", "optimized-greedy")
MEMBER_SETS = {"ft": "the fine-tunes", "ft+base": "the fine-tunes and the baseline"}
KEEP_KINDS = ("tapt", "finetune", "baseline", "ensemble", "predict")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "sched-bench-ensemble"))
    p.add_argument("--boot", type=int, default=2000, help="bootstrap resamples of the test rows")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    return p.parse_args()


def demo_models(run: str) -> list:
    """The demo's jobs that make and use models (no tune, no full-data retrain); TAPT on train only."""
    from scheduler.demo import DEMO_FILE, demo_vars
    from scheduler.plan import load_plan

    variables = demo_vars(run)
    specs = [s for s in load_plan(DEMO_FILE, variables) if s.kind in KEEP_KINDS and not s.params.get("full_data")]
    for spec in specs:
        if spec.kind == "tapt":
            spec.params["texts"] = [variables["train"]]  # the held-out rows stay unseen, even unlabelled
        spec.after = [a for a in spec.after if any(a == s.name for s in specs)]
    return specs


def strategy_jobs(run: str, finetunes: list[str], baseline: str) -> list:
    from scheduler.jobqueue import JobSpec

    sets = {"ft": finetunes, "ft+base": [*finetunes, baseline]}
    return [JobSpec(f"{run}-ens-{members}-{name}", "ensemble", {"members": names, "submission": None, **params},
                    after=names, tags=[run])
            for members, names in sets.items() for name, params in STRATEGIES.items()]


def test_scores(probs_or_logits, labels):
    from pipeline.metrics import accuracy, macro_f1

    preds = probs_or_logits.argmax(-1)
    return accuracy(labels, preds), macro_f1(labels, preds, probs_or_logits.shape[1]), preds == labels


def bootstrap(correct_a, correct_b, n: int, seed: int) -> tuple[float, float, float]:
    """(mean, 2.5%, 97.5%) of accuracy(a) - accuracy(b) over test rows resampled with replacement."""
    import numpy as np

    rng = np.random.default_rng(seed)
    diff = correct_a.astype(float) - correct_b.astype(float)
    idx = rng.integers(0, len(diff), (n, len(diff)))
    means = diff[idx].mean(axis=1)
    return float(diff.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main() -> None:
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from pipeline.data import load_labeled_csv
    from scheduler.jobqueue import JobQueue
    from scheduler.records import Records
    from scheduler.execute.slots import parse_slots
    from scheduler.execute.worker import WorkerLoop, WorkerOptions

    args = parse_args()
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.environ.setdefault("SCHED_CACHE_DIR", str(work / "token-cache"))
    os.chdir(work)  # the demo's relative paths (runs/) land here
    run = "bench"
    queue = JobQueue(f"sqlite:///{work / 'experiments.db'}")
    specs = demo_models(run)
    finetunes = [s.name for s in specs if s.kind == "finetune"]
    baseline = next(s.name for s in specs if s.kind == "baseline")
    demo_ensemble = next(s for s in specs if s.kind == "ensemble")
    demo_predict = next(s for s in specs if s.kind == "predict")
    specs += strategy_jobs(run, finetunes, baseline)
    queue.submit(specs)
    started = time.monotonic()
    WorkerLoop(queue, parse_slots("none"), WorkerOptions(runs_root=work / "runs", poll_s=0.2)).run(until_empty=True)
    elapsed = time.monotonic() - started

    records = Records(queue)
    jobs = {s.name: records.job(s.name) for s in specs if s.kind in ("finetune", "baseline", "ensemble", "predict")}
    failed = {n: r.status for n, r in jobs.items() if r.status != "succeeded"}
    if failed:
        sys.exit(f"job(s) did not succeed: {failed}; see {work / 'runs'}")
    test = load_labeled_csv(ROOT / "data" / "reviews_test.csv")
    labels = test["label"].to_numpy()
    majority = float(np.bincount(labels).max() / len(labels))
    scored = {}
    for name, record in jobs.items():
        if record.kind == "predict":
            continue
        path = record.artifacts["test_probs" if record.kind == "ensemble" else "test_logits"]
        scored[name] = test_scores(np.load(path), labels)

    console = Console(width=max(Console().width, 140))
    table = Table(title=f"Demo models and ensemble strategies on {len(labels)} held-out rows "
                        f"(data/reviews_test.csv; majority class {majority:.3f}; {elapsed:.0f}s in all)",
                  title_justify="left")
    for col in ("job", "val acc", "val in-sample", "test acc", "test F1", "weights / left out"):
        table.add_column(col, justify="left" if col in ("job", "weights / left out") else "right")
    for name in [*finetunes, baseline, demo_ensemble.name] + [n for n in scored if "-ens-" in n]:
        r, (acc, f1, _) = jobs[name], scored[name]
        note = ""
        if r.kind == "ensemble":
            result = json.loads(Path(r.artifacts["result"]).read_text())
            note = " ".join(f"{w:.2f}" for w in result["weights"].values())
            note += f"; left out: {', '.join(result['left_out'])}" if result["left_out"] else ""
        in_sample = r.metrics.get("val_accuracy_in_sample")
        table.add_row(name.removeprefix(f"{run}-"), f"{r.metrics['val_accuracy']:.4f}",
                      "" if in_sample is None else f"{in_sample:.4f}", f"{acc:.4f}", f"{f1:.4f}", note)
    console.print(table)

    base_acc = scored[baseline][0]
    best_val = max(finetunes + [baseline], key=lambda n: jobs[n].metrics["val_accuracy"])
    print_verdicts(console, run, jobs, scored, demo_ensemble, demo_predict, finetunes, baseline, best_val, base_acc,
                   args)
    queue.dispose()


def print_verdicts(console, run, jobs, scored, demo_ensemble, demo_predict, finetunes, baseline, best_val, base_acc,
                   args) -> None:
    def short(name: str) -> str:
        return name.removeprefix(run + "-")

    def against_members(job: str, label: str) -> None:
        """Held-out accuracy of an ensemble vs its best kept member (bootstrap 95%) and the baseline."""
        kept = list(json.loads(Path(jobs[job].artifacts["weights"]).read_text()))
        best = max(kept, key=lambda n: scored[n][0])
        acc = scored[job][0]
        mean, low, high = bootstrap(scored[job][2], scored[best][2], args.boot, args.seed)
        member = "a member" if baseline in kept else "not a member"
        console.print(f"  {label}: held out {acc:.4f}; best member {short(best)} {scored[best][0]:.4f}: "
                      f"ensemble - best member {mean:+.4f}, 95% interval [{low:+.4f}, {high:+.4f}]; "
                      f"baseline ({member}) {base_acc:.4f}: ensemble - baseline {acc - base_acc:+.4f}")

    console.print(f"\n[bold]Ensembles against their best member[/] (held-out accuracy; bootstrap of "
                  f"{args.boot} resamples of the held-out rows)")
    weighting = demo_ensemble.params.get("weighting", "accuracy")
    against_members(demo_ensemble.name, f"the demo's ensemble ({weighting})")
    for members_key, members_text in MEMBER_SETS.items():
        for name in STRATEGIES:
            default = " (the default weighting)" if name == "accuracy" else ""
            against_members(f"{run}-ens-{members_key}-{name}", f"{name} over {members_text}{default}")
    predicted = jobs[demo_predict.name].metrics.get("test_accuracy")
    console.print(f"The demo's predict step (its ensemble re-run on the CSV, member by member) logged "
                  f"test_accuracy {predicted:.4f}; the ensemble's own test predictions score "
                  f"{scored[demo_ensemble.name][0]:.4f}.")

    console.print("\n[bold]Fitted weightings[/]: out-of-fold validation accuracy vs held-out accuracy "
                  "(goal: within 1 point)")
    for members_key in MEMBER_SETS:
        for name in FITTED:
            job = f"{run}-ens-{members_key}-{name}"
            oof, in_sample = jobs[job].metrics["val_accuracy"], jobs[job].metrics["val_accuracy_in_sample"]
            held = scored[job][0]
            console.print(f"  {short(job)}: out of fold {oof:.4f}, in sample {in_sample:.4f}, held out {held:.4f}: "
                          f"out of fold - held out {100 * (oof - held):+.1f} points, "
                          f"in sample - held out {100 * (in_sample - held):+.1f} points")
    for name in (*finetunes, baseline):
        console.print(f"  (member {short(name)}: validation {jobs[name].metrics['val_accuracy']:.4f}, "
                      f"held out {scored[name][0]:.4f})")
    wins = {k: max((f"{k}-{n}" for n in STRATEGIES), key=lambda j: scored[f"{run}-ens-{j}"][0])
            for k in MEMBER_SETS}
    console.print("\nBest strategy on held-out rows: " + "; ".join(
        f"over {MEMBER_SETS[k]}: {w} ({scored[f'{run}-ens-{w}'][0]:.4f})" for k, w in wins.items())
        + f". Best member by validation accuracy: {short(best_val)}.")


if __name__ == "__main__":
    main()

"""How many GPU-hours memory packing saves on the campaign in queue.yaml: a simulation, not a GPU measurement.

    python bench/bench_packing.py [--queue queue.yaml] [--slowdown 1,0.5,0.35,0.25] [--peak-gib 12]

The campaign's GPU jobs (TAPT, fine-tunes, the 2-job tune, retrains) run through the worker's REAL
placement code (`scheduler.execute.placement.ClaimPass`, `DEFAULT_HEADROOM_MIB`, `auto_need`, `memory_key`) on
fake inventories: one and two 80 GB GPUs (A100/H100, 81920 MiB) and one and two H200s (144384 MiB).
Event-driven: at every start or finish a claim pass runs over the runnable jobs in claim order
(priority high to low, then submit order, `after:` respected), as the worker's does; a reservation
that would fit once preemptible jobs yield makes the lowest-priority one yield (the worker asks it
by SIGUSR1; here at once, losing no work). Three policies:

- whole:    every job takes a whole GPU (no `gpu_memory`);
- auto:     queue.yaml as written (`gpu_memory: auto`): a job shares only once a job with the same
            memory key (kind, model, batch_size, max_length, precision) has finished and recorded
            its peak; until then it takes a whole GPU;
- declared: every 1-GPU job declares what auto would ask for from the start (`gpu_memory: SIZE`).

Durations are in epoch units (1 unit = one epoch over the fine-tune's training split on a whole GPU),
from the row counts of the campaign's files and its epochs and trials. Sharing slowdown: k jobs on
one GPU each run at speed 1 / (1 + u (k - 1)), so the GPU's throughput is k / (1 + u (k - 1)):
u = 1 means no gain at all, u = 0 would be a free lunch. The model does not saturate, so large k
(many jobs on an H200) flatters packing at small u.
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchlib import ROOT, table  # noqa: E402
from scheduler.resources import DEFAULT_CONTEXT_MIB, DEFAULT_HEADROOM_MIB, Request, auto_need, fmt_mib, memory_key
from scheduler.execute.placement import ClaimPass, Gpu, Held

A100_80GB, H200 = 81920, 144384
INVENTORIES = [("1x 80GB", [A100_80GB]), ("2x 80GB", [A100_80GB] * 2),
               ("1x H200", [H200]), ("2x H200", [H200] * 2)]
POLICIES = ("whole", "auto", "declared")
PEAK_SOURCE = ("github.com/google-research/bert README, 'Out-of-memory issues': BERT-Base (110M params) at "
               "seq length 128 fits at most batch 32 on a 12GB Titan X (TensorFlow 1.11, fp32, Adam)")
MLM_VOCAB = 32_000  # TAPT's logits over the vocabulary (klue: 32,000; the others 30,000-42,000)
TUNE_PRUNED = 0.15  # the median pruner saved 10-17% of trial-epochs in bench/bench_tune_pruning.py
EPS = 1e-9


@dataclass
class Job:
    name: str
    kind: str
    priority: int
    order: int
    after: list[str]
    preemptible: bool
    key: str | None  # memory key: jobs alike in memory share recorded peaks (`gpu_memory: auto`)
    peak_mib: int
    work: float  # epoch units; a tune member draws on its group's shared pool instead
    group: str | None = None


# ---- the campaign as jobs with durations and peaks -------------------------------------------------

def rows(path: str) -> int:
    with open(ROOT / path, newline="", encoding="utf-8") as f:
        return sum(1 for _ in csv.reader(f)) - 1  # less the header


def campaign(queue_file: Path, peak_gib: float) -> tuple[list[Job], dict[str, float], list[str]]:
    """The GPU jobs of the queue file, the tune groups' shared work, and the assumptions made."""
    from jobs import get_kind
    from scheduler.plan import load_plan

    specs = [s for s in load_plan(queue_file) if s.gpus >= 1]
    ft = next(s.params for s in specs if s.kind == "finetune" and not s.params.get("full_data"))
    split = rows(ft["train"]) * (1 - ft.get("val_fraction", 0.0))  # one epoch unit, in rows
    peak = int(peak_gib * 1024)
    tapt_rows, mlm_mib = 0, 0
    jobs, pools = [], {}
    for order, s in enumerate(specs):
        p = s.params
        key = memory_key(get_kind(s.kind), p)
        if s.kind == "tapt":
            tapt_rows = sum(rows(t) for t in p["texts"])
            # logits, their softmax and its gradient over the vocabulary, fp32: batch x length x vocab x 12 bytes
            mlm_mib = p["batch_size"] * p["max_length"] * MLM_VOCAB * 12 // 2**20
            work, need = p["epochs"] * tapt_rows / split, peak + mlm_mib
        elif s.kind == "tune":
            epochs = p["space"]["epochs"]
            per_trial = (epochs["low"] + epochs["high"]) / 2 * (1 - TUNE_PRUNED)
            pools[s.group_name] = p["n_trials"] * per_trial  # the study's trials, shared by its jobs
            work, need = 0.0, peak
        else:  # finetune; a retrain trains on all rows for its fine-tune's epochs (assumed all of them)
            work, need = p["epochs"] * (rows(p["train"]) if p.get("full_data") else split) / split, peak
        jobs.append(Job(s.name, s.kind, s.priority, order, list(s.after), s.preemptible, key, need, work,
                        s.group_name))
    tune = next(s.params for s in specs if s.kind == "tune")
    notes = [
        f"1 epoch unit = one fine-tune epoch over {split:,.0f} rows ({ft['train']} less its validation rows) "
        "on a whole GPU",
        f"finetune {ft['epochs']} units (all {ft['epochs']} epochs: early stopping ignored); retrain "
        f"{ft['epochs'] * rows(ft['train']) / split:.2f} (all rows, the same epochs); "
        f"tapt {jobs[0].work:.2f} ({tapt_rows:,} texts x {specs[0].params['epochs']} epochs, an MLM step "
        "costing a fine-tune step)",
        f"tune: {tune['n_trials']} trials x {(tune['space']['epochs']['low'] + tune['space']['epochs']['high']) / 2:g} "
        f"epochs on average, {TUNE_PRUNED:.0%} pruned = {sum(pools.values()):.0f} units shared by its jobs "
        "(one study); its `until:` cap not reached",
        f"peak: finetune/tune/retrain {fmt_mib(peak)}, an upper bound for batch 32 x 128 from {PEAK_SOURCE}",
        f"peak: tapt +{fmt_mib(mlm_mib)} for MLM logits over a {MLM_VOCAB:,}-token vocabulary (derived: "
        "batch x length x vocab x 12 bytes, fp32 logits, softmax and gradient)",
        f"a shared job asks auto_need(peak) = peak x 1.1 + 768MiB + its CUDA context "
        f"({fmt_mib(DEFAULT_CONTEXT_MIB)}): {fmt_mib(auto_need(peak, DEFAULT_CONTEXT_MIB))} "
        f"(tapt {fmt_mib(auto_need(peak + mlm_mib, DEFAULT_CONTEXT_MIB))}); headroom {fmt_mib(DEFAULT_HEADROOM_MIB)} "
        "per GPU",
        "CPU jobs (baseline, ensembles) and start-up gaps are left out; no job fails or runs out of memory",
    ]
    return jobs, pools, notes


# ---- the simulation -------------------------------------------------------------------------------

def simulate(jobs: list[Job], pools: dict[str, float], sizes: list[int], policy: str, u: float) -> dict:
    """Run the jobs on GPUs of `sizes` MiB; returns makespan, GPU-units and the most jobs a GPU held."""
    by_name = {j.name: j for j in jobs}
    left = {j.name: j.work for j in jobs}
    pool = dict(pools)
    queued = sorted(jobs, key=lambda j: (-j.priority, j.order))  # claim order
    running: dict[str, tuple[int, int | None]] = {}  # name -> (gpu, share MiB or None for whole)
    done: set[str] = set()
    peaks: dict[str, int] = {}  # memory key -> recorded peak (recorded when a job of that key ends)
    t = busy = 0.0
    most = 0

    def share(job: Job) -> int | None:
        if policy == "declared":
            return auto_need(job.peak_mib, DEFAULT_CONTEXT_MIB)
        if policy == "auto" and job.key in peaks:
            return auto_need(peaks[job.key], DEFAULT_CONTEXT_MIB)
        return None

    def end(name: str, finished: bool) -> None:
        job = by_name[name]
        running.pop(name)
        peaks[job.key] = max(peaks.get(job.key, 0), job.peak_mib)  # recorded whatever its ending
        if finished:
            done.add(name)
        else:
            queued.append(job)
            queued.sort(key=lambda j: (-j.priority, j.order))

    def claim() -> None:
        for _ in range(len(jobs) + 1):  # a pass, then again after each job asked to yield
            gpus = [Gpu(i, size, size - sum(by_name[n].peak_mib for n, (g, _) in running.items() if g == i),
                        [Held(s, by_name[n].priority, by_name[n].preemptible)
                         for n, (g, s) in running.items() if g == i]) for i, size in enumerate(sizes)]
            for job in [j for j in queued if j.group and pool[j.group] <= EPS]:
                queued.remove(job)  # its study has all its trials: it would end as soon as it started
                done.add(job.name)
            cp = ClaimPass(gpus, DEFAULT_HEADROOM_MIB)
            for job in list(queued):
                if not all(a in done for a in job.after):
                    continue
                placed = cp.place(Request(job.order, job.name, job.priority, 1, share(job), job.preemptible))
                if placed is not None:
                    queued.remove(job)
                    running[job.name] = (placed.gpus[0], placed.share_mib)
            held = cp.reservation
            if held is None or not held.by_preemption:
                return
            victims = [n for n in running if by_name[n].preemptible and by_name[n].priority < held.priority]
            if not victims:
                return
            end(min(victims, key=lambda n: by_name[n].priority), finished=False)

    claim()
    while running:
        per_gpu = [sum(1 for g, _ in running.values() if g == i) for i in range(len(sizes))]
        most = max(most, *per_gpu)
        rate = {n: 1 / (1 + u * (per_gpu[g] - 1)) for n, (g, _) in running.items()}
        draw = {grp: sum(r for n, r in rate.items() if by_name[n].group == grp) for grp in pool}
        step = min(pool[by_name[n].group] / draw[by_name[n].group] if by_name[n].group else left[n] / rate[n]
                   for n in running)
        t += step
        busy += step * sum(1 for k in per_gpu if k)
        for n, r in rate.items():
            if by_name[n].group:
                continue
            left[n] -= r * step
        for grp in pool:
            pool[grp] -= draw[grp] * step
        for n in [n for n in running if (pool[by_name[n].group] if by_name[n].group else left[n]) <= EPS]:
            end(n, finished=True)
        claim()
    missing = [j.name for j in jobs if j.name not in done]
    if missing:
        raise RuntimeError(f"{policy}: never ran: {', '.join(missing)}")
    return {"makespan": t, "gpu_units": busy, "most": most}


# ---- output ---------------------------------------------------------------------------------------

def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--queue", type=Path, default=ROOT / "queue.yaml")
    p.add_argument("--slowdown", default="1,0.5,0.35,0.25", help="values of u, comma-separated")
    p.add_argument("--peak-gib", type=float, default=12.0,
                   help="peak of a fine-tune at batch 32 x 128 (default: the published 12GB figure)")
    return p.parse_args()


def pct(whole: float, packed: float) -> str:
    return f"{(whole - packed) / whole:+.0%}".replace("+", "") if whole else "n/a"


def main() -> int:
    args = parse_args()
    slowdowns = [float(x) for x in args.slowdown.split(",")]
    jobs, pools, notes = campaign(args.queue, args.peak_gib)
    print(f"Memory packing, simulated: {len(jobs)} GPU jobs of {args.queue.name} through scheduler.execute.placement.ClaimPass "
          "(a simulation over published figures, not a GPU measurement; machine load does not matter)")
    for note in notes:
        print(f"  {note}")
    print("  sharing: k jobs on one GPU each run at 1 / (1 + u (k - 1)) of full speed; u = 1: no gain")
    print("  makespan and GPU-units (time a GPU holds >= 1 job, summed over GPUs) in epoch units; "
          "saved = 1 - packed / whole GPU-units")
    rows_out = []
    for label, sizes in INVENTORIES:
        for u in slowdowns:
            r = {policy: simulate(jobs, pools, sizes, policy, u) for policy in POLICIES}
            w = r["whole"]
            row = [label, f"{u:g}", f"{w['makespan']:.1f}", f"{w['gpu_units']:.1f}"]
            for policy in ("auto", "declared"):
                row += [f"{r[policy]['makespan']:.1f}", f"{r[policy]['gpu_units']:.1f}",
                        pct(w["gpu_units"], r[policy]["gpu_units"]), str(r[policy]["most"])]
            rows_out.append(row)
    print(table(rows_out, ["inventory", "u", "whole: makespan", "GPU-units",
                           "auto: makespan", "GPU-units", "saved", "max/GPU",
                           "declared: makespan", "GPU-units", "saved", "max/GPU"]))
    print("auto = queue.yaml as written (shares only after a like job recorded its peak); declared = every "
          "job gives its size up front; max/GPU = most jobs one GPU held at once")
    return 0


if __name__ == "__main__":
    sys.exit(main())

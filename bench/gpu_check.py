"""A prepared check of sched on a real NVIDIA GPU: what CPU-only tests cannot show.

    bash bench/gpu_check.sh                 # on the GPU machine: installs, nvidia-smi, then this
    python bench/gpu_check.py [--budget 420] [--keep]
    python bench/gpu_check.py --dry-run     # any machine: builds the inputs, prints and validates the queue files
    python bench/gpu_check.py --allow-no-gpu    # no CUDA GPU: items SKIP (no GPU) instead of a setup FAIL

Every item runs in a temporary folder with its own fresh SQLite queue (a timed-out item cannot leave
jobs behind for the next), through `sched submit` and `sched worker --gpus auto --until-empty` (items (c)
and (d): `--gpus 0`):

  (a) a short campaign on CUDA, tiny preset: TAPT -> fine-tune from it (gpus: 1, bf16 if the GPU
      supports it, else fp16): both succeed, on a GPU slot, with gpu_peak_mib recorded
  (b) a 2-GPU gang fine-tune (gpus: 2), when NVML sees >= 2 GPUs: succeeds on a 2-GPU slot and
      both GPUs' memory rises while it runs
  (c) two fine-tunes with gpu_memory: 4GiB on a worker of GPU 0 alone (on more GPUs shared jobs spread):
      both placed on gpu0 with 4GiB, running at the same time
  (d) a forced CUDA out-of-memory on a whole GPU (a from-config BERT, 8 layers x 512, sequences of
      1,024 tokens, batch 4,096 rows: hundreds of GiB of activations): the job halves its batch
      until it fits, logs `oom_batch_size`, and succeeds
  (e) the NVML readings `sched status --json` shows (workers[].slot_use[].gpu_stats) during (c)
  (f) the gap between (a)'s two jobs on one GPU, from the database's timestamps

Prints PASS / FAIL / SKIP per item and a summary; exits 0 only if nothing FAILed. Never touches
CUDA in this process (a CUDA context here would take GPU memory from the jobs): torch is asked in
a child process.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchlib import ROOT, silenced  # noqa: E402

TRAIN = str(ROOT / "data" / "reviews_train.csv")
PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
ITEMS = {"setup": "GPU, torch, inputs, queue files valid",
         "a": "campaign on CUDA: tiny TAPT -> fine-tune",
         "b": "2-GPU gang fine-tune",
         "c": "two gpu_memory: 4GiB fine-tunes at once on gpu0",
         "d": "forced CUDA OOM halves the batch",
         "e": "NVML readings in sched status --json",
         "f": "gap between two jobs on one GPU"}
# The OOM model: activations of ~140 MiB per 1,024-token row (8 layers x 512 wide, 16-bit), so a
# first batch of ~3,700 rows needs ~500 GiB: more than any single GPU has. Halving reaches a batch
# that fits on a 16-192 GiB GPU in 2-6 steps, each failing on its first forward pass.
OOM_MODEL = dict(hidden=512, layers=8, heads=8, intermediate=2048, max_position=1024)
OOM_ROWS, OOM_LENGTH, REVIEWS_PER_ROW = 4096, 1024, 60

TORCH_PROBE = """
import json, torch
out = {"torch": torch.__version__, "cuda": torch.cuda.is_available(), "cuda_version": torch.version.cuda}
if out["cuda"]:
    try:  # native bf16 only: emulated bf16 (e.g. on Turing) is slow, so those GPUs get fp16
        bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # a torch before the argument
        bf16 = torch.cuda.is_bf16_supported()
    out.update(count=torch.cuda.device_count(), bf16=bf16,
               names=[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
print(json.dumps(out))
"""


# ---- the queue files ------------------------------------------------------------------------------

def tiny_finetune(precision: str, **extra) -> dict:
    """The tiny preset on 2,000 reviews, 2 epochs: seconds on a GPU, and it learns."""
    return {"model": "tiny", "train": TRAIN, "test": None, "max_train_rows": 2000, "val_fraction": 0.2,
            "epochs": 2, "lr": 2.0e-3, "warmup_ratio": 0.1, "batch_size": 64, "max_length": 64,
            "precision": precision, "logging_steps": 5, "not_learning_epoch": 0, **extra}


def queue_files(precision: str, work: Path) -> dict[str, dict]:
    """One queue file per item (each goes to its own database)."""
    return {
        "a": {"jobs": [
            {"name": "gc-a-tapt", "kind": "tapt", "gpus": 1, "priority": 10,
             "params": {"model": "tiny", "texts": [TRAIN], "max_texts": 3000, "epochs": 1, "batch_size": 64,
                        "max_length": 64, "precision": precision, "logging_steps": 5}},
            {"name": "gc-a-finetune", "kind": "finetune", "gpus": 1, "priority": 5, "after": ["gc-a-tapt"],
             "params": tiny_finetune(precision, model={"from": "gc-a-tapt"}, lr=1.0e-3)}]},
        "b": {"jobs": [{"name": "gc-b-gang", "kind": "finetune", "gpus": 2, "params": tiny_finetune(precision)}]},
        "c": {"jobs": [{"name": f"gc-c-packed-{k}", "kind": "finetune", "gpus": 1, "gpu_memory": "4GiB",
                        "params": tiny_finetune(precision, seed=k, epochs=3)} for k in (1, 2)]},
        "d": {"jobs": [{"name": "gc-d-oom", "kind": "finetune", "gpus": 1,
                        "params": {"model": str(work / "oom-model"), "train": str(work / "long.csv"), "test": None,
                                   "max_train_rows": OOM_ROWS, "val_fraction": 0.1, "epochs": 1, "lr": 1.0e-4,
                                   "batch_size": OOM_ROWS, "max_length": OOM_LENGTH, "precision": precision,
                                   "logging_steps": 1, "not_learning_epoch": 0}}]},
    }


def build_inputs(work: Path) -> None:
    """The OOM item's inputs: rows of 60 reviews (> 1,024 tokens each), and a BERT built from a
    config with a tokenizer trained on them (no network: nothing comes from the hub)."""
    with open(TRAIN, newline="", encoding="utf-8") as f:
        reviews = [(r["review"], r["label"]) for r in csv.DictReader(f)]
    rng = random.Random(0)
    rows = []
    for _ in range(OOM_ROWS):
        picked = rng.sample(reviews, REVIEWS_PER_ROW)
        rows.append({"review": " ".join(text for text, _ in picked), "label": picked[0][1]})
    with open(work / "long.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["review", "label"])
        writer.writeheader()
        writer.writerows(rows)
    from pipeline.models import build_tiny  # torch on the CPU only: no CUDA context here

    with silenced():  # the tokenizer trainer's and the model writer's progress bars
        build_tiny(work / "oom-model", [r["review"] for r in rows[:500]], **OOM_MODEL)


# ---- running sched --------------------------------------------------------------------------------

class Check:
    def __init__(self, work: Path, deadline: float):
        self.work = work
        self.deadline = deadline
        self.results: dict[str, tuple[str, str]] = {}
        self.env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                    "PYTHONUNBUFFERED": "1"}

    def db(self, item: str) -> str:
        return f"sqlite:///{self.work / f'{item}.db'}"

    def sched(self, item: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "scheduler.cli", "--db", self.db(item), *args], cwd=self.work,
                              env=self.env, capture_output=True, text=True, timeout=timeout)

    def record(self, item: str, state: str, detail: str) -> None:
        self.results[item] = (state, detail)
        print(f"[{state}] ({item}) {ITEMS[item]}: {detail}", flush=True)

    def slice(self, item: str, want: float, reserve: float) -> float | None:
        """Seconds for an item's worker: `want`, less when only `reserve` must stay for the items
        after it; None (and SKIP) when under 20 s would be left."""
        limit = min(want, self.deadline - time.monotonic() - reserve)
        if limit < 20:
            self.record(item, SKIP, "no time left in the budget")
            return None
        return limit

    def submit(self, item: str, spec: dict, dry_run: bool = False) -> subprocess.CompletedProcess:
        path = self.work / f"queue-{item}.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True), encoding="utf-8")
        return self.sched(item, "submit", str(path), *(["--dry-run"] if dry_run else []))

    def enqueue(self, item: str, spec: dict) -> bool:
        """Submit the item's queue file for real; a refusal FAILs the item."""
        done = self.submit(item, spec)
        if done.returncode != 0:
            self.record(item, FAIL, f"sched submit refused its queue file: {(done.stdout + done.stderr).strip()}")
        return done.returncode == 0

    def worker(self, item: str, limit: float, gpus: str = "auto", on_tick=None) -> tuple[bool, str]:
        """Run `sched worker --until-empty` for the item, at most `limit` s (then its whole process
        group is stopped); `on_tick()` runs about every second meanwhile. Returns (finished in time, log tail)."""
        log = open(self.work / f"worker-{item}.log", "w", encoding="utf-8")
        proc = subprocess.Popen([sys.executable, "-m", "scheduler.cli", "--db", self.db(item), "worker", "--gpus", gpus,
                                 "--until-empty", "--heartbeat", "2", "--runs", str(self.work / f"runs-{item}")],
                                cwd=self.work, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # its runners share its process group: one kill stops all
        end = time.monotonic() + limit
        while proc.poll() is None and time.monotonic() < end:
            if on_tick:
                on_tick()
            time.sleep(1.0)
        in_time = proc.poll() is not None
        if not in_time:
            _stop_group(proc)
        log.close()
        tail = (self.work / f"worker-{item}.log").read_text(encoding="utf-8", errors="replace").splitlines()[-8:]
        return in_time, "\n".join(tail)

    def show(self, item: str, name: str) -> dict:
        done = self.sched(item, "show", name, "--json")
        return json.loads(done.stdout) if done.returncode == 0 else {"status": f"(sched show failed: {done.stderr.strip()})"}

    def status_json(self, item: str) -> dict | None:
        try:
            done = self.sched(item, "status", "--json", timeout=20)
            return json.loads(done.stdout) if done.returncode == 0 else None
        except (subprocess.TimeoutExpired, ValueError):
            return None

    def db_times(self, item: str) -> tuple[dict, dict]:
        """Per job name: (slot, started_at, finished_at), and its metric times; straight from the
        SQLite file (microseconds; the JSON rounds to seconds)."""
        conn = sqlite3.connect(self.work / f"{item}.db")
        try:
            jobs = {n: (slot, _t(s), _t(f)) for n, slot, s, f in
                    conn.execute("SELECT name, slot, started_at, finished_at FROM sched_jobs")}
            metrics: dict[str, list[datetime]] = {}
            for name, when in conn.execute("SELECT j.name, m.time FROM sched_metrics m JOIN sched_jobs j "
                                           "ON j.id = m.job_id ORDER BY m.time"):
                metrics.setdefault(name, []).append(_t(when))
            return jobs, metrics
        finally:
            conn.close()


def _t(value) -> datetime | None:
    return datetime.fromisoformat(str(value)) if value else None


def _stop_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


class NvmlSampler:
    """Most memory used per GPU while an item runs (NVML; nothing when it is absent)."""

    def __init__(self):
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml = pynvml
            self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        except Exception:  # noqa: BLE001 - no driver or no nvidia-ml-py
            self.nvml, self.handles = None, []
        self.base = self.used()
        self.most = list(self.base)

    def used(self) -> list[int]:
        return [self.nvml.nvmlDeviceGetMemoryInfo(h).used // 2**20 for h in self.handles]

    def reset(self) -> None:
        self.base = self.used()
        self.most = list(self.base)

    def sample(self) -> None:
        self.most = [max(a, b) for a, b in zip(self.most, self.used())]

    def rise(self, index: int) -> int | None:
        return self.most[index] - self.base[index] if index < len(self.handles) else None


# ---- the items ------------------------------------------------------------------------------------

def describe(job: dict) -> str:
    return f"{job.get('name')} {job.get('status')} on {job.get('slot')}, peak {job.get('gpu_peak_mib')} MiB"


def on_cuda(job: dict) -> bool:
    """Ran on a GPU slot, and its runner saw CUDA: the peak is recorded only when torch initialised CUDA."""
    return job.get("status") == "succeeded" and str(job.get("slot") or "").startswith("gpu") \
        and job.get("gpu_peak_mib") is not None


def item_a(check: Check, spec: dict) -> None:
    limit = check.slice("a", 120, reserve=150)
    if limit is None:
        return
    if not check.enqueue("a", spec):
        return
    in_time, tail = check.worker("a", limit)
    jobs = [check.show("a", j["name"]) for j in spec["jobs"]]
    text = "; ".join(describe(j) for j in jobs)
    if not in_time:
        check.record("a", FAIL, f"worker still running after its time: {text}\n{tail}")
    elif all(on_cuda(j) for j in jobs):
        check.record("a", PASS, text)
    else:
        check.record("a", FAIL, f"{text} (want: succeeded, slot gpuN, gpu_peak_mib recorded)\n{tail}")


def item_b(check: Check, spec: dict, gpu_count: int, nvml: NvmlSampler) -> None:
    if gpu_count < 2:
        check.record("b", SKIP, f"NVML sees {gpu_count} GPU(s); a gang needs 2")
        return
    limit = check.slice("b", 90, reserve=120)
    if limit is None:
        return
    if not check.enqueue("b", spec):
        return
    nvml.reset()
    in_time, tail = check.worker("b", limit, on_tick=nvml.sample)
    job = check.show("b", "gc-b-gang")
    from scheduler.resources import slot_gpus

    gpus = [int(s[3:]) for s in slot_gpus(job.get("slot") or "") if s[3:].isdigit()]
    rises = {g: nvml.rise(g) for g in gpus}
    text = f"{describe(job)}; GPU memory rise while it ran: " + \
        ", ".join(f"gpu{g} +{r} MiB" for g, r in rises.items())
    both_used = len(gpus) == 2 and all(r is not None and r > 100 for r in rises.values())
    if in_time and on_cuda(job) and both_used:
        check.record("b", PASS, text)
    else:
        check.record("b", FAIL, f"{text} (want: succeeded on 2 GPUs, each GPU's memory up > 100 MiB)\n{tail}")


def item_c(check: Check, spec: dict) -> list[dict]:
    """Also collects the `sched status --json` GPU readings for (e)."""
    snapshots: list[dict] = []
    limit = check.slice("c", 90, reserve=80)
    if limit is None:
        return snapshots
    if not check.enqueue("c", spec):
        return snapshots

    def poll():
        snap = check.status_json("c")
        if snap:
            snapshots.append(snap)

    # GPU 0 alone: on a worker of several GPUs the two shared jobs would spread, one per GPU
    in_time, tail = check.worker("c", limit, gpus="0", on_tick=poll)
    jobs = [check.show("c", j["name"]) for j in spec["jobs"]]
    text = "; ".join(f"{describe(j)}, placed {j.get('placed_mib')} MiB, {j.get('started_at')} -> "
                     f"{j.get('finished_at')}" for j in jobs)
    times, _ = check.db_times("c")
    spans = [times.get(j["name"], (None, None, None))[1:] for j in spec["jobs"]]
    overlap = all(s and f for s, f in spans) and max(s for s, _ in spans) < min(f for _, f in spans)
    packed = all(on_cuda(j) and j.get("slot") == "gpu0" and j.get("placed_mib") == 4096 for j in jobs)
    if in_time and packed and overlap:
        check.record("c", PASS, f"{text}; overlapped {(min(f for _, f in spans) - max(s for s, _ in spans)).total_seconds():.1f} s")
    else:
        check.record("c", FAIL, f"{text} (want: both succeeded on gpu0, placed 4096 MiB, running at the same "
                                f"time; overlap: {overlap})\n{tail}")
    return snapshots


def item_d(check: Check, spec: dict) -> None:
    limit = check.slice("d", 150, reserve=5)
    if limit is None:
        return
    if not check.enqueue("d", spec):
        return
    in_time, tail = check.worker("d", limit, gpus="0")  # one whole GPU
    job = check.show("d", "gc-d-oom")
    halved = [int(m["value"]) for m in job.get("metrics", []) if m.get("key") == "oom_batch_size"]
    text = f"{describe(job)}; oom_batch_size logged: {halved or 'none'}"
    if in_time and on_cuda(job) and halved:
        check.record("d", PASS, text)
    else:
        check.record("d", FAIL, f"{text} (want: succeeded after at least one halving)\n{tail}")


def item_e(check: Check, snapshots: list[dict]) -> None:
    if not snapshots and check.results.get("c", (SKIP,))[0] != PASS:
        check.record("e", SKIP, "(c) did not run its worker")  # (c)'s own result says why
        return
    readings = []
    for snap in snapshots:  # the latest snapshot that has readings and running jobs, else any with readings
        slots = [s for w in snap.get("workers", []) for s in w.get("slot_use", []) if s.get("gpu_stats")]
        if slots:
            readings.append((sum(1 for s in slots if s.get("job")), slots))
    if not readings:
        check.record("e", FAIL, f"no gpu_stats in {len(snapshots)} `sched status --json` snapshots taken during (c) "
                                "(worker without NVML readings?)")
        return
    _, slots = max(readings, key=lambda r: r[0])
    for s in slots:
        print(f"    {s['slot']}: job {s.get('job')}: gpu_stats {json.dumps(s['gpu_stats'])}")
    check.record("e", PASS, "; ".join(f"{s['slot']} util {s['gpu_stats'].get('util')}% mem "
                                      f"{s['gpu_stats'].get('mem_used')}/{s['gpu_stats'].get('mem_total')} MiB"
                                      for s in slots))


def item_f(check: Check) -> None:
    if check.results.get("a", (None,))[0] != PASS:
        check.record("f", SKIP, "(a) did not pass")
        return
    times, metrics = check.db_times("a")
    (slot1, _, end1), (slot2, start2, _) = times["gc-a-tapt"], times["gc-a-finetune"]
    last1, first2 = metrics.get("gc-a-tapt", [None])[-1], metrics.get("gc-a-finetune", [None])[0]
    handoff = (start2 - end1).total_seconds()
    steps = f"; last metric of job 1 -> first metric of job 2 {(first2 - last1).total_seconds():.2f} s " \
            "(includes job 2's start-up to its first logged step)" if last1 and first2 else ""
    check.record("f", PASS, f"{slot1} -> {slot2}: job 1 finished_at -> job 2 started_at {handoff:.2f} s{steps}")


# ---- main -----------------------------------------------------------------------------------------

def probe_torch() -> dict:
    try:
        done = subprocess.run([sys.executable, "-c", TORCH_PROBE], capture_output=True, text=True, timeout=120)
        return json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else \
            {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    except (subprocess.TimeoutExpired, IndexError, ValueError) as exc:
        return {"error": str(exc)}


def nvml_lines() -> tuple[int, list[str]]:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001
        return 0, [f"NVML: not available ({exc})"]
    try:
        def text(v):
            return v.decode() if isinstance(v, bytes) else str(v)

        lines = [f"NVML: driver {text(pynvml.nvmlSystemGetDriverVersion())}, "
                 f"CUDA driver API {pynvml.nvmlSystemGetCudaDriverVersion()}"]
        count = pynvml.nvmlDeviceGetCount()
        for i in range(count):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem, util = pynvml.nvmlDeviceGetMemoryInfo(h), pynvml.nvmlDeviceGetUtilizationRates(h)
            lines.append(f"  gpu{i}: {text(pynvml.nvmlDeviceGetName(h))}, memory {mem.used // 2**20}/"
                         f"{mem.total // 2**20} MiB used, util {util.gpu}%")
        return count, lines
    finally:
        pynvml.nvmlShutdown()


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true",
                   help="build the inputs, print the queue files and check them with `sched submit --dry-run`")
    p.add_argument("--budget", type=float, default=420, help="seconds for everything (items left out when short)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (databases, run logs)")
    p.add_argument("--allow-no-gpu", action="store_true",
                   help="without a CUDA GPU, SKIP the items (no GPU) instead of FAILing the setup: "
                        "to prove the set-up on a machine without one")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    deadline = time.monotonic() + args.budget
    gpu_count, lines = nvml_lines()
    for line in lines:
        print(line)
    torch_info = probe_torch()
    print(f"torch: {json.dumps(torch_info)}")
    cuda = bool(torch_info.get("cuda"))
    precision = "bf16" if torch_info.get("bf16") or not cuda else "fp16"
    print(f"precision: {precision}" + ("" if cuda else " (no CUDA here: what a bf16 GPU would get)"))
    work = Path(tempfile.mkdtemp(prefix="sched-gpu-check-"))
    print(f"work folder: {work}" + (" (kept)" if args.keep else " (removed at the end)"), flush=True)
    check = Check(work, deadline)
    try:
        t0 = time.monotonic()
        build_inputs(work)
        print(f"inputs built in {time.monotonic() - t0:.0f} s: {work / 'long.csv'} ({OOM_ROWS} rows), "
              f"{work / 'oom-model'}", flush=True)
        specs = queue_files(precision, work)
        bad = []
        for item, spec in specs.items():
            if args.dry_run:
                print(f"--- queue file for ({item}) {ITEMS[item]}:\n"
                      + yaml.safe_dump(spec, sort_keys=False, allow_unicode=True).rstrip())
            done = check.submit(item, spec, dry_run=True)
            if done.returncode != 0:
                bad.append(f"({item}): {(done.stdout + done.stderr).strip()}")
        no_gpu = not cuda and not args.dry_run
        problems = [f"no CUDA GPU (torch: {torch_info})"] if no_gpu and not args.allow_no_gpu else []
        if bad or problems:
            check.record("setup", FAIL, "; ".join(problems + bad))
        else:
            check.record("setup", PASS, f"{gpu_count} GPU(s) by NVML, torch {torch_info.get('torch')}, "
                                        f"{len(specs)} queue files valid (sched submit --dry-run)"
                                        + (", no CUDA GPU (--allow-no-gpu)" if no_gpu else ""))
        if args.dry_run or no_gpu or check.results["setup"][0] == FAIL:
            why = "dry run" if args.dry_run else "setup failed" if check.results["setup"][0] == FAIL else "no GPU"
            for item in "abcdef":
                check.record(item, SKIP, why)
        else:
            nvml = NvmlSampler()
            item_a(check, specs["a"])
            item_b(check, specs["b"], gpu_count, nvml)
            snapshots = item_c(check, specs["c"])
            item_d(check, specs["d"])
            item_e(check, snapshots)
            item_f(check)
    except Exception as exc:  # noqa: BLE001 - report what broke, and the items it kept from running
        check.record("setup" if "setup" not in check.results else next(i for i in "abcdef" if i not in check.results),
                     FAIL, f"{type(exc).__name__}: {exc}")
        for item in ITEMS:
            if item not in check.results:
                check.record(item, SKIP, "not reached")
    finally:
        if not args.keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    print()
    print("summary")
    for k, (state, detail) in check.results.items():
        label = ITEMS[k] if k == "setup" else f"({k}) {ITEMS[k]}"
        print(f"  {label:<52} {state:<5} {detail.splitlines()[0][:150]}")
    failed = [k for k, (state, _) in check.results.items() if state == FAIL]
    print(f"{'FAIL: ' + ', '.join(failed) if failed else 'no FAIL'} ({args.budget - (deadline - time.monotonic()):.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""The two sides of the fine-tune benches (bench_finetune.py, profile_startup.py).

- sched: a `finetune` job as users run it. A queue file of two identical fine-tunes goes in with
  `sched submit` to a long-running `sched worker` (warm, the default). The first job is not
  counted: it starts a runner of its own, and while it trains the slot's spare runner imports
  what the second needs (torch, transformers, the pipeline). The second is measured: it starts on
  that warm spare, as every job after the first of a campaign does. Samples/s is the metric the job
  recorded in the database (`train_samples_per_second`, the Trainer's own); the start-up is the
  table the runner writes to the job's log with SCHED_PROFILE_STARTUP=1 (pipeline/startup.py),
  from the claim to the end of the first optimizer step.
- plain: bench/plain_trainer.py, a Trainer script as a competent user writes it, started as a
  fresh `python` process on the same rows (the job's own split, written to CSV), the same model
  folder, epochs, batch size, max_length, learning rate, warm-up, seed and precision, and the
  same loss: the sched job runs plain cross-entropy (focal_gamma 0, label_smoothing 0, no SWA, no
  early stopping: the defaults), as the Trainer's built-in loss does.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.benchlib import ROOT, sched_cmd, silenced

PLAIN_SCRIPT = ROOT / "bench" / "plain_trainer.py"
TRAIN_CSV = ROOT / "data" / "reviews_train.csv"


@dataclass
class Run:
    """One training run of either side."""

    samples_per_s: float
    to_first_step: float  # sched: claim -> first step; plain: process start -> first step
    after_imports: float | None  # plain: end of imports -> first step (None for sched)
    phases: list[tuple[str, float]]  # (phase, seconds) up to the first step
    warm: bool = True  # sched: the job's log says it started on a warm runner


def job_params(args) -> dict:
    """The fine-tune both sides run (a sched job's params; the plain script gets the same values)."""
    return {"model": args.model_path, "train": str(TRAIN_CSV), "test": None, "max_train_rows": args.rows_in_file,
            "val_fraction": 0.1, "split_seed": 0, "epochs": args.epochs, "batch_size": args.batch,
            "max_length": args.max_length, "lr": args.lr, "warmup_ratio": 0.1, "seed": 0,
            "metric_for_best": "accuracy", "focal_gamma": 0.0, "label_smoothing": 0.0, "swa_epochs": 0,
            "early_stopping_patience": 0}


def prepare(args, workdir: Path) -> None:
    """The model folder both sides load, and the job's own train/val split as CSVs for the plain side.

    Sets args.model_path, args.rows_in_file, args.train_csv, args.val_csv, args.train_rows."""
    from jobs.finetune import Params, load_data

    args.rows_in_file = int(round(args.rows / 0.9))  # the job holds 10% of them out for validation
    args.model_path = _tiny(workdir / "tiny") if args.model == "tiny" else args.model
    split, _ = load_data(Params.model_validate(job_params(args)))
    args.train_csv, args.val_csv = workdir / "train.csv", workdir / "val.csv"
    split.train[["text", "label"]].to_csv(args.train_csv, index=False)
    split.val[["text", "label"]].to_csv(args.val_csv, index=False)
    args.train_rows, args.val_rows = len(split.train), len(split.val)


def _tiny(folder: Path) -> str:
    """The tiny preset, built once from the training texts (as `model: tiny` builds it in a job)."""
    from pipeline.data import load_labeled_csv
    from pipeline.models import build_tiny

    if not (folder / "model.safetensors").exists():
        with silenced():
            build_tiny(folder, load_labeled_csv(TRAIN_CSV)["text"].tolist())
    return str(folder)


def bench_env(workdir: Path, threads: int) -> dict[str, str]:
    """The environment of both sides: offline, quiet, the same CPU threads, a token cache in workdir."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads), "SCHED_CACHE_DIR": str(workdir / "token-cache"),
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


# ---- sched ----------------------------------------------------------------------------------------

class SchedWorker:
    """A `sched worker` on one slot (one GPU, or one CPU slot), warm, with start-up profiles on."""

    def __init__(self, workdir: Path, gpus: str, env: dict[str, str]):
        self.workdir, self.gpus = workdir, gpus
        for old in workdir.glob("bench.db*"):  # a --workdir used before: start afresh
            old.unlink()
        shutil.rmtree(workdir / "runs", ignore_errors=True)
        self.url = f"sqlite:///{workdir}/bench.db"
        self.env = {"SCHED_PROFILE_STARTUP": "1", **env}  # the caller may ask for "cprofile"
        self.log = open(workdir / "worker.log", "w")
        self.proc = subprocess.Popen(
            sched_cmd("--db", self.url, "worker", "--gpus", gpus, "--cpu-slots", "1", "--runs", str(workdir / "runs")),
            cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        self.rounds = 0

    def run_pair(self, params: dict, timeout: float = 1800) -> tuple[Run, Run]:
        """Submit two identical fine-tunes in one queue file; (the first, cold; the second, warm)."""
        self.rounds += 1
        names = [f"ft{self.rounds}-lead", f"ft{self.rounds}"]
        queue_file = self.workdir / f"queue-{self.rounds}.yaml"
        gpus = 0 if self.gpus == "none" else 1
        jobs = [{"name": n, "kind": "finetune", "gpus": gpus, "max_attempts": 1, "params": params} for n in names]
        queue_file.write_text(json.dumps({"jobs": jobs}))  # JSON is YAML
        subprocess.run(sched_cmd("--db", self.url, "submit", str(queue_file)), cwd=ROOT, env=self.env,
                       check=True, capture_output=True)
        records = [self._wait(n, timeout) for n in names]
        return self._run(records[0]), self._run(records[1])

    def _wait(self, name: str, timeout: float):
        from scheduler.jobqueue import JobQueue
        from scheduler.records import Records

        queue = JobQueue(self.url)
        try:
            deadline = time.monotonic() + timeout
            while True:
                row = queue.get(name)
                if row.status not in ("queued", "running"):
                    break
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the sched worker stopped or timed out; see {self.log.name}")
                time.sleep(0.2)
            if row.status != "succeeded":
                raise SystemExit(f"sched job {name} ended {row.status}: {row.message}; see {row.log_path}")
            return Records(queue).job(name), Path(row.log_path).read_text(errors="replace")
        finally:
            queue.dispose()

    @staticmethod
    def _run(found) -> Run:
        from pipeline.startup import read_table

        record, log_text = found
        phases = read_table(log_text)
        return Run(samples_per_s=record.metrics["train_samples_per_second"],
                   to_first_step=sum(s for _, s in phases), after_imports=None, phases=phases,
                   warm="(warm runner)" in log_text.splitlines()[0])

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


# ---- plain ----------------------------------------------------------------------------------------

def run_plain(args, workdir: Path, env: dict[str, str], label: str) -> Run:
    """bench/plain_trainer.py as a fresh process on the job's rows and model."""
    out, report = workdir / f"plain-{label}", workdir / f"plain-{label}.json"
    cmd = [sys.executable, str(PLAIN_SCRIPT), "--train", str(args.train_csv), "--val", str(args.val_csv),
           "--model", args.model_path, "--out", str(out), "--report", str(report), "--epochs", str(args.epochs),
           "--batch", str(args.batch), "--max-length", str(args.max_length), "--lr", str(args.lr),
           "--warmup", "0.1", "--seed", "0"]
    env = {**env, "CUDA_VISIBLE_DEVICES": "" if args.gpus == "none" else args.gpus.split(",")[0]}
    started = time.time()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"plain_trainer.py failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    got = json.loads(report.read_text())
    # Each phase is named by the mark at its end; the first, "imports", includes the interpreter's start.
    marks = [("process started", started), *[(name, at) for name, at in got["marks"]]]
    phases = [(name, at - before) for (_, before), (name, at) in zip(marks, marks[1:])]
    at = dict(got["marks"])
    return Run(samples_per_s=got["train_rows"] * got["epochs"] / got["train_runtime"],
               to_first_step=at["first training step"] - started,
               after_imports=at["first training step"] - at["imports"], phases=phases)


def has_gpu() -> bool:
    """Whether NVML sees a GPU (the bench process itself never starts CUDA)."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no driver, or no nvidia-ml-py
        return False
    try:
        return pynvml.nvmlDeviceGetCount() > 0
    finally:
        pynvml.nvmlShutdown()

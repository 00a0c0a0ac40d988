"""What a job sees of the world while it runs: its folders, its device, and a way to report.

The context knows nothing of databases: the scheduler hands it a `Reporter` (the queue's records
in production, an in-memory one in tests), so `jobs` never imports `scheduler`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol


class Preempted(Exception):
    """Raised by a job that saw `ctx.should_stop()`: it ends as preempted and is queued again."""


class Reporter(Protocol):
    def log_metric(self, job_id: int, key: str, value: float, step: int | None, split: str | None) -> None: ...
    def add_artifact(self, job_id: int, name: str, path: str) -> None: ...
    def set_progress(self, job_id: int, done: float, total: float | None, message: str | None) -> None: ...
    def job(self, ref: str | int) -> Any: ...
    def jobs_where(self, *, kind: str | None = None, tag: str | None = None,
                   status: str | None = None) -> list[str]: ...
    # Optional: finish_by(job_id) -> epoch seconds or None (JobContext.finish_by)


@dataclass
class MemoryReporter:
    """A reporter that keeps everything in lists: for tests and for running a job by hand."""

    metrics: list[dict] = field(default_factory=list)
    artifacts: dict[str, str] = field(default_factory=dict)
    progress_updates: list[tuple] = field(default_factory=list)
    others: dict[str, Any] = field(default_factory=dict)
    end_by: float | None = None  # what finish_by() answers (epoch seconds)

    def finish_by(self, job_id):
        return self.end_by

    def expected_seconds(self, job_id):
        return None

    def log_metric(self, job_id, key, value, step, split):
        self.metrics.append(dict(key=key, value=float(value), step=step, split=split))

    def add_artifact(self, job_id, name, path):
        self.artifacts[name] = str(path)

    def set_progress(self, job_id, done, total, message):
        self.progress_updates.append((done, total, message))

    def job(self, ref):
        if ref not in self.others:
            raise LookupError(f"no job named '{ref}'")
        return self.others[ref]

    def jobs_where(self, *, kind=None, tag=None, status=None):
        return [name for name, rec in self.others.items()
                if (kind is None or rec.kind == kind) and (status is None or rec.status == status)
                and (tag is None or tag in rec.tags)]


# Progress writes are throttled: a training loop may report every step, the queue needs a glance.
PROGRESS_MIN_INTERVAL_S = 1.0


@dataclass
class JobContext:
    job_id: int
    name: str
    output_dir: Path
    device: str  # "cuda" when the slot has a GPU (CUDA_VISIBLE_DEVICES names it), else "cpu"
    reporter: Reporter
    attempt: int = 1
    stop_requested: Callable[[], bool] = lambda: False
    group: str | None = None  # shared by the jobs of one `workers: k` entry (e.g. one Optuna study)
    db_url: str | None = None  # the queue's database URL (it may hold a password: do not print it)
    # Opens Optuna's storage on the queue's database: studies(heartbeat_s=, grace_s=,
    # stale_trial_callback=) -> RDBStorage. The scheduler supplies it; None outside a queue.
    studies: Callable[..., Any] | None = None
    _last_progress: float = field(default=0.0, repr=False)

    def __post_init__(self):
        self.output_dir = Path(self.output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)

    @property
    def checkpoint_dir(self) -> Path:
        """Kept across attempts of this job, so a job run again can resume from it."""
        path = self.output_dir / "checkpoints"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def log_metric(self, key: str, value: float, step: int | None = None, split: str | None = None) -> None:
        self.reporter.log_metric(self.job_id, key, value, step, split)

    def progress(self, done: float, total: float | None = None, message: str | None = None) -> None:
        now = time.monotonic()
        finished = total is not None and done >= total
        if finished or now - self._last_progress >= PROGRESS_MIN_INTERVAL_S:
            self._last_progress = now
            self.reporter.set_progress(self.job_id, done, total, message)

    def add_artifact(self, name: str, path: str | Path) -> None:
        self.reporter.add_artifact(self.job_id, name, str(Path(path).resolve()))

    def job(self, name: str):
        """Another job's record (output_dir, metrics, artifacts, params, status) by name."""
        return self.reporter.job(name)

    def jobs_where(self, *, kind: str | None = None, tag: str | None = None,
                   status: str | None = None) -> list[str]:
        return self.reporter.jobs_where(kind=kind, tag=tag, status=status)

    def finish_by(self) -> float | None:
        """When the scheduler wants this job to have ended (epoch seconds), or None: its campaign's
        deadline policy cuts a job that can end early (a tune) short. Asked between units of work."""
        ask = getattr(self.reporter, "finish_by", None)
        return None if ask is None else ask(self.job_id)

    def expected_seconds(self) -> float | None:
        """How long the scheduler's forecast expected this job to take (seconds), or None."""
        ask = getattr(self.reporter, "expected_seconds", None)
        return None if ask is None else ask(self.job_id)

    def should_stop(self) -> bool:
        """True when the worker asks this job to stop (shutdown, or a higher-priority job waits).

        A job that can stop cleanly checks this between units of work and raises `Preempted`.
        """
        return self.stop_requested()

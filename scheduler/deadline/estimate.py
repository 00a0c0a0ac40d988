"""A job's expected duration, and where it comes from.

In this order: its own progress while it runs (time so far / share done), finished jobs of the
same kind and model scaled by the work each did (rows x epochs, x trials for a tune), finished
jobs of the same kind scaled the same way, its `expected:` hint; else it is unknown.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass

PROGRESS, HISTORY, KIND_HISTORY, EXPECTED, UNKNOWN = "progress", "history", "history (kind)", "expected", "unknown"
MIN_PROGRESS_SHARE = 0.02  # below this a job's own rate says little (start-up dominates)
MIN_PROGRESS_S = 5.0
HISTORY_DEPTH = 5  # like jobs that count (the latest)


@dataclass(frozen=True)
class Estimate:
    seconds: float | None  # total duration of the job (running jobs: from its start)
    source: str

    @property
    def known(self) -> bool:
        return self.seconds is not None


@dataclass(frozen=True)
class Finished:
    """A job that succeeded, as history: how long it took for how much work."""

    kind: str
    model: str | None
    units: float | None
    seconds: float


class RowCounter:
    """Data rows of CSV/text files, read once per file version (path, size, mtime)."""

    def __init__(self):
        self.seen: dict[tuple, int] = {}

    def __call__(self, path: str) -> int | None:
        try:
            info = os.stat(path)
        except OSError:
            return None
        key = (os.path.abspath(path), info.st_size, info.st_mtime_ns)
        if key not in self.seen:
            with open(path, "rb") as fh:
                lines = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
            self.seen[key] = max(lines - (1 if path.endswith(".csv") else 0), 0)
        return self.seen[key]


def model_key(kind_name: str, params: dict) -> str | None:
    """The model a job trains, as history matches it: a hub name or path, or the job it starts
    from (`{from: tapt-x}`); its kind says which param names it (display.model_param/params_of)."""
    kind = _kind(kind_name)
    if kind is None or not kind.display.model_param:
        return None
    inner = params.get(kind.display.params_of, params) if kind.display.params_of else params
    model = inner.get(kind.display.model_param) if isinstance(inner, dict) else None
    if isinstance(model, dict):
        model = model.get("from")
    return None if model is None else str(model)


def work_units(kind_name: str, params: dict, rows_of=None, group_size: int = 1) -> float | None:
    """The work the job does, as its kind measures it (jobs/work.py), shared among the jobs of a
    `workers: k` group; None when the kind does not say."""
    kind = _kind(kind_name)
    if kind is None or kind.work is None:
        return None
    units = kind.work(params, rows_of or RowCounter())
    return None if units is None else units / max(group_size, 1)


def _kind(name: str):
    from jobs import UnknownKind, get_kind

    try:
        return get_kind(name)
    except UnknownKind:
        return None


def from_history(kind: str, model: str | None, units: float | None, history: list[Finished]) -> Estimate | None:
    """Like jobs' seconds per unit of work times this job's units (or their median duration)."""
    for source, alike in ((HISTORY, [h for h in history if h.kind == kind and h.model == model]),
                          (KIND_HISTORY, [h for h in history if h.kind == kind])):
        alike = alike[-HISTORY_DEPTH:]
        if not alike:
            continue
        scaled = [h.seconds / h.units for h in alike if h.units]
        if units and scaled:
            return Estimate(statistics.median(scaled) * units, source)
        if source == HISTORY or not units:
            return Estimate(statistics.median(h.seconds for h in alike), source)
    return None


def from_progress(elapsed: float, done: float | None, total: float | None) -> Estimate | None:
    """A running job's own rate: time so far over the share it has done."""
    if not done or not total or total <= 0 or elapsed < MIN_PROGRESS_S:
        return None
    share = min(done / total, 1.0)
    if share < MIN_PROGRESS_SHARE:
        return None
    return Estimate(elapsed / share, PROGRESS)


def estimate(kind: str, params: dict, *, history: list[Finished], expected_s: float | None = None,
             elapsed: float | None = None, progress: tuple[float | None, float | None] = (None, None),
             rows_of=None, group_size: int = 1) -> Estimate:
    """The job's expected total duration by the first source that knows (module docstring)."""
    if elapsed is not None:
        own = from_progress(elapsed, *progress)
        if own is not None:
            return own
    units = work_units(kind, params, rows_of, group_size)
    learned = from_history(kind, model_key(kind, params), units, history)
    if learned is not None:
        return learned
    if expected_s is not None:
        return Estimate(float(expected_s), EXPECTED)
    return Estimate(None, UNKNOWN)



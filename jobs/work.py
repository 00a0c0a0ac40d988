"""How much work a job does, in units its kind's history scales by: rows x epochs (x trials).

The deadline forecast (scheduler/deadline/estimate.py) takes a like job's seconds per unit times
this job's units, so a fine-tune on twice the rows or epochs is expected to take twice as long.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

RowsOf = Callable[[str], "int | None"]


def rows_x_epochs(params: dict, rows_of: RowsOf) -> float | None:
    """Training rows (train less its validation share, or `texts`) x epochs; None without data files."""
    rows = _rows(params, rows_of)
    if rows is None:
        return None
    epochs = params.get("epochs")
    return rows * (float(epochs) if isinstance(epochs, (int, float)) and epochs > 0 else 1.0)


def tune_work(params: dict, rows_of: RowsOf) -> float | None:
    """An average trial (the search space at its middle) x n_trials."""
    finetune = params.get("finetune")
    trials = params.get("n_trials")
    if not isinstance(finetune, dict) or not trials:
        return None
    trial = rows_x_epochs({**finetune, **_space_middle(params.get("space"))}, rows_of)
    return None if trial is None else trial * trials


def _rows(params: dict, rows_of: RowsOf) -> float | None:
    files = params.get("train") or params.get("texts")
    files = [files] if isinstance(files, str) else files
    if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
        return None
    counts = [rows_of(f) for f in files]
    if any(c is None for c in counts):
        return None
    rows = float(sum(counts))
    cap = params.get("max_texts") or params.get("max_rows") or params.get("max_train_rows")
    if isinstance(cap, int) and cap > 0:
        rows = min(rows, cap)
    if "train" in params and not params.get("full_data"):
        share = params.get("val_fraction", 0.1)
        rows *= 1 - (share if isinstance(share, (int, float)) and 0 < share < 1 else 0.1)
    return rows


def _space_middle(space: Any) -> dict:
    out = {}
    for name, spec in (space or {}).items():
        if isinstance(spec, dict) and spec.get("type") in ("int", "float") and "low" in spec and "high" in spec:
            out[name] = (spec["low"] + spec["high"]) / 2
    return out

"""Is a run learning? The checks that stop a dead or diverged run early, and that keep a dead model
out of an ensemble. Plain numpy, no torch: the ensemble and the job kinds use them too.

A run that cannot recover raises a `TrainingStalled` subclass. They are `InputError`s on purpose: the
cause is the settings (too high a learning rate, data the model cannot fit), so running the same job
again gives the same failure, and the queue fails it at once instead of retrying it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .errors import InputError


class TrainingStalled(InputError):
    """Training stopped because it cannot lead anywhere; the message says why and what to change."""


class Diverged(TrainingStalled):
    """The training loss became NaN or infinite."""


class NotLearning(TrainingStalled):
    """After the grace epochs the model still predicts one class, or scores no better than the majority."""


def check_loss(value: float, step: int, what: str = "training loss") -> None:
    """Raise Diverged when a logged loss is NaN or infinite."""
    if not math.isfinite(value):
        raise Diverged(f"{what} {value} at step {step}; lower lr (or use fp32 / a smaller warmup ratio)")


def top_class_share(preds: Sequence[int] | np.ndarray, num_labels: int | None = None) -> float:
    """Share of the rows given to the most predicted class (1.0: the model predicts one class)."""
    preds = np.asarray(preds, dtype=np.int64)
    if preds.size == 0:
        return 0.0
    return float(np.bincount(preds, minlength=num_labels or 0).max() / preds.size)


def majority_share(labels: Sequence[int] | np.ndarray) -> float:
    """Accuracy of always answering the most frequent true class (the floor a model must beat)."""
    labels = np.asarray(labels, dtype=np.int64)
    return float(np.bincount(labels).max() / labels.size) if labels.size else 0.0


def dead_reason(labels, preds, *, collapse_share: float, min_gain: float = 0.0,
                names: Sequence[str] | None = None) -> str | None:
    """Why these predictions show a model that learned nothing, or None when they look alive."""
    labels, preds = np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)
    top = int(np.bincount(preds).argmax()) if preds.size else 0
    shown = names[top] if names is not None and top < len(names) else str(top)
    return dead_reason_of(top_class_share(preds), float((labels == preds).mean()) if labels.size else 0.0,
                          majority_share(labels), collapse_share=collapse_share, min_gain=min_gain, top_name=shown)


def dead_reason_of(top_share: float, accuracy: float, majority: float, *, collapse_share: float,
                   min_gain: float = 0.0, top_name: str | None = None) -> str | None:
    """The same verdict from summary numbers (what the Trainer's evaluation gives per epoch).

    One class: the most predicted class takes `collapse_share` of the rows or more. At or below the
    majority: accuracy <= the majority class's share + `min_gain`.
    """
    if top_share >= collapse_share:
        which = f" '{top_name}'" if top_name is not None else ""
        return f"predictions are one class ({top_share:.1%} of rows{which})"
    if accuracy <= majority + min_gain:
        gain = f" + {min_gain:g}" if min_gain else ""
        return f"accuracy {accuracy:.4f} is at or below the majority class's share {majority:.4f}{gain}"
    return None

"""Classification metrics in plain numpy (no sklearn dependency on the workers)."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax (shifted by the row max)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def accuracy(labels, preds) -> float:
    """Share of exact matches; 0.0 for empty input."""
    labels, preds = np.asarray(labels), np.asarray(preds)
    return float((labels == preds).mean()) if labels.size else 0.0


def macro_f1(labels, preds, num_labels: int | None = None) -> float:
    """Unweighted mean of per-class F1 over ``num_labels`` classes (default: classes seen in either).

    A class with no true and no predicted rows is left out of the mean (sklearn's ``labels=`` default);
    a class that is present but never predicted correctly counts as F1 = 0.
    """
    labels, preds = np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)
    if labels.size == 0:
        return 0.0
    n = num_labels if num_labels is not None else int(max(labels.max(), preds.max())) + 1
    # confusion[i, j] = rows with true label i predicted as j
    confusion = np.bincount(labels * n + preds, minlength=n * n).reshape(n, n)
    tp = np.diag(confusion).astype(np.float64)
    support, predicted = confusion.sum(1), confusion.sum(0)
    present = (support + predicted) > 0
    denom = support + predicted  # 2TP + FP + FN
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1[present].mean())


def compute_metrics(eval_pred) -> dict[str, float]:
    """``Trainer(compute_metrics=...)``: accuracy, macro-F1 and the share of the most predicted class
    (1.0: the model predicts one class; `pipeline.health` reads it) from an EvalPrediction."""
    logits, labels = eval_pred.predictions, eval_pred.label_ids
    if isinstance(logits, tuple):  # some models return (logits, hidden_states, ...)
        logits = logits[0]
    preds = np.asarray(logits).argmax(-1)
    top_share = float(np.bincount(preds).max() / preds.size) if preds.size else 0.0
    return {"accuracy": accuracy(labels, preds), "f1": macro_f1(labels, preds), "top_share": top_share}

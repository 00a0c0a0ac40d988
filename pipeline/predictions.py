"""The one layout of every predictions file the project writes (fine-tune, baseline, ensemble, predict).

Columns, in this order:

    id          the row's id: a column of the input CSV, or the row's number in its file from 0
    text        the (normalised) text the model read
    label       the true class, only when the rows have one
    pred        the predicted class (an integer 0..n-1)
    pred_name   its name (data.LABEL_NAMES for 4 classes)
    prob_0 ...  one probability column per class, in class order (each row sums to 1)

A competition submission is a different file with the competition's own columns (the ensemble's
`submission`); this one is for people and for other jobs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .data import LABEL_NAMES


def prob_columns(num_classes: int) -> list[str]:
    return [f"prob_{c}" for c in range(num_classes)]


def class_names(num_classes: int) -> list[str]:
    return list(LABEL_NAMES) if num_classes == len(LABEL_NAMES) else [str(c) for c in range(num_classes)]


def prediction_frame(probs: np.ndarray, *, ids: Sequence | None = None, texts: Sequence[str] | None = None,
                     labels: Sequence[int] | None = None) -> pd.DataFrame:
    """The predictions table for class probabilities `probs` [n_rows, n_classes]."""
    probs = np.asarray(probs, dtype=np.float64)
    n, classes = probs.shape
    preds = probs.argmax(-1)
    names = class_names(classes)
    frame = pd.DataFrame({"id": list(ids) if ids is not None else list(range(n))})
    if texts is not None:
        frame["text"] = list(texts)
    if labels is not None:
        frame["label"] = np.asarray(labels, dtype=np.int64)
    frame["pred"] = preds
    frame["pred_name"] = [names[p] for p in preds]
    for column, values in zip(prob_columns(classes), probs.T):
        frame[column] = values.round(6)
    return frame


def write_predictions(path: str | os.PathLike, probs: np.ndarray, **rows) -> str:
    """Write the predictions table (see `prediction_frame` for `ids`, `texts`, `labels`); returns the path."""
    prediction_frame(probs, **rows).to_csv(path, index=False)
    return os.fspath(path)


def read_predictions(path: str | os.PathLike) -> pd.DataFrame:
    """A predictions file as written (text kept as text, "NA" included)."""
    return pd.read_csv(path, dtype={"text": str, "id": str}, keep_default_na=False)

"""Loading, validating and splitting the labelled review CSVs.

This module must stay free of torch/transformers imports: the queue CLI imports it to
validate a campaign's data before any job is enqueued, and that has to be fast.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import csvcache
from .errors import InputError

LABEL_NAMES = ("strong negative", "weak negative", "weak positive", "strong positive")

_WHITESPACE = re.compile(r"\s+")
# How many offending rows an error message lists before it says "and N more".
_MAX_ROWS_IN_MESSAGE = 5


class DataError(InputError):
    """A data file cannot be used; the message names the file and what is wrong with it."""


@dataclass
class Split:
    """A train/validation split and a fingerprint of exactly which rows went to validation."""

    train: pd.DataFrame
    val: pd.DataFrame
    fingerprint: str


def normalize_text(s: str) -> str:
    """Unicode NFC plus whitespace collapse, so equal-looking reviews tokenize (and hash) equally."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", s)).strip()


def _row_numbers(mask: pd.Series) -> str:
    """Name the failing rows by 1-based data row number (header not counted: file line = row + 1)."""
    rows = [int(i) + 1 for i in np.flatnonzero(mask.to_numpy())]
    shown = ", ".join(str(r) for r in rows[:_MAX_ROWS_IN_MESSAGE])
    more = len(rows) - _MAX_ROWS_IN_MESSAGE
    return "data row " + shown + (f" and {more} more" if more > 0 else "")


def _read_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read a CSV as strings, turning every way it can fail into a DataError naming the file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"{path}: file not found")
    if os.path.getsize(path) == 0:
        raise DataError(f"{path}: file is empty")
    try:
        # dtype=str keeps labels like "2.5" or "x" visible for a precise error message below;
        # keep_default_na=False stops pandas from turning the text "NA" or "null" into NaN.
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")  # -sig: tolerate a BOM
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not valid UTF-8 (byte {exc.object[exc.start:exc.start + 1]!r} at offset {exc.start}); "
            "re-save the file as UTF-8"
        ) from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty (no header row)") from None
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: not a valid CSV file: {exc}") from None
    if df.empty:
        raise DataError(f"{path}: file has a header but no data rows")
    return df


def _require_column(df: pd.DataFrame, column: str, path) -> None:
    if column not in df.columns:
        raise DataError(
            f"{os.fspath(path)}: missing column {column!r}; available columns: {', '.join(map(repr, df.columns))}"
        )


def _clean_texts(raw: pd.Series, column: str, path) -> pd.Series:
    """Normalize the text column and reject empty (or whitespace-only) entries by row number."""
    # Short rows leave NaN in trailing fields even with keep_default_na=False.
    texts = raw.fillna("").map(normalize_text)
    empty = texts == ""
    if empty.any():
        raise DataError(
            f"{os.fspath(path)}: column {column!r} is empty or missing in {int(empty.sum())} row(s): "
            f"{_row_numbers(empty)}"
        )
    return texts


def _parse_labels(raw: pd.Series, column: str, num_labels: int, path) -> pd.Series:
    """Turn the label strings into ints, naming the first bad value and its row."""
    stripped = raw.fillna("").str.strip()
    is_int = stripped.str.fullmatch(r"[+-]?\d+")
    if not is_int.all():
        bad = ~is_int
        first = stripped[bad].iloc[0]
        raise DataError(
            f"{os.fspath(path)}: column {column!r} must hold integer labels 0..{num_labels - 1}; "
            f"found {first!r} at {_row_numbers(bad)}"
        )
    labels = stripped.astype(np.int64)
    out_of_range = (labels < 0) | (labels >= num_labels)
    if out_of_range.any():
        first = int(labels[out_of_range].iloc[0])
        raise DataError(
            f"{os.fspath(path)}: label {first} in column {column!r} is outside 0..{num_labels - 1} "
            f"at {_row_numbers(out_of_range)}"
        )
    return labels


def load_labeled_csv(
    path: str | os.PathLike,
    text_column: str = "review",
    label_column: str = "label",
    num_labels: int = 4,
) -> pd.DataFrame:
    """Load a labelled CSV as a DataFrame with columns ``text`` (normalized str) and ``label`` (int).

    Raises DataError, naming the file and the column/row, for: missing or empty file, non-UTF-8
    bytes, a missing column, empty text, and labels that are not integers in 0..num_labels-1.
    A file read before (unchanged since) comes from `pipeline.csvcache`.
    """
    entry = csvcache.entry_for(path, "labeled", text_column, label_column, num_labels)
    cached = csvcache.load(entry)
    if cached is not None and cached[1] is not None:
        return _labeled_frame(pd.Series(cached[0], dtype=str), pd.Series(cached[1], dtype=np.int64))
    df = _read_csv(path)
    _require_column(df, text_column, path)
    _require_column(df, label_column, path)
    frame = _labeled_frame(_clean_texts(df[text_column], text_column, path),
                           _parse_labels(df[label_column], label_column, num_labels, path))
    csvcache.save(entry, frame["text"].tolist(), frame["label"].to_numpy())
    return frame


def _labeled_frame(texts: pd.Series, labels: pd.Series) -> pd.DataFrame:
    return pd.DataFrame({"text": texts, "label": labels}).reset_index(drop=True)


def check_labeled_csv(path: str | os.PathLike, text_column: str = "review", label_column: str = "label",
                      num_labels: int = 4) -> int:
    """What `load_labeled_csv` would refuse, checked fast (two columns read, no text normalised):
    the file, its columns, non-empty texts and labels in 0..num_labels-1. Returns the row count.
    A file `load_labeled_csv` accepted as it is now (its cache entry) passes without a read."""
    accepted = csvcache.rows(csvcache.entry_for(path, "labeled", text_column, label_column, num_labels))
    if accepted is not None:
        return accepted
    frame = _read_columns(path, [text_column, label_column])
    empty = frame[text_column].fillna("").str.strip() == ""
    if empty.any():
        raise DataError(f"{os.fspath(path)}: column {text_column!r} is empty or missing in {int(empty.sum())} "
                        f"row(s): {_row_numbers(empty)}")
    _parse_labels(frame[label_column], label_column, num_labels, path)
    return len(frame)


def check_text_csv(path: str | os.PathLike, text_column: str = "review") -> int:
    """The file exists, is a CSV and has the text column (for TAPT, predict, test files)."""
    accepted = csvcache.rows(csvcache.entry_for(path, "texts", text_column))
    return accepted if accepted is not None else len(_read_columns(path, [text_column]))


def _read_columns(path: str | os.PathLike, columns: list[str]) -> pd.DataFrame:
    if not os.path.exists(path):
        raise DataError(f"{os.fspath(path)}: file not found")
    if os.path.isdir(path):
        raise DataError(f"{os.fspath(path)}: a folder, not a CSV file")
    try:
        header = pd.read_csv(path, nrows=0, encoding="utf-8-sig").columns
    except UnicodeDecodeError:
        raise DataError(f"{os.fspath(path)}: not valid UTF-8; re-save the file as UTF-8") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{os.fspath(path)}: file is empty (no header row)") from None
    except pd.errors.ParserError as exc:
        raise DataError(f"{os.fspath(path)}: not a valid CSV file: {exc}") from None
    for column in columns:
        if column not in header:
            raise DataError(f"{os.fspath(path)}: missing column {column!r}; available columns: "
                            f"{', '.join(map(repr, header))}")
    try:
        frame = pd.read_csv(path, usecols=list(dict.fromkeys(columns)), dtype=str, keep_default_na=False,
                            encoding="utf-8-sig")
    except (UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DataError(f"{os.fspath(path)}: not a valid UTF-8 CSV file: {exc}") from None
    if frame.empty:
        raise DataError(f"{os.fspath(path)}: file has a header but no data rows")
    return frame


def load_texts(path: str | os.PathLike, text_column: str = "review") -> list[str]:
    """Load the (normalized) texts of a CSV, ignoring any label column: input for TAPT or predict.
    A file read before (unchanged since) comes from `pipeline.csvcache`."""
    entry = csvcache.entry_for(path, "texts", text_column)
    cached = csvcache.load(entry)
    if cached is not None:
        return cached[0]
    df = _read_csv(path)
    _require_column(df, text_column, path)
    texts = _clean_texts(df[text_column], text_column, path).tolist()
    csvcache.save(entry, texts)
    return texts


def has_column(path: str | os.PathLike, column: str) -> bool:
    """Whether the CSV's header names `column` (reads the header only)."""
    try:
        header = pd.read_csv(path, nrows=0, encoding="utf-8-sig").columns
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return False
    return column in header


def load_rows(path: str | os.PathLike, text_column: str = "review", id_column: str | None = None) -> pd.DataFrame:
    """Rows to predict: columns ``id`` (the `id_column`'s values, else the row number from 0) and ``text``."""
    df = _read_csv(path)
    _require_column(df, text_column, path)
    ids = list(range(len(df)))
    if id_column is not None:
        _require_column(df, id_column, path)
        ids = df[id_column].tolist()
    return pd.DataFrame({"id": ids, "text": _clean_texts(df[text_column], text_column, path)})


def rows_fingerprint(df: pd.DataFrame) -> str:
    """Short sha256 over the sorted (text, label) identities of the rows: order-independent."""
    h = hashlib.sha256()
    for text, label in sorted(zip(df["text"], df["label"].astype(int))):
        h.update(f"{label}\t{text}\n".encode("utf-8"))
    return h.hexdigest()[:16]


def stratified_split(df: pd.DataFrame, val_fraction: float = 0.1, seed: int = 42) -> Split:
    """Split into train/val keeping each label's share, deterministic for (content, fraction, seed).

    Rows are first put in a content-defined order (sorted by label, text), so the same data gives the
    same split even if the CSV rows were shuffled; every model of a campaign is then scored on the same
    validation rows, and ``fingerprint`` proves it.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    ordered = df.sort_values(["label", "text"], kind="stable").reset_index(drop=True)
    rng = np.random.default_rng(seed)
    val_idx: list[int] = []
    for _, group in ordered.groupby("label", sort=True):
        n_val = int(round(len(group) * val_fraction))
        if len(group) > 1:
            # Keep at least one row of each label on both sides, so no class vanishes from either.
            n_val = min(max(n_val, 1), len(group) - 1)
        val_idx.extend(rng.permutation(group.index.to_numpy())[:n_val].tolist())
    is_val = ordered.index.isin(val_idx)
    # Shuffle both sides so training batches are not sorted by label.
    train = ordered[~is_val].sample(frac=1.0, random_state=seed).reset_index(drop=True)
    val = ordered[is_val].sample(frac=1.0, random_state=seed).reset_index(drop=True)
    return Split(train=train, val=val, fingerprint=rows_fingerprint(val))

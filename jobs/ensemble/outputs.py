"""The ensemble's files: validation and test predictions, the test set's members, the submission."""

from __future__ import annotations

import logging
from pathlib import Path

from ..common import DEFAULT_TEST, data_path
from ..context import JobContext
from .params import DEFAULT_MEMBER_KINDS, EnsembleError, Params, Submission

log = logging.getLogger("jobs.ensemble")


def _test_inputs(names, records):
    """Members' test logits (all or none) and the test texts, checked to be the same rows."""
    import numpy as np

    from pipeline.predictions import read_predictions

    have = [n for n, r in zip(names, records) if "test_logits" in r.artifacts]
    if not have:
        return None, None
    if len(have) < len(names):
        lacking = [n for n in names if n not in have]
        raise EnsembleError(f"member(s) {', '.join(lacking)} saved no test_logits while "
                            f"{', '.join(have)} did; give them all the same `test` file")
    logits = [np.load(r.artifacts["test_logits"], allow_pickle=False) for r in records]  # never unpickle
    if len({x.shape for x in logits}) > 1:
        shown = ", ".join(f"{n}: {x.shape}" for n, x in zip(names, logits))
        raise EnsembleError(f"members' test logits differ in shape ({shown}): they predicted different test files")
    rows = None
    for name, record in zip(names, records):
        path = record.artifacts.get("test_predictions")
        if not path or not Path(path).exists():
            continue
        these = read_predictions(path)
        if rows is not None and these["text"].tolist() != rows["text"].tolist():
            raise EnsembleError(f"member '{name}' predicted other test rows than '{names[0]}'")
        rows = these
    return logits, rows


def _test_members(params: Params, names, records, ctx: JobContext):
    """The jobs whose test logits the ensemble combines: each member, or what `test_from` names."""
    test_names, test_records = [], []
    for name, record in zip(names, records):
        stand_in = params.test_from.get(name)
        if stand_in is None:
            test_names.append(name)
            test_records.append(record)
            continue
        other = ctx.job(stand_in)
        if other.status != "succeeded":
            raise EnsembleError(f"test_from: '{stand_in}' (for member '{name}') is {other.status}, not "
                                "succeeded; add it to the ensemble's `after`")
        if "test_logits" not in other.artifacts:
            known = ", ".join(sorted(other.artifacts)) or "none"
            raise EnsembleError(f"test_from: '{stand_in}' (for member '{name}') saved no test_logits (its "
                                f"artifacts: {known}); use a finetune with `test`, a baseline or a predict job")
        log.info("ensemble: test predictions of member %s come from %s", name, stand_in)
        test_names.append(stand_in)
        test_records.append(other)
    return test_names, test_records


def _members_test_csv(names, records) -> str | None:
    files = {}
    for name, record in zip(names, records):
        params = record.params or {}
        if record.kind in DEFAULT_MEMBER_KINDS:
            files.setdefault(params.get("test", DEFAULT_TEST), []).append(name)
        elif "csv" in params:  # a predict job standing in for a member
            files.setdefault(params["csv"], []).append(name)
    if len(files) > 1:
        shown = "; ".join(f"{f}: {', '.join(ns)}" for f, ns in files.items())
        raise EnsembleError(f"members predicted different test files ({shown})")
    return data_path(next(iter(files))) if files else None


def write_submission(sub: Submission, test_csv: str | None, preds, out: Path) -> Path:
    """The submission CSV: one row per test row, `id_column` then `prediction_column` (a class index)."""
    import pandas as pd

    if sub.id_from == "index" and test_csv is None:
        ids = range(len(preds))
    else:
        if test_csv is None:
            raise EnsembleError(f"submission.id_from is '{sub.id_from}' but no test CSV is known: "
                                "set submission.test_csv")
        frame = pd.read_csv(test_csv, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        if len(frame) != len(preds):
            raise EnsembleError(f"{test_csv} has {len(frame)} rows but the members predicted {len(preds)}: "
                                "submission.test_csv must be the file the members predicted")
        if sub.id_from == "index":
            ids = range(len(preds))
        elif sub.id_from not in frame.columns:
            raise EnsembleError(f"submission.id_from: {test_csv} has no column '{sub.id_from}'; "
                                f"its columns: {', '.join(frame.columns)}")
        else:
            ids = frame[sub.id_from]
    path = out / "submission.csv"
    pd.DataFrame({sub.id_column: list(ids), sub.prediction_column: preds}).to_csv(path, index=False)
    return path


def _log_shares(ctx: JobContext, probs, split: str) -> None:
    import numpy as np

    counts = np.bincount(probs.argmax(-1), minlength=probs.shape[1])
    for c, count in enumerate(counts):
        ctx.log_metric("predicted_share", count / len(probs), step=c, split=split)


def save_split(ctx: JobContext, split: str, probs, rows) -> None:
    """`<split>_probs`, `<split>_logits` (log-probabilities) and `<split>_predictions` as artifacts."""
    import numpy as np

    from pipeline import ensemble as E
    from pipeline.predictions import write_predictions

    out = ctx.output_dir
    np.save(out / f"{split}_probs.npy", probs)
    np.save(out / f"{split}_logits.npy", E.as_logits(probs))
    columns = {} if rows is None else {
        "ids": rows["id"] if "id" in rows else None, "texts": rows["text"],
        "labels": rows["label"] if "label" in rows and split == "val" else None}
    write_predictions(out / f"{split}_predictions.csv", probs, **columns)
    for name, file in ((f"{split}_probs", f"{split}_probs.npy"), (f"{split}_logits", f"{split}_logits.npy"),
                       (f"{split}_predictions", f"{split}_predictions.csv")):
        ctx.add_artifact(name, out / file)
    _log_shares(ctx, probs, split)


def predict_test(params: Params, names, records, weights, ctx: JobContext) -> None:
    from pipeline import ensemble as E

    test_names, test_records = _test_members(params, names, records, ctx)
    test_logits, test_rows = _test_inputs(test_names, test_records)
    if test_logits is None:
        log.warning("ensemble: no member saved test_logits: no test predictions, no submission")
        return
    test_probs = E.combine(test_logits, weights, params.vote)
    save_split(ctx, "test", test_probs, test_rows)
    if params.submission is not None:
        sub = params.submission
        if sub.test_csv:
            test_csv = data_path(sub.test_csv)
        elif sub.id_from == "index":
            test_csv = None  # ids are row numbers: the file itself is not needed
        else:
            test_csv = _members_test_csv(test_names, test_records)
        ctx.add_artifact("submission", write_submission(sub, test_csv, test_probs.argmax(-1), ctx.output_dir))

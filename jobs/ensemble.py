"""`ensemble`: soft-vote the saved logits of finished models, weighted by what they logged.

    - name: ensemble
      kind: ensemble
      after: [finetune-a, finetune-b, finetune-c]
      params: {members: [finetune-a, finetune-b, finetune-c], weighting: accuracy}
    - name: ensemble-fitted
      kind: ensemble
      after: [finetune-a, finetune-b, finetune-c]
      params: {member_tags: [round2], weighting: optimized, optimizer: logloss,
               submission: {id_column: id, prediction_column: label, id_from: index}}

Members: the jobs named in `members`, plus every job carrying one of `member_tags` (except this job,
other ensembles and full-data retrains); with neither, every succeeded non-full-data `finetune`.
Each member must have succeeded and saved `val_logits`; members scored on different validation
splits are refused. Weights come from the members' logged metrics (never hand-copied numbers):
`accuracy` (val_accuracy normalised to sum 1), `f1` (val_f1, same), `uniform`, `sharpened`
(softmax(val_accuracy / temperature)), or `optimized` (fitted on the validation logits to minimise
log loss: `optimizer: logloss` by gradient descent over the simplex, `greedy` by Caruana's
selection with replacement). A member that did not log the metric gets the mean metric of the
others (every member the same, i.e. uniform weights, if none logged it), with a warning and the
metric `missing_metric` (step = member index).

Logs `val_accuracy`, `val_f1`, `val_log_loss`, `weight` (step = member index), `predicted_share`
(step = class; split val and test), `members`, `best_member_val_accuracy` and, for `optimized`,
`val_accuracy_cv` (weights fitted on k-1 folds, scored on the held-out one). Artifacts: `val_logits`,
`test_logits` (log-probabilities), `val_probs`, `test_probs`, `val_predictions`, `test_predictions`,
`submission`, `weights` (weights.json: member -> weight), `val_split`, `result`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .common import DEFAULT_TEST, data_path
from .context import JobContext
from .registry import Display, Kind

log = logging.getLogger(__name__)

# weighting -> the member metric it reads (None: no metric needed)
METRIC_OF = {"accuracy": "val_accuracy", "f1": "val_f1", "sharpened": "val_accuracy",
             "uniform": None, "optimized": None}


class Submission(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id_column: str = Field(default="id", min_length=1)  # header of the id column of the submission CSV
    prediction_column: str = Field(default="label", min_length=1)  # header of the predicted class column
    id_from: str = Field(default="index", min_length=1)  # "index" (row number from 0) or a test CSV column
    test_csv: str | None = None  # the test CSV the members predicted; null: the members' `test` param


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    members: list[str] = Field(default_factory=list)  # member job names
    member_tags: list[str] = Field(default_factory=list)  # also every job carrying one of these tags
    weighting: Literal["accuracy", "f1", "uniform", "sharpened", "optimized"] = "accuracy"
    temperature: float = Field(default=0.01, gt=0)  # sharpened: softmax(val_accuracy / temperature)
    optimizer: Literal["logloss", "greedy"] = "logloss"  # optimized: how weights are fitted on val logits
    greedy_rounds: int = Field(default=50, ge=1)  # optimizer greedy: members added (with replacement)
    # optimizer greedy: what a round improves; "accuracy" never ends below the best member on val
    greedy_metric: Literal["logloss", "accuracy"] = "logloss"
    cv_folds: int = Field(default=5, ge=0)  # optimized: folds for val_accuracy_cv (0: skip it)
    vote: Literal["probs", "logits"] = "probs"  # average probabilities (soft voting) or raw logits
    submission: Submission | None = Field(default_factory=Submission)  # null: write no submission CSV
    # member -> the job whose test logits stand in for it on the test set (its full-data retrain):
    # weights and validation scores stay the validated member's
    test_from: dict[str, str] = Field(default_factory=dict)

    @field_validator("members")
    @classmethod
    def _unique(cls, names: list[str]) -> list[str]:
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"member(s) listed twice: {', '.join(dupes)}")
        return names

    @model_validator(mode="after")
    def _folds(self):
        if self.cv_folds == 1:
            raise ValueError("cv_folds must be 0 (off) or at least 2")
        return self


class EnsembleError(ValueError):
    """The members cannot be ensembled; the message names them and says why."""


def select_members(params: Params, ctx: JobContext) -> list[str]:
    """Member names in a stable order: `members` as given, then tagged jobs oldest first."""
    if not params.members and not params.member_tags:
        names = [n for n in ctx.jobs_where(kind="finetune", status="succeeded")
                 if n != ctx.name and _holds_out(ctx.job(n))]
        if not names:
            raise EnsembleError("no members: no succeeded finetune job with validation logits "
                                "(name them in `members`, or select them with `member_tags`)")
        return names
    names = list(params.members)
    for tag in params.member_tags:
        for name in ctx.jobs_where(tag=tag):
            if name == ctx.name or name in names:
                continue
            record = ctx.job(name)
            if record.kind != "ensemble" and _holds_out(record):
                names.append(name)
    if not names:
        raise EnsembleError(f"no members: no job carries the tag(s) {', '.join(params.member_tags)}")
    return names


def _holds_out(record) -> bool:
    """False for a full-data retrain: it kept no validation rows, so it has nothing to be weighed on."""
    return not (record.params or {}).get("full_data", False)


def _check_member(name: str, record) -> None:
    if record.status != "succeeded":
        raise EnsembleError(f"member '{name}' has status {record.status}, not succeeded "
                            "(list it in this job's `after` so the ensemble waits for it)")
    if "val_logits" not in record.artifacts:
        known = ", ".join(sorted(record.artifacts)) or "none"
        why = " (a full_data retrain holds out no validation rows)" if not _holds_out(record) else ""
        raise EnsembleError(f"member '{name}' saved no val_logits{why}; its artifacts: {known}")


def _fingerprint(record, val_rows) -> str | None:
    from pipeline.data import rows_fingerprint

    path = record.artifacts.get("val_split")
    if path and Path(path).exists():
        return Path(path).read_text().strip()
    return rows_fingerprint(val_rows) if val_rows is not None else None


def _val_rows(record):
    """The member's validation rows (text, label) in the order of its val logits, if it saved them."""
    import pandas as pd

    path = record.artifacts.get("val_predictions")
    if not path or not Path(path).exists():
        return None
    frame = pd.read_csv(path, dtype={"text": str}, keep_default_na=False)
    return frame[["text", "label"]] if {"text", "label"} <= set(frame.columns) else None


def _check_same_split(names: list[str], fingerprints: list[str | None]) -> None:
    if None in fingerprints:
        unknown = [n for n, f in zip(names, fingerprints) if f is None]
        raise EnsembleError(f"member(s) {', '.join(unknown)} saved neither val_split nor val_predictions: "
                            "cannot check they were scored on the same validation rows")
    if len(set(fingerprints)) > 1:
        groups: dict[str, list[str]] = {}
        for name, fp in zip(names, fingerprints):
            groups.setdefault(fp, []).append(name)
        shown = "; ".join(f"split {fp}: {', '.join(ns)}" for fp, ns in groups.items())
        raise EnsembleError(f"members were scored on different validation splits ({shown}); give them the "
                            "same train file, val_fraction, split_seed and max_train_rows")


def _member_scores(names, records, metric: str | None, ctx: JobContext):
    """(scores or None per member, indices that lacked the metric); warns for each one missing."""
    import numpy as np

    from pipeline.ensemble import impute_missing

    if metric is None:
        return None, []
    raw = [r.metrics.get(metric) for r in records]
    scores, missing = impute_missing(raw)
    for i in missing:
        fallback = "the mean of the others" if len(missing) < len(names) else "uniform weights"
        log.warning("ensemble: member '%s' logged no %s; it gets %s (%.4f)", names[i], metric, fallback,
                    scores[i])
        ctx.log_metric("missing_metric", 1.0, step=i)
    return np.asarray(scores), missing


def member_weights(params: Params, scores, val_logits, labels):
    from pipeline import ensemble as E

    n = len(val_logits)
    if params.weighting in ("accuracy", "f1"):
        return E.normalized(scores)
    if params.weighting == "sharpened":
        return E.sharpened(scores, params.temperature)
    if params.weighting == "uniform":
        return E.uniform(n)
    return E.fit_weights(params.optimizer, val_logits, labels, params.vote, **_fit_options(params))


def _fit_options(params: Params) -> dict:
    if params.optimizer == "greedy":
        return {"rounds": params.greedy_rounds, "metric": params.greedy_metric}
    return {}


def _test_inputs(names, records):
    """Members' test logits (all or none) and the test texts, checked to be the same rows."""
    import numpy as np
    import pandas as pd

    have = [n for n, r in zip(names, records) if "test_logits" in r.artifacts]
    if not have:
        return None, None
    if len(have) < len(names):
        lacking = [n for n in names if n not in have]
        raise EnsembleError(f"member(s) {', '.join(lacking)} saved no test_logits while "
                            f"{', '.join(have)} did; give them all the same `test` file")
    logits = [np.load(r.artifacts["test_logits"]) for r in records]
    if len({x.shape for x in logits}) > 1:
        shown = ", ".join(f"{n}: {x.shape}" for n, x in zip(names, logits))
        raise EnsembleError(f"members' test logits differ in shape ({shown}): they predicted different test files")
    texts = None
    for name, record in zip(names, records):
        path = record.artifacts.get("test_predictions")
        if not path or not Path(path).exists():
            continue
        these = pd.read_csv(path, dtype={"text": str}, keep_default_na=False)["text"].tolist()
        if texts is not None and these != texts:
            raise EnsembleError(f"member '{name}' predicted other test rows than '{names[0]}'")
        texts = these
    return logits, texts


def _test_members(params: Params, names, records, ctx: JobContext):
    """The jobs whose test logits the ensemble combines: each member, or what `test_from` names."""
    unknown = sorted(set(params.test_from) - set(names))
    if unknown:
        raise EnsembleError(f"test_from names job(s) that are not members: {', '.join(unknown)} "
                            f"(members: {', '.join(names)})")
    test_names, test_records = [], []
    for name, record in zip(names, records):
        stand_in = params.test_from.get(name)
        if stand_in is None:
            test_names.append(name)
            test_records.append(record)
            continue
        other = ctx.job(stand_in)
        if other.status != "succeeded" or "test_logits" not in other.artifacts:
            raise EnsembleError(f"test_from: '{stand_in}' (for member '{name}') is {other.status} and "
                                f"{'has' if 'test_logits' in other.artifacts else 'saved no'} test_logits; "
                                f"add it to the ensemble's `after`")
        log.info("ensemble: test predictions of member %s come from %s", name, stand_in)
        test_names.append(stand_in)
        test_records.append(other)
    return test_names, test_records


def _members_test_csv(names, records) -> str | None:
    files = {}
    for name, record in zip(names, records):
        if record.kind == "finetune":
            files.setdefault((record.params or {}).get("test", DEFAULT_TEST), []).append(name)
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


def _write_predictions(path: Path, probs, texts, labels=None) -> None:
    import pandas as pd

    from pipeline.data import LABEL_NAMES

    preds = probs.argmax(-1)
    names = LABEL_NAMES if probs.shape[1] == len(LABEL_NAMES) else [str(i) for i in range(probs.shape[1])]
    frame = pd.DataFrame({"text": list(texts)} if texts is not None else {})
    if labels is not None:
        frame["label"] = labels
    frame["pred"] = preds
    frame["pred_name"] = [names[p] for p in preds]
    frame["confidence"] = probs.max(-1).round(4)
    frame.to_csv(path, index=False)


def _log_shares(ctx: JobContext, probs, split: str) -> None:
    import numpy as np

    counts = np.bincount(probs.argmax(-1), minlength=probs.shape[1])
    for c, count in enumerate(counts):
        ctx.log_metric("predicted_share", count / len(probs), step=c, split=split)


def run(params: Params, ctx: JobContext) -> None:
    import numpy as np

    from pipeline import ensemble as E
    from pipeline.metrics import accuracy, macro_f1

    names = select_members(params, ctx)
    records = [ctx.job(n) for n in names]
    for name, record in zip(names, records):
        _check_member(name, record)
    val_rows = [_val_rows(r) for r in records]
    _check_same_split(names, [_fingerprint(r, rows) for r, rows in zip(records, val_rows)])
    ref_name, reference = next(((n, rows) for n, rows in zip(names, val_rows) if rows is not None), (None, None))
    if reference is None:
        raise EnsembleError(f"no member saved val_predictions with labels ({', '.join(names)}): "
                            "nothing to score the ensemble on")
    labels = reference["label"].to_numpy(np.int64)
    val_logits = []
    for name, record, rows in zip(names, records, val_rows):
        logits = np.load(record.artifacts["val_logits"])
        if len(logits) != len(labels):
            raise EnsembleError(f"member '{name}' has {len(logits)} val logits, not {len(labels)}")
        if rows is not None:
            try:
                logits = E.align_rows(reference["text"].tolist(), rows["text"].tolist(), logits)
            except ValueError:
                raise EnsembleError(f"member '{name}' lists other validation rows than '{ref_name}' "
                                    "in its val_predictions") from None
        val_logits.append(logits)
    if len({x.shape for x in val_logits}) > 1:
        raise EnsembleError("members' val logits differ in shape: "
                            + ", ".join(f"{n}: {x.shape}" for n, x in zip(names, val_logits)))

    scores, missing = _member_scores(names, records, METRIC_OF[params.weighting], ctx)
    weights = member_weights(params, scores, val_logits, labels)
    ctx.progress(1, 3, f"{len(names)} members, weights {params.weighting}")

    out = ctx.output_dir
    val_probs = E.combine(val_logits, weights, params.vote)
    val_preds = val_probs.argmax(-1)
    member_acc = [accuracy(labels, x.argmax(-1)) for x in val_logits]
    summary = {
        "val_accuracy": accuracy(labels, val_preds),
        "val_f1": macro_f1(labels, val_preds, val_probs.shape[1]),
        "val_log_loss": E.log_loss(val_probs, labels),
        "members": len(names),
        "best_member_val_accuracy": max(member_acc),
    }
    if params.weighting == "optimized" and params.cv_folds:
        summary["val_accuracy_cv"] = E.cross_validated_accuracy(
            params.optimizer, val_logits, labels, params.vote, folds=min(params.cv_folds, len(labels)),
            **_fit_options(params))
    for key, value in summary.items():
        ctx.log_metric(key, value)
    for i, w in enumerate(weights):
        ctx.log_metric("weight", float(w), step=i)
    _log_shares(ctx, val_probs, "val")
    np.save(out / "val_probs.npy", val_probs)
    np.save(out / "val_logits.npy", E.as_logits(val_probs))
    _write_predictions(out / "val_predictions.csv", val_probs, reference["text"], labels)
    (out / "val_split.txt").write_text(_fingerprint(records[0], val_rows[0]) + "\n")
    weights_path = out / "weights.json"
    weights_path.write_text(json.dumps({n: float(w) for n, w in zip(names, weights)}, indent=1))
    for name, file in (("val_probs", "val_probs.npy"), ("val_logits", "val_logits.npy"),
                       ("val_predictions", "val_predictions.csv"), ("val_split", "val_split.txt"),
                       ("weights", "weights.json")):
        ctx.add_artifact(name, out / file)
    ctx.progress(2, 3, "validation scored")

    test_names, test_records = _test_members(params, names, records, ctx)
    test_logits, test_texts = _test_inputs(test_names, test_records)
    if test_logits is None:
        log.warning("ensemble: no member saved test_logits: no test predictions, no submission")
    else:
        test_probs = E.combine(test_logits, weights, params.vote)
        np.save(out / "test_probs.npy", test_probs)
        np.save(out / "test_logits.npy", E.as_logits(test_probs))
        _write_predictions(out / "test_predictions.csv", test_probs, test_texts)
        _log_shares(ctx, test_probs, "test")
        for name, file in (("test_probs", "test_probs.npy"), ("test_logits", "test_logits.npy"),
                           ("test_predictions", "test_predictions.csv")):
            ctx.add_artifact(name, out / file)
        if params.submission is not None:
            sub = params.submission
            if sub.test_csv:
                test_csv = data_path(sub.test_csv)
            elif sub.id_from == "index":
                test_csv = None  # ids are row numbers: the file itself is not needed
            else:
                test_csv = _members_test_csv(test_names, test_records)
            ctx.add_artifact("submission", write_submission(sub, test_csv, test_probs.argmax(-1), out))

    result = {**summary, "weighting": params.weighting, "vote": params.vote,
              "weights": {n: float(w) for n, w in zip(names, weights)},
              "member_val_accuracy": dict(zip(names, member_acc)),
              "missing_metric": [names[i] for i in missing]}
    (out / "result.json").write_text(json.dumps(result, indent=1))
    ctx.add_artifact("result", out / "result.json")
    ctx.progress(3, 3, f"val_accuracy {summary['val_accuracy']:.4f}")
    print(f"ensemble of {len(names)} ({params.weighting}, vote {params.vote}): val_accuracy "
          f"{summary['val_accuracy']:.4f} (best member {summary['best_member_val_accuracy']:.4f}); weights "
          + ", ".join(f"{n}={w:.3f}" for n, w in zip(names, weights)), flush=True)


def preflight(params: Params, pre) -> None:
    """Named members and `test_from` jobs exist and leave logits (tagged members are found at run time)."""
    for name in params.members:
        pre.produces("params.members", name, "val_logits")
    for member, name in params.test_from.items():
        pre.produces(f"params.test_from.{member}", name, "test_logits")
    sub = params.submission
    if sub is not None and sub.test_csv and sub.id_from != "index":
        pre.text_csv("params.submission.test_csv", sub.test_csv, sub.id_from)  # the id column is there


KIND = Kind(
    "ensemble", Params, run, preflight=preflight, preload=("numpy", "pandas", "pipeline.ensemble"),
    outputs=("val_logits", "test_logits", "val_probs", "test_probs", "val_predictions", "test_predictions",
             "submission", "weights", "val_split", "result", "val_accuracy", "val_f1"),
    summary="soft-vote finished models, weighted by their logged validation scores",
    display=Display(model=True, model_param=None,
                    scores={"val_accuracy": "val_accuracy", "val_f1": "val_f1", "val_accuracy_cv": "val_accuracy_cv"},
                    params={"weighting": "weighting", "vote": "vote"}, colour="#ef8636"),
)

"""`ensemble`: soft-vote the saved logits of finished models, weighted by what they logged.

    - name: ensemble
      kind: ensemble
      after: [finetune-a, finetune-b, baseline]
      params: {members: [finetune-a, finetune-b, baseline], weighting: accuracy}
    - name: ensemble-fitted
      kind: ensemble
      after: [finetune-a, finetune-b, finetune-c]
      params: {member_tags: [round2], weighting: optimized, optimizer: logloss,
               submission: {id_column: id, prediction_column: label, id_from: index}}

Members: the jobs named in `members`, plus every job carrying one of `member_tags` (except this job,
other ensembles and full-data retrains); with neither, every succeeded non-full-data `finetune` and
`baseline`. Each member must have succeeded and saved `val_logits`; members scored on different
validation splits are refused. A member whose validation predictions are one class, or whose
accuracy is at or below the majority class's share, learned nothing: it is left out with a warning
naming it (`leave_out_dead`).

Weights come from the members' logged metrics (never hand-copied numbers): `accuracy`
(val_accuracy normalised to sum 1), `f1` (val_f1, same), `uniform`, `sharpened`
(softmax(val_accuracy / temperature)), `above_majority` (val_accuracy minus the majority class's
share, normalised), or `optimized` (fitted on the validation logits: `optimizer: logloss` by
gradient descent over the simplex, `greedy` by Caruana's selection with replacement). A member that
did not log the metric gets the mean metric of the others (every member the same, i.e. uniform
weights, if none logged it), with a warning and the metric `missing_metric` (step = member index).

Validation scores are out of fold: every validation row is scored by weights chosen from the other
`cv_folds` folds (the member metrics recomputed on those rows), so a weighting fitted on the
validation rows cannot flatter itself. `val_accuracy`, `val_f1`, `val_log_loss` and the validation
outputs are these; `val_accuracy_in_sample`, `val_f1_in_sample` score the final weights on the rows
they were chosen on. Test outputs use the weights chosen from all validation rows.

Logs `weight` (step = member index), `predicted_share` (step = class; split val and test),
`members`, `best_member_val_accuracy`, `left_out` (value 1, step = the left-out member's job id).
Artifacts: `val_logits`, `test_logits` (log-probabilities), `val_probs`, `test_probs`,
`val_predictions`, `test_predictions` (`pipeline.predictions` layout), `submission`, `weights`
(weights.json: member -> weight), `ensemble` (ensemble.json: what `predict` needs to run it on new
rows), `val_split`, `result`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .common import DEFAULT_TEST, data_path
from .context import JobContext
from .registry import Display, Kind

log = logging.getLogger(__name__)

# weighting -> the member metric it reads (None: no metric needed)
METRIC_OF = {"accuracy": "val_accuracy", "f1": "val_f1", "sharpened": "val_accuracy",
             "above_majority": "val_accuracy", "uniform": None, "optimized": None}
# Kinds whose jobs are members when the ensemble names none (models scored on the shared split).
DEFAULT_MEMBER_KINDS = ("finetune", "baseline")
RECIPE = "ensemble.json"  # how to run this ensemble on new rows (read by `predict`)


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
    # how members are weighed (see the module docstring); accuracy: what users ask for by hand
    weighting: Literal["accuracy", "f1", "uniform", "sharpened", "above_majority", "optimized"] = "accuracy"
    temperature: float = Field(default=0.01, gt=0)  # sharpened: softmax(val_accuracy / temperature)
    optimizer: Literal["logloss", "greedy"] = "logloss"  # optimized: how weights are fitted on val logits
    greedy_rounds: int = Field(default=50, ge=1)  # optimizer greedy: members added (with replacement)
    # optimizer greedy: what a round improves; "accuracy" never ends below the best member on val
    greedy_metric: Literal["logloss", "accuracy"] = "logloss"
    cv_folds: int = Field(default=5, ge=2)  # folds of the out-of-fold validation scores
    vote: Literal["probs", "logits"] = "probs"  # average probabilities (soft voting) or raw logits
    leave_out_dead: bool = True  # leave out members that predict one class or score at/below the majority
    collapse_share: float = Field(default=0.95, gt=0, le=1)  # one class: the top class takes this share of rows
    min_gain_over_majority: float = Field(default=0.0, ge=0, lt=1)  # alive: accuracy beats the majority by more
    submission: Submission | None = Field(default_factory=Submission)  # null: write no submission CSV
    # member -> the job whose test logits stand in for it on the test set (its full-data retrain, or a
    # predict job): weights and validation scores stay the validated member's
    test_from: dict[str, str] = Field(default_factory=dict)

    @field_validator("members")
    @classmethod
    def _unique(cls, names: list[str]) -> list[str]:
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"member(s) listed twice: {', '.join(dupes)}")
        return names


class EnsembleError(ValueError):
    """The members cannot be ensembled; the message names them and says why."""


# ---- members ------------------------------------------------------------------------------------


def select_members(params: Params, ctx: JobContext) -> list[str]:
    """Member names in a stable order: `members` as given, then tagged jobs oldest first."""
    if not params.members and not params.member_tags:
        found = {n: ctx.job(n) for kind in DEFAULT_MEMBER_KINDS
                 for n in ctx.jobs_where(kind=kind, status="succeeded") if n != ctx.name}
        names = sorted((n for n, r in found.items() if _holds_out(r)), key=lambda n: found[n].id)
        if not names:
            raise EnsembleError(f"no members: no succeeded {' or '.join(DEFAULT_MEMBER_KINDS)} job with "
                                "validation logits (name them in `members`, or select them with `member_tags`)")
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
    """The member's validation rows (id if saved, text, label) in the order of its val logits."""
    from pipeline.predictions import read_predictions

    path = record.artifacts.get("val_predictions")
    if not path or not Path(path).exists():
        return None
    frame = read_predictions(path)
    if not {"text", "label"} <= set(frame.columns):
        return None
    return frame[[c for c in ("id", "text", "label") if c in frame.columns]]


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


def load_members(names: list[str], records: list):
    """(validation rows of reference, labels, each member's val logits aligned to those rows)."""
    import numpy as np

    from pipeline import ensemble as E

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
    return reference, labels, val_logits


def leave_out_dead(params: Params, names, records, val_logits, labels, ctx: JobContext) -> dict[str, str]:
    """{member: why} for the members that learned nothing (one class, or at/below the majority)."""
    from pipeline.data import LABEL_NAMES
    from pipeline.health import dead_reason

    if not params.leave_out_dead:
        return {}
    dead = {}
    for name, record, logits in zip(names, records, val_logits):
        reason = dead_reason(labels, logits.argmax(-1), collapse_share=params.collapse_share,
                             min_gain=params.min_gain_over_majority, names=LABEL_NAMES)
        if reason is not None:
            dead[name] = reason
            log.warning("ensemble: member '%s' left out: its validation %s", name, reason)
            ctx.log_metric("left_out", 1.0, step=record.id)
    if len(dead) == len(names):
        raise EnsembleError("every member learned nothing on the validation rows: "
                            + "; ".join(f"{n}: {why}" for n, why in dead.items()))
    return dead


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


# ---- weights ------------------------------------------------------------------------------------


def member_weights(params: Params, scores, val_logits, labels):
    """The weights `params.weighting` picks from these member scores (or logits) and labels."""
    from pipeline import ensemble as E
    from pipeline.health import majority_share

    n = len(val_logits)
    if params.weighting in ("accuracy", "f1"):
        return E.normalized(scores)
    if params.weighting == "sharpened":
        return E.sharpened(scores, params.temperature)
    if params.weighting == "above_majority":
        return E.above_majority(scores, majority_share(labels))
    if params.weighting == "uniform":
        return E.uniform(n)
    return E.fit_weights(params.optimizer, val_logits, labels, params.vote, **_fit_options(params))


def _fit_options(params: Params) -> dict:
    if params.optimizer == "greedy":
        return {"rounds": params.greedy_rounds, "metric": params.greedy_metric}
    return {}


def _scores_on(metric: str | None, stack, labels):
    """Each member's `metric` measured on these rows from its logits (what it would have logged)."""
    import numpy as np

    from pipeline.metrics import accuracy, macro_f1

    if metric is None:
        return None
    if metric == "val_f1":
        return np.array([macro_f1(labels, x.argmax(-1), x.shape[-1]) for x in stack])
    return np.array([accuracy(labels, x.argmax(-1)) for x in stack])


def out_of_fold_probs(params: Params, val_logits, labels):
    """Every validation row scored by weights chosen from the other folds only."""
    import numpy as np

    from pipeline import ensemble as E

    stack = np.stack(val_logits)
    metric = METRIC_OF[params.weighting]

    def fit(rows):
        return member_weights(params, _scores_on(metric, stack[:, rows], labels[rows]), stack[:, rows], labels[rows])

    return E.out_of_fold(fit, stack, labels, params.vote, folds=min(params.cv_folds, len(labels)))


def _scores(probs, labels) -> dict[str, float]:
    from pipeline import ensemble as E
    from pipeline.metrics import accuracy, macro_f1

    preds = probs.argmax(-1)
    return {"accuracy": accuracy(labels, preds), "f1": macro_f1(labels, preds, probs.shape[1]),
            "log_loss": E.log_loss(probs, labels)}


# ---- test set -----------------------------------------------------------------------------------


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
    logits = [np.load(r.artifacts["test_logits"]) for r in records]
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


def _save_split(ctx: JobContext, split: str, probs, rows) -> None:
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


def _predict_test(params: Params, names, records, weights, ctx: JobContext) -> None:
    from pipeline import ensemble as E

    test_names, test_records = _test_members(params, names, records, ctx)
    test_logits, test_rows = _test_inputs(test_names, test_records)
    if test_logits is None:
        log.warning("ensemble: no member saved test_logits: no test predictions, no submission")
        return
    test_probs = E.combine(test_logits, weights, params.vote)
    _save_split(ctx, "test", test_probs, test_rows)
    if params.submission is not None:
        sub = params.submission
        if sub.test_csv:
            test_csv = data_path(sub.test_csv)
        elif sub.id_from == "index":
            test_csv = None  # ids are row numbers: the file itself is not needed
        else:
            test_csv = _members_test_csv(test_names, test_records)
        ctx.add_artifact("submission", write_submission(sub, test_csv, test_probs.argmax(-1), ctx.output_dir))


# ---- the job ------------------------------------------------------------------------------------


def run(params: Params, ctx: JobContext) -> None:
    from pipeline import ensemble as E
    from pipeline.metrics import accuracy

    listed = select_members(params, ctx)
    unknown = sorted(set(params.test_from) - set(listed))
    if unknown:
        raise EnsembleError(f"test_from names job(s) that are not members: {', '.join(unknown)} "
                            f"(members: {', '.join(listed)})")
    all_records = [ctx.job(n) for n in listed]
    reference, labels, all_logits = load_members(listed, all_records)
    dead = leave_out_dead(params, listed, all_records, all_logits, labels, ctx)
    kept = [i for i, n in enumerate(listed) if n not in dead]
    names, records = [listed[i] for i in kept], [all_records[i] for i in kept]
    val_logits = [all_logits[i] for i in kept]

    scores, missing = _member_scores(names, records, METRIC_OF[params.weighting], ctx)
    weights = member_weights(params, scores, val_logits, labels)
    ctx.progress(1, 3, f"{len(names)} members, weights {params.weighting}")

    oof_probs = out_of_fold_probs(params, val_logits, labels)
    honest = _scores(oof_probs, labels)
    in_sample = _scores(E.combine(val_logits, weights, params.vote), labels)
    member_acc = [accuracy(labels, x.argmax(-1)) for x in val_logits]
    summary = {"val_accuracy": honest["accuracy"], "val_f1": honest["f1"], "val_log_loss": honest["log_loss"],
               "val_accuracy_in_sample": in_sample["accuracy"], "val_f1_in_sample": in_sample["f1"],
               "members": len(names), "best_member_val_accuracy": max(member_acc)}
    for key, value in summary.items():
        ctx.log_metric(key, value)
    for i, w in enumerate(weights):
        ctx.log_metric("weight", float(w), step=i)
    _save_split(ctx, "val", oof_probs, reference)
    by_member = {n: float(w) for n, w in zip(names, weights)}
    _write_artifact(ctx, "val_split", "val_split.txt", _fingerprint(records[0], _val_rows(records[0])) + "\n")
    _write_artifact(ctx, "weights", "weights.json", json.dumps(by_member, indent=1))
    # What `predict` runs on new rows: these members (or their test_from stand-ins) with these weights.
    recipe = {"vote": params.vote, "weights": by_member,
              "predict_with": {n: params.test_from.get(n, n) for n in names}}
    _write_artifact(ctx, "ensemble", RECIPE, json.dumps(recipe, indent=1))
    ctx.progress(2, 3, "validation scored")

    _predict_test(params, names, records, weights, ctx)
    result = {**summary, "weighting": params.weighting, "vote": params.vote, "cv_folds": params.cv_folds,
              "weights": by_member, "member_val_accuracy": dict(zip(names, member_acc)),
              "missing_metric": [names[i] for i in missing], "left_out": dead}
    _write_artifact(ctx, "result", "result.json", json.dumps(result, indent=1))
    ctx.progress(3, 3, f"val_accuracy {summary['val_accuracy']:.4f} (out of fold)")
    print(f"ensemble of {len(names)} ({params.weighting}, vote {params.vote}): val_accuracy "
          f"{summary['val_accuracy']:.4f} out of fold, {summary['val_accuracy_in_sample']:.4f} in sample "
          f"(best member {summary['best_member_val_accuracy']:.4f}); weights "
          + ", ".join(f"{n}={w:.3f}" for n, w in zip(names, weights))
          + (f"; left out: {', '.join(dead)}" if dead else ""), flush=True)


def _write_artifact(ctx: JobContext, artifact: str, file: str, text: str) -> None:
    path = ctx.output_dir / file
    path.write_text(text)
    ctx.add_artifact(artifact, path)


KIND = Kind(
    "ensemble", Params, run,
    summary="soft-vote finished models, weighted by their logged validation scores (scored out of fold)",
    display=Display(model=True, model_param=None, scores={"val_accuracy": "val_accuracy", "val_f1": "val_f1"},
                    params={"weighting": "weighting", "vote": "vote"}, colour="#ef8636", left_out="left_out"),
)

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

from ..context import JobContext
from ..registry import Display, Kind
from .members import leave_out_dead, load_members, member_scores, select_members, split_fingerprint
from .outputs import predict_test, save_split, write_submission
from .params import METRIC_OF, RECIPE, EnsembleError, Params, Submission
from .weights import member_weights, out_of_fold_probs, score_probs

__all__ = ["KIND", "METRIC_OF", "EnsembleError", "Params", "Submission", "member_weights", "run",
           "select_members", "write_submission"]


def run(params: Params, ctx: JobContext) -> None:
    names, records, reference, labels, val_logits, dead = _members(params, ctx)
    scores, missing = member_scores(names, records, METRIC_OF[params.weighting], ctx)
    weights = member_weights(params, scores, val_logits, labels)
    ctx.progress(1, 3, f"{len(names)} members, weights {params.weighting}")
    summary = _score_validation(params, names, weights, reference, labels, val_logits, ctx)
    by_member = {n: float(w) for n, w in zip(names, weights)}
    _write_artifact(ctx, "val_split", "val_split.txt", split_fingerprint(records[0]) + "\n")
    _write_artifact(ctx, "weights", "weights.json", json.dumps(by_member, indent=1))
    # What `predict` runs on new rows: these members (or their test_from stand-ins) with these weights.
    recipe = {"vote": params.vote, "weights": by_member,
              "predict_with": {n: params.test_from.get(n, n) for n in names}}
    _write_artifact(ctx, "ensemble", RECIPE, json.dumps(recipe, indent=1))
    ctx.progress(2, 3, "validation scored")

    predict_test(params, names, records, weights, ctx)
    result = {**summary, "weighting": params.weighting, "vote": params.vote, "cv_folds": params.cv_folds,
              "weights": by_member, "missing_metric": [names[i] for i in missing], "left_out": dead}
    _write_artifact(ctx, "result", "result.json", json.dumps(result, indent=1))
    ctx.progress(3, 3, f"val_accuracy {summary['val_accuracy']:.4f} (out of fold)")
    print(f"ensemble of {len(names)} ({params.weighting}, vote {params.vote}): val_accuracy "
          f"{summary['val_accuracy']:.4f} out of fold, {summary['val_accuracy_in_sample']:.4f} in sample "
          f"(best member {summary['best_member_val_accuracy']:.4f}); weights "
          + ", ".join(f"{n}={w:.3f}" for n, w in by_member.items())
          + (f"; left out: {', '.join(dead)}" if dead else ""), flush=True)


def _members(params: Params, ctx: JobContext):
    """(names, records, validation rows, labels, val logits) of the members kept, and {left out: why}."""
    listed = select_members(params, ctx)
    unknown = sorted(set(params.test_from) - set(listed))
    if unknown:
        raise EnsembleError(f"test_from names job(s) that are not members: {', '.join(unknown)} "
                            f"(members: {', '.join(listed)})")
    all_records = [ctx.job(n) for n in listed]
    reference, labels, all_logits = load_members(listed, all_records)
    dead = leave_out_dead(params, listed, all_records, all_logits, labels, ctx)
    kept = [i for i, n in enumerate(listed) if n not in dead]
    return ([listed[i] for i in kept], [all_records[i] for i in kept], reference, labels,
            [all_logits[i] for i in kept], dead)


def _score_validation(params: Params, names, weights, reference, labels, val_logits, ctx: JobContext) -> dict:
    """Log the ensemble's validation scores (out of fold, and in sample) and save its validation outputs."""
    from pipeline import ensemble as E
    from pipeline.metrics import accuracy

    oof_probs = out_of_fold_probs(params, val_logits, labels)
    honest = score_probs(oof_probs, labels)
    in_sample = score_probs(E.combine(val_logits, weights, params.vote), labels)
    member_acc = [accuracy(labels, x.argmax(-1)) for x in val_logits]
    summary = {"val_accuracy": honest["accuracy"], "val_f1": honest["f1"], "val_log_loss": honest["log_loss"],
               "val_accuracy_in_sample": in_sample["accuracy"], "val_f1_in_sample": in_sample["f1"],
               "members": len(names), "best_member_val_accuracy": max(member_acc)}
    for key, value in summary.items():
        ctx.log_metric(key, value)
    for i, w in enumerate(weights):
        ctx.log_metric("weight", float(w), step=i)
    save_split(ctx, "val", oof_probs, reference)
    return {**summary, "member_val_accuracy": dict(zip(names, member_acc))}


def _write_artifact(ctx: JobContext, artifact: str, file: str, text: str) -> None:
    path = ctx.output_dir / file
    path.write_text(text)
    ctx.add_artifact(artifact, path)


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
             "submission", "weights", "ensemble", "val_split", "result", "val_accuracy", "val_f1",
             "val_accuracy_in_sample", "val_f1_in_sample"),
    models={"ensemble": "ensemble"},  # ensemble.json: members and weights, each member predicted by its own model
    summary="soft-vote finished models, weighted by their logged validation scores (scored out of fold)",
    display=Display(model=True, model_param=None, scores={"val_accuracy": "val_accuracy", "val_f1": "val_f1"},
                    params={"weighting": "weighting", "vote": "vote"}, colour="#ef8636", left_out="left_out"),
)

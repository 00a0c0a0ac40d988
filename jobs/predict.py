"""`predict`: a finished model's predictions on any CSV: a fine-tune, a baseline or a whole ensemble.

    - name: predict-new
      kind: predict
      after: [ensemble]
      params: {model: {from: ensemble}, csv: data/reviews_test.csv}

`model: {from: JOB}` takes what JOB left: a fine-tune's or a tune's model folder (read with the
tokenizer saved beside it and the max_length it was trained with), a baseline's model file, or an
ensemble's members and weights as it stored them (each member predicted as above, then combined
as the ensemble did; a member the ensemble took from `test_from` is predicted by that job's model).
A predict job named there stands for the model it ran. A plain folder or hub name works too, and a
baseline's `.joblib` file given by path (the user vouches for a path they give).

From another job only what its kind registers as a model (`Kind.models`) is loaded, as the format
it declares: `{from: JOB, artifact: NAME}` naming anything else (an echo's `evil.joblib`, a
baseline's logits) is refused at submit and again right before loading, and the registered path
must still lie in that job's run folder (`jobs.common.model_artifact`).

Writes `test_predictions` (the project's predictions file: id, text, label when the CSV has the
`label_column`, pred, pred_name, one prob_<class> column per class) and `test_logits` (.npy, one row
per CSV row; log-probabilities for a baseline or an ensemble), so an ensemble's `test_from` can use
it. Logs `predicted_share` (step = class) and, when the CSV has labels, `test_accuracy` and
`test_f1` on those rows.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from pipeline.errors import InputError

from .common import MEMORY_PARAMS, TRAINING_MODULES, FromJob, ModelArtifact, ModelRef, data_path, model_artifact
from .context import JobContext
from .registry import MODEL_FORMATS, Kind

BASELINE_SUFFIX = ".joblib"  # a model *path the user gave* with this suffix is a baseline, not a model folder
MAX_DEPTH = 8  # ensembles of ensembles: deeper than this is a reference cycle
FORMATS = tuple(MODEL_FORMATS)  # predict runs every kind of registered model: folders, joblib files, ensembles


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelRef  # {from: JOB} (a finetune, baseline, ensemble or tune job), or a model folder / hub name
    csv: str  # the rows to predict
    text_column: str = "review"  # the column holding the text
    label_column: str | None = "label"  # true classes, when the CSV has this column (then test_accuracy/f1)
    id_column: str | None = None  # a column of row ids for the predictions file (default: row number from 0)
    batch_size: int = Field(default=64, ge=1)  # rows per forward pass
    max_length: int | None = Field(default=None, ge=8)  # tokens per text; null: what each model was trained with


@dataclass
class Predictor:
    """What to run: a model folder ("hf"), a baseline file ("joblib"), or a weighted vote of others
    ("ensemble"). `artifact`: the model another job registered (checked again right before loading);
    None for a path the user gave."""

    kind: str
    path: str | None = None
    artifact: ModelArtifact | None = None
    members: list[tuple[float, Predictor]] = field(default_factory=list)
    vote: str = "probs"

    def model_path(self) -> str:
        return self.artifact.checked_path() if self.artifact is not None else self.path


class PredictError(InputError):
    """The model reference cannot be predicted with; the message names the job and why (retrying
    cannot fix it)."""


def resolve(ctx: JobContext, ref: ModelRef, depth: int = 0) -> Predictor:
    """The predictor behind a model reference (jobs followed by name, ensembles member by member).

    From another job only what its kind registers as a model (`Kind.models`) is used, as the format
    it registered: an echo's `evil.joblib` is refused, never unpickled."""
    if depth > MAX_DEPTH:
        raise PredictError(f"model: ensembles nested deeper than {MAX_DEPTH} (a cycle?)")
    if not isinstance(ref, FromJob):
        return _of_path(ref)
    record = ctx.job(ref.from_)
    if record.status != "succeeded":
        raise PredictError(f"model: job '{ref.from_}' is {record.status}, not succeeded; add it to `after`")
    ran = (record.params or {}).get("model")
    if ref.artifact is None and record.kind == "predict" and isinstance(ran, dict | str):
        # a predict job stands for the model it ran, resolved (and checked) as that job's reference
        return resolve(ctx, FromJob.model_validate(ran) if isinstance(ran, dict) else ran, depth + 1)
    found = model_artifact(ctx, record, ref.artifact, FORMATS)
    if found.format == "ensemble":
        return _ensemble(ctx, found.checked_path(), depth)
    return Predictor(found.format, path=found.path, artifact=found)


def _of_path(path: str) -> Predictor:
    """A path or hub name the user gave (they vouch for it): a `.joblib` file is a baseline."""
    return Predictor("joblib" if path.endswith(BASELINE_SUFFIX) else "hf", path=path)


def _ensemble(ctx: JobContext, recipe_path: str, depth: int) -> Predictor:
    with open(recipe_path, encoding="utf-8") as f:
        recipe = json.load(f)
    members = [(float(weight), resolve(ctx, FromJob.model_validate({"from": recipe["predict_with"].get(name, name)}),
                                       depth + 1))
               for name, weight in recipe["weights"].items() if weight > 0]
    return Predictor("ensemble", members=members, vote=recipe.get("vote", "probs"))


def logits_of(predictor: Predictor, texts: list[str], params: Params, device: str):
    """[n_texts, n_classes] logits: raw for a model folder, log-probabilities otherwise."""
    if predictor.kind == "hf":
        from pipeline.training import predict

        return predict(predictor.model_path(), texts, batch_size=params.batch_size, max_length=params.max_length,
                       device=device)
    if predictor.kind == "joblib":  # unpickled: only a path the user gave, or a baseline job's registered model
        from pipeline.baseline import predict_baseline

        return predict_baseline(predictor.model_path(), texts)
    from pipeline import ensemble as E

    weights = [w for w, _ in predictor.members]
    member_logits = [logits_of(p, texts, params, device) for _, p in predictor.members]
    return E.as_logits(E.combine(member_logits, weights, predictor.vote))


def run(params: Params, ctx: JobContext) -> None:
    import numpy as np

    from pipeline.data import load_rows
    from pipeline.metrics import accuracy, macro_f1, softmax
    from pipeline.predictions import write_predictions

    path = data_path(params.csv)
    rows = load_rows(path, params.text_column, id_column=params.id_column)
    predictor = resolve(ctx, params.model)
    ctx.progress(0, len(rows), "rows")
    logits = logits_of(predictor, rows["text"].tolist(), params, ctx.device)
    labels = _labels(path, params, logits.shape[1])
    out = ctx.output_dir
    np.save(out / "test_logits.npy", logits)
    probs = softmax(logits)
    write_predictions(out / "test_predictions.csv", probs, ids=rows["id"], texts=rows["text"], labels=labels)
    ctx.add_artifact("test_logits", out / "test_logits.npy")
    ctx.add_artifact("test_predictions", out / "test_predictions.csv")
    preds = probs.argmax(-1)
    for label, count in enumerate(np.bincount(preds, minlength=probs.shape[1])):
        ctx.log_metric("predicted_share", count / len(preds), step=label, split="test")
    if labels is not None:
        ctx.log_metric("test_accuracy", accuracy(labels, preds))
        ctx.log_metric("test_f1", macro_f1(labels, preds, probs.shape[1]))
    ctx.progress(len(rows), len(rows), "rows")


def _labels(path: str, params: Params, num_labels: int):
    """The CSV's true classes (checked to be 0..num_labels-1), or None when it has no label column."""
    from pipeline.data import has_column, load_labeled_csv

    if params.label_column is None or not has_column(path, params.label_column):
        return None
    return load_labeled_csv(path, params.text_column, params.label_column, num_labels)["label"].to_numpy()


def preflight(params: Params, pre) -> None:
    """The CSV and its text column, and a model: a folder or hub name, a `.joblib` file given by
    path, a predict job, or a job whose kind registers the artifact it names as a model."""
    pre.text_csv("params.csv", params.csv, params.text_column)
    ref = params.model
    if not isinstance(ref, FromJob):
        if ref.endswith(BASELINE_SUFFIX):
            pre.check("params.model", lambda: _joblib_file(ref))
        else:
            pre.model("params.model", ref)
        return
    other = pre.job(ref.from_)
    if other is None:
        pre.problems.append(f"params.model: no job named '{ref.from_}' in this file or the queue")
    elif not (other.kind == "predict" and ref.artifact is None):
        pre.registered_model("params.model", ref.from_, ref.artifact, FORMATS)


def _joblib_file(path: str) -> None:
    """A baseline file the user names by path: it must be a regular file (not a folder, not a FIFO)."""
    expanded = os.path.expanduser(path)
    if not os.path.exists(expanded):
        raise PredictError(f"{path}: file not found")
    if not os.path.isfile(expanded):
        raise PredictError(f"{path} is not a regular file")


KIND = Kind("predict", Params, run,
            summary="predictions of a fine-tune, baseline or ensemble on a CSV (test_accuracy when it has labels)",
            preflight=preflight, outputs=("test_logits", "test_predictions", "test_accuracy", "test_f1"),
            preload=TRAINING_MODULES, gpus=1, memory_params=MEMORY_PARAMS)

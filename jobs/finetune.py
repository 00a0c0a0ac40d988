"""`finetune`: train a classifier on the task's labelled CSV; or, with `full_data`, retrain on all of it.

    - name: "finetune-{model}"
      kind: finetune
      after: ["tapt-{model}"]
      params: {model: {from: "tapt-{model}"}, epochs: 5, focal_gamma: 2.0, label_smoothing: 0.1, swa_epochs: 2}
    - name: retrain-best
      kind: finetune
      after: [finetune-klue/roberta-base]
      params: {model: klue/roberta-base, full_data: true, epochs_from: finetune-klue/roberta-base}
    - name: final
      kind: finetune
      after: [tune-roberta]
      params: {model: klue/roberta-base, params_from: tune-roberta}   # the tune job's best params

Every model of a campaign must be scored on the same validation rows, so the split is a function of
(train file content, val_fraction, split_seed) alone; its fingerprint is saved with the result.
Logs per epoch `loss`/`accuracy`/`f1` (split val) and, at the end, `val_accuracy`, `val_f1`,
`best_epoch`; artifacts: `model`, `val_logits`, `test_logits`, `val_predictions`, `test_predictions`,
`result`. Runs again after an interruption resume from the last epoch checkpoint.
"""

from __future__ import annotations

from pydantic import Field

from pipeline.config import FinetuneConfig

from .common import (
    DEFAULT_TEST,
    DEFAULT_TRAIN,
    MEMORY_PARAMS,
    TRAINING_MODULES,
    FromJob,
    ModelRef,
    artifact_of,
    check_trackers,
    data_path,
    hooks_for,
    params_from_config,
    resolve_model,
    tracking_run,
    training_config,
)
from .context import JobContext, Preempted
from .registry import Column, Curve, Display, Kind
from .work import rows_x_epochs

Params = params_from_config("FinetuneParams", FinetuneConfig, {
    # hub name, local folder, "tiny", or {from: job} (e.g. a TAPT job's checkpoint)
    "model": (ModelRef, "tiny"),
    "train": (str, DEFAULT_TRAIN),  # labelled CSV; validation rows are split off it
    "test": (str | None, DEFAULT_TEST),  # CSV to write test logits for (labels not needed)
    "text_column": (str, "review"),
    "label_column": (str, "label"),
    "val_fraction": (float, Field(default=0.1, gt=0, lt=1)),  # share of train held out for validation
    "split_seed": (int, 42),  # the campaign's split: keep it equal across the models you ensemble
    "max_train_rows": (int | None, None),  # use only the first N rows of train (quick runs)
    "extra_train": (FromJob | str | None, None),  # more training rows: a CSV, or an augment job's output
    "epochs_from": (str | None, None),  # take `epochs` from this job's best epoch (full-data retrain)
    # a tune job (or its `workers: k` group name): its best params replace these params' values
    "params_from": (str | None, None),
})


def load_data(params):
    """(the campaign's split of the train CSV, the test texts or None) for these params."""
    import pandas as pd

    from pipeline.data import load_labeled_csv, stratified_split

    frame = load_labeled_csv(data_path(params.train), params.text_column, params.label_column, params.num_labels)
    if params.max_train_rows:
        frame = frame.head(params.max_train_rows)
    # Each row keeps its number in the train file: the validation predictions file names its rows by it.
    frame.insert(0, "id", range(len(frame)))
    split = stratified_split(frame, params.val_fraction, params.split_seed)
    test = None
    if params.test:
        from pipeline.data import load_texts

        texts = load_texts(data_path(params.test), params.text_column)
        test = pd.DataFrame({"id": range(len(texts)), "text": texts})
    return split, test


def extra_rows(params, ctx: JobContext):
    """The extra training rows (`extra_train`: a CSV, or an augment job's output), or None."""
    from pipeline.data import load_labeled_csv

    if params.extra_train is None:
        return None
    path = artifact_of(ctx, params.extra_train, "augmented_csv") if isinstance(params.extra_train, FromJob) \
        else data_path(params.extra_train)
    return load_labeled_csv(path, params.text_column, params.label_column, params.num_labels)


def _epochs(params, ctx: JobContext) -> int:
    if not params.epochs_from:
        return params.epochs
    record = ctx.job(params.epochs_from)
    if record.status != "succeeded":
        raise ValueError(f"epochs_from: job '{params.epochs_from}' is {record.status}; "
                         f"add `after: [{params.epochs_from}]`")
    best = record.metrics.get("best_epoch")
    if best is None:
        raise ValueError(f"epochs_from: job '{params.epochs_from}' logged no best_epoch "
                         f"(status {record.status})")
    return max(1, int(round(best)))


def _best_params_record(ctx: JobContext, name: str):
    """The succeeded tune job `name`, or one of `name#1..k` when `name` is a `workers: k` group."""
    candidates = [n for n in ctx.jobs_where(kind="tune") if n == name or n.startswith(f"{name}#")] or [name]
    records = [ctx.job(n) for n in candidates]
    for record in records:
        if record.status == "succeeded" and "best_params" in record.artifacts:
            return record
    found = ", ".join(f"{r.name} ({r.status})" for r in records)
    raise ValueError(f"params_from: no succeeded job '{name}' with a best_params artifact (found: {found}); "
                     f"add `after: [{name}]`")


def _apply_params_from(params, ctx: JobContext):
    """These params with the tune's best params over them: best params win for the keys they hold."""
    import json

    if not params.params_from:
        return params
    record = _best_params_record(ctx, params.params_from)
    with open(record.artifacts["best_params"], encoding="utf-8") as f:
        best = json.load(f)
    unknown = sorted(set(best) - set(Params.config_names))
    if unknown:
        raise ValueError(f"params_from: '{record.name}' best params hold {unknown}, not fine-tune settings")
    print(f"params_from {record.name}: {best}", flush=True)
    return params.model_copy(update=best)


def run(params, ctx: JobContext) -> None:
    import pandas as pd

    from pipeline import startup
    from pipeline.hooks import StopRequested
    from pipeline.training import finetune

    params = _apply_params_from(params, ctx)
    split, test = load_data(params)
    startup.mark("data read and split")
    train, val = split.train, split.val
    extra = extra_rows(params, ctx)
    if extra is not None:
        # Only training rows are augmented: validation stays the campaign's shared split.
        train = pd.concat([train, extra[~extra["text"].isin(set(val["text"]))]], ignore_index=True)
    if params.full_data:
        train, val = pd.concat([train, val], ignore_index=True), None
    epochs = _epochs(params, ctx)
    cfg = training_config(params, FinetuneConfig, Params.config_names, epochs=epochs,
                          model=resolve_model(ctx, params.model, train["text"].tolist()))
    startup.mark("model resolved")
    ctx.progress(0, None, f"{len(train)} train rows, {0 if val is None else len(val)} val rows")
    startup.mark("first progress write")
    try:
        result = finetune(cfg, train, val, test, output_dir=str(ctx.output_dir / "train"), hooks=hooks_for(ctx),
                          tracking=tracking_run(ctx, "finetune", params))
    except StopRequested as stop:
        raise Preempted(str(stop)) from None
    if result is not None:  # None: another rank of a data-parallel run; rank 0 reports
        _report(ctx, result, split.fingerprint, epochs)


def _report(ctx: JobContext, result, fingerprint: str, epochs: int) -> None:
    for key in ("val_accuracy", "val_f1", "best_epoch"):
        value = getattr(result, key)
        if value is not None:
            ctx.log_metric(key, value)
    ctx.log_metric("epochs_run", result.epochs_run)
    ctx.log_metric("train_samples_per_second", result.train_samples_per_second)
    for name in ("val_logits", "test_logits", "val_predictions", "test_predictions"):
        path = getattr(result, f"{name}_path")
        if path:
            ctx.add_artifact(name, path)
    ctx.add_artifact("model", result.model_dir)
    split_file = ctx.output_dir / "val_split.txt"
    split_file.write_text(fingerprint + "\n")
    ctx.add_artifact("val_split", split_file)
    ctx.add_artifact("result", ctx.output_dir / "train" / "result.json")


# What the scheduler shows of a fine-tune: a model on the leaderboard, its curves in the report.
DISPLAY = Display(
    model=True,
    scores={"val_accuracy": "val_accuracy", "val_f1": "val_f1"},
    details={"epochs": Column("epochs_run", param="epochs"), "best_epoch": Column("best_epoch")},
    params={"lr": "lr", "batch_size": "bs", "max_length": "len", "focal_gamma": "focal",
            "label_smoothing": "smooth", "swa_epochs": "swa", "seed": "seed"},
    # (pipeline/callbacks.py logs with step = the Trainer's global step; evaluation runs per epoch)
    curves=(Curve("accuracy", "val", "score"), Curve("f1", "val", "score"), Curve("loss", "val"),
            Curve("loss", "train")),
    colour="#3b75af",
)
def preflight(params, pre) -> None:
    """The train CSV (columns, labels in range), the test CSV, the model, and the jobs it reads from."""
    pre.labeled_csv("params.train", params.train, params.text_column, params.label_column, params.num_labels)
    if params.test:
        pre.text_csv("params.test", params.test, params.text_column)
    pre.model("params.model", params.model)
    check_trackers(pre, params.report_to)
    if isinstance(params.extra_train, FromJob):
        pre.produces("params.extra_train", params.extra_train.from_, params.extra_train.artifact or "augmented_csv")
    elif params.extra_train:
        pre.labeled_csv("params.extra_train", params.extra_train, params.text_column, params.label_column,
                        params.num_labels)
    if params.epochs_from:
        pre.produces("params.epochs_from", params.epochs_from, "best_epoch")
    if params.params_from:
        name = params.params_from
        pre.produces("params.params_from", name if pre.job(name) or not pre.job(f"{name}#1") else f"{name}#1",
                     "best_params")


OUTPUTS = ("model", "val_logits", "test_logits", "val_predictions", "test_predictions", "val_split", "result",
           "val_accuracy", "val_f1", "best_epoch", "epochs_run")
KIND = Kind("finetune", Params, run, summary="fine-tune a classifier (focal loss, SWA, early stopping, resume)",
            display=DISPLAY, preflight=preflight, outputs=OUTPUTS, models={"model": "hf"},
            preload=TRAINING_MODULES, gpus=1, multi_gpu=True, data_parallel=True, memory_params=MEMORY_PARAMS,
            work=rows_x_epochs)

"""`baseline`: TF-IDF character n-grams + logistic regression (scikit-learn) on the campaign's split.

    - name: baseline
      kind: baseline
      params: {train: data/reviews_train.csv, test: data/reviews_test.csv}   # same split params as the fine-tunes

The bar every transformer must clear, trained on the CPU in seconds. It splits the train CSV exactly
as `finetune` does (same `val_fraction`, `split_seed`, `max_train_rows` give the same validation
rows), so it sits on the leaderboard next to the fine-tunes and can be an ensemble member. Logs
`val_accuracy`, `val_f1`, `features`, `train_seconds` and `cpu_seconds`; artifacts `model`
(model.joblib), `val_logits`, `test_logits` (log-probabilities), `val_predictions`,
`test_predictions`, `val_split`, `result`.
"""

from __future__ import annotations

from pydantic import Field

from pipeline.config import BaselineConfig

from .common import DEFAULT_TEST, DEFAULT_TRAIN, params_from_config
from .context import JobContext
from .registry import Display, Kind

Params = params_from_config("BaselineParams", BaselineConfig, {
    "train": (str, DEFAULT_TRAIN),  # labelled CSV; validation rows are split off it
    "test": (str | None, DEFAULT_TEST),  # CSV to write test logits for (labels not needed)
    "text_column": (str, "review"),  # the column holding the text
    "label_column": (str, "label"),  # the column holding the class (0..num_labels-1)
    "val_fraction": (float, Field(default=0.1, gt=0, lt=1)),  # share of train held out for validation
    "split_seed": (int, 42),  # the campaign's split: keep it equal to the fine-tunes' to ensemble them
    "max_train_rows": (int | None, None),  # use only the first N rows of train (as the fine-tunes do)
}, skip=())


def run(params, ctx: JobContext) -> None:
    from pipeline.baseline import train_baseline

    from .common import training_config
    from .finetune import load_data

    split, test = load_data(params)
    cfg = training_config(params, BaselineConfig, Params.config_names)
    ctx.progress(0, 1, f"{len(split.train)} train rows, {len(split.val)} val rows")
    result = train_baseline(cfg, split.train, split.val, test, ctx.output_dir)
    for key in ("val_accuracy", "val_f1", "features", "train_seconds", "cpu_seconds"):
        ctx.log_metric(key, getattr(result, key))
    for name in ("val_logits", "test_logits", "val_predictions", "test_predictions"):
        path = getattr(result, f"{name}_path")
        if path:
            ctx.add_artifact(name, path)
    ctx.add_artifact("model", result.model_path)
    split_file = ctx.output_dir / "val_split.txt"
    split_file.write_text(split.fingerprint + "\n")
    ctx.add_artifact("val_split", split_file)
    ctx.add_artifact("result", ctx.output_dir / "result.json")
    ctx.progress(1, 1, f"val_accuracy {result.val_accuracy:.4f} in {result.cpu_seconds:.1f} CPU s")


def preflight(params, pre) -> None:
    """The train CSV (columns, labels in range) and the test CSV."""
    pre.labeled_csv("params.train", params.train, params.text_column, params.label_column, params.num_labels)
    if params.test:
        pre.text_csv("params.test", params.test, params.text_column)


# A model on the leaderboard like a fine-tune (same score columns); its model column shows the analyzer.
KIND = Kind("baseline", Params, run, summary="TF-IDF character n-grams + logistic regression (CPU, seconds)",
            display=Display(model=True, model_param="analyzer",
                            scores={"val_accuracy": "val_accuracy", "val_f1": "val_f1"},
                            params={"C": "C"}, colour="#7f7f7f"),
            preflight=preflight, preload=("pipeline.baseline",), reusable=True,  # scikit-learn, no CUDA
            models={"model": "joblib"},  # model.joblib: the one joblib file predict unpickles from a job
            outputs=("model", "val_logits", "test_logits", "val_predictions", "test_predictions", "val_split",
                     "result", "val_accuracy", "val_f1"))

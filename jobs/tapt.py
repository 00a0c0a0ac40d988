"""`tapt`: task-adaptive pretraining, continued masked-LM training on the task's own texts.

    - name: "tapt-{model}"
      kind: tapt
      params: {model: klue/roberta-base, texts: [data/reviews_train.csv, data/reviews_test.csv], epochs: 3}

Saves model + tokenizer as artifact `model` (a fine-tune loads it with `model: {from: tapt-...}`);
logs `mlm_loss` and `perplexity` per epoch, then `final_mlm_loss` and `final_perplexity`.
"""

from __future__ import annotations

from pydantic import Field

from pipeline.config import TaptConfig

from .common import (
    DEFAULT_TEST,
    DEFAULT_TRAIN,
    MEMORY_PARAMS,
    TRAINING_MODULES,
    ModelRef,
    check_trackers,
    data_path,
    hooks_for,
    params_from_config,
    resolve_model,
    tracking_run,
    training_config,
)
from .context import JobContext, Preempted
from .registry import Curve, Display, Kind
from .work import rows_x_epochs

Params = params_from_config("TaptParams", TaptConfig, {
    # hub name, local folder, "tiny", or {from: job} to continue another job's model
    "model": (ModelRef, "tiny"),
    # CSV files whose text column is the unlabeled corpus (labels are not read)
    "texts": (list[str], Field(default_factory=lambda: [DEFAULT_TRAIN, DEFAULT_TEST], min_length=1)),
    "text_column": (str, "review"),  # the column holding the text
    "max_texts": (int | None, None),  # use only the first N texts (quick runs)
})


def run(params, ctx: JobContext) -> None:
    from pipeline.data import load_texts
    from pipeline.hooks import StopRequested
    from pipeline.training import tapt

    texts = [t for path in params.texts for t in load_texts(data_path(path), params.text_column)]
    texts = texts[: params.max_texts] if params.max_texts else texts
    ctx.progress(0, None, f"{len(texts)} texts")
    cfg = training_config(params, TaptConfig, Params.config_names,
                          model=resolve_model(ctx, params.model, texts))
    try:
        result = tapt(cfg, texts, output_dir=str(ctx.output_dir / "train"), hooks=hooks_for(ctx),
                      tracking=tracking_run(ctx, "tapt", params))
    except StopRequested as stop:
        raise Preempted(str(stop)) from None
    if result is None:  # another rank of a data-parallel run: rank 0 reports
        return
    ctx.log_metric("final_mlm_loss", result.final_mlm_loss)
    ctx.log_metric("final_perplexity", result.final_perplexity)
    if result.initial_mlm_loss is not None:
        ctx.log_metric("initial_mlm_loss", result.initial_mlm_loss)
    ctx.add_artifact("model", result.model_dir)
    ctx.add_artifact("result", ctx.output_dir / "train" / "result.json")


def preflight(params, pre) -> None:
    for i, path in enumerate(params.texts):
        pre.text_csv(f"params.texts[{i}]", path, params.text_column)
    pre.model("params.model", params.model)
    check_trackers(pre, params.report_to)


KIND = Kind(
    "tapt", Params, run, preflight=preflight, outputs=("model", "result", "final_mlm_loss", "final_perplexity"),
    models={"model": "hf"},
    preload=TRAINING_MODULES, gpus=1, multi_gpu=True, data_parallel=True, memory_params=MEMORY_PARAMS,
    work=rows_x_epochs,
    summary="continued masked-LM pretraining (TAPT) on the task's own texts",
    display=Display(curves=(Curve("mlm_loss", "val"), Curve("mlm_loss", "train")), colour="#6a9f58"),
)

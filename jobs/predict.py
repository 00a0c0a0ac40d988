"""`predict`: logits and predicted classes of any saved classifier on any CSV.

    - name: predict-test
      kind: predict
      after: [retrain-best]
      params: {model: {from: retrain-best}, csv: data/reviews_test.csv}

Artifacts `logits` (.npy, one row per CSV row) and `predictions` (CSV with the text and the class).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .common import TRAINING_MODULES, ModelRef, data_path, resolve_model
from .context import JobContext
from .registry import Kind


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelRef  # a saved classifier: folder, hub name, or {from: job}
    csv: str  # the rows to predict
    text_column: str = "review"
    batch_size: int = Field(default=64, ge=1)
    max_length: int = Field(default=128, ge=8)


def run(params: Params, ctx: JobContext) -> None:
    import numpy as np
    import pandas as pd

    from pipeline.data import LABEL_NAMES, load_texts
    from pipeline.training import predict

    texts = load_texts(data_path(params.csv), params.text_column)
    model = resolve_model(ctx, params.model, None)
    ctx.progress(0, len(texts), "rows")
    logits = predict(model, texts, batch_size=params.batch_size, max_length=params.max_length,
                     device=ctx.device)
    ctx.progress(len(texts), len(texts), "rows")
    logits_path = ctx.output_dir / "logits.npy"
    np.save(logits_path, logits)
    classes = logits.argmax(axis=1)
    names = [LABEL_NAMES[c] if c < len(LABEL_NAMES) else str(c) for c in classes]
    pd.DataFrame({"text": texts, "prediction": classes, "label_name": names}).to_csv(
        ctx.output_dir / "predictions.csv", index=False)
    ctx.add_artifact("logits", logits_path)
    ctx.add_artifact("predictions", ctx.output_dir / "predictions.csv")
    for label, count in zip(*np.unique(classes, return_counts=True)):
        ctx.log_metric("predicted_share", count / len(classes), step=int(label))


def preflight(params: Params, pre) -> None:
    pre.text_csv("params.csv", params.csv, params.text_column)
    pre.model("params.model", params.model)


KIND = Kind("predict", Params, run, summary="logits and predicted classes of a saved classifier on a CSV",
            preflight=preflight, outputs=("logits", "predictions"), preload=TRAINING_MODULES)

"""`augment`: back-translation data augmentation; writes extra training rows for a fine-tune.

    - name: augment-bt
      kind: augment
      gpus: 1
      params: {forward_model: Helsinki-NLP/opus-mt-ko-en, backward_model: <an English->Korean model>,
               fraction: 0.5, num_beams: 4}
    - name: finetune-aug
      kind: finetune
      after: [augment-bt]
      params: {model: klue/roberta-base, extra_train: {from: augment-bt}}

Translates `fraction` of the training reviews to the pivot language and back, drops empty,
unchanged, badly sized and duplicate outputs, and writes the rest to `augmented.csv` (the training
CSV's columns, source labels), artifact `augmented_csv`. By default the rows that the fine-tune's
default split (`val_fraction` 0.1, `split_seed` 42) holds out for validation are not augmented, so no
paraphrase of a validation review is trained on; keep these equal to the fine-tune's values.
Logs `augmented_rows`, `candidates`, `kept_fraction` and `dropped_<reason>` for each reason
(`empty`, `identical`, `too_short`, `too_long`, `duplicate`). A stop request between batches ends
the job as preempted; it then starts over (no partial results are kept).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .common import DEFAULT_TRAIN, data_path
from .context import JobContext, Preempted
from .registry import Kind

OUTPUT_NAME = "augmented.csv"
# Stats of augment_csv logged as metrics (plus one dropped_<reason> per drop reason).
_METRICS = ("augmented_rows", "candidates", "kept_fraction")


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    train: str = DEFAULT_TRAIN  # labelled CSV whose rows are back-translated
    forward_model: str = Field(min_length=1)  # seq2seq hub name or folder: review language -> pivot
    backward_model: str = Field(min_length=1)  # seq2seq hub name or folder: pivot -> review language
    fraction: float = Field(default=1.0, gt=0, le=1)  # share of the (non-validation) rows to augment, per label
    seed: int = 0  # which rows `fraction` picks
    batch_size: int = Field(default=16, ge=1)  # texts per generate() call
    max_length: int = Field(default=128, ge=1)  # max input tokens (truncated) and new tokens, per direction
    num_beams: int = Field(default=1, ge=1)  # 1: greedy decoding; more: beam search (slower, fluent)
    min_length_ratio: float = Field(default=0.5, ge=0)  # drop outputs shorter than this x the source (chars)
    max_length_ratio: float = Field(default=2.0, gt=0)  # drop outputs longer than this x the source (chars)
    text_column: str = "review"  # the review text column of `train` (and of the output)
    label_column: str = "label"  # the integer label column of `train` (and of the output)
    num_labels: int = Field(default=4, ge=2)  # labels must be 0..num_labels-1
    val_fraction: float | None = Field(default=0.1, gt=0, lt=1)  # skip the fine-tune's val rows; null: all
    split_seed: int = 42  # the fine-tune's split_seed, used with val_fraction
    source_column: str | None = None  # also write each row's source review in this extra column

    @model_validator(mode="after")
    def _ratio_bounds(self):
        if self.max_length_ratio < self.min_length_ratio:
            raise ValueError(f"max_length_ratio ({self.max_length_ratio}) is below "
                             f"min_length_ratio ({self.min_length_ratio})")
        return self


class NothingKept(RuntimeError):
    pass


def run(params: Params, ctx: JobContext) -> None:
    from pipeline.augment import augment_csv
    from pipeline.hooks import StopRequested

    out_csv = ctx.output_dir / OUTPUT_NAME
    ctx.progress(0, None, "loading translation models")
    try:
        stats = augment_csv(
            data_path(params.train), out_csv, params.forward_model, params.backward_model,
            fraction=params.fraction, seed=params.seed, text_column=params.text_column,
            label_column=params.label_column, num_labels=params.num_labels, batch_size=params.batch_size,
            max_length=params.max_length, num_beams=params.num_beams, device=ctx.device,
            min_length_ratio=params.min_length_ratio, max_length_ratio=params.max_length_ratio,
            val_fraction=params.val_fraction, split_seed=params.split_seed,
            source_column=params.source_column,
            on_progress=lambda done, total, message: ctx.progress(done, total, message),
            should_stop=ctx.should_stop,
        )
    except StopRequested:
        raise Preempted("stop requested during back-translation; it restarts from the beginning") from None
    for key in _METRICS:
        ctx.log_metric(key, stats[key])
    dropped = {key: value for key, value in stats.items() if key.startswith("dropped_")}
    for key, value in dropped.items():
        ctx.log_metric(key, value)
    print(f"augmented {stats['augmented_rows']} of {stats['candidates']} rows in {stats['seconds']:.1f}s; "
          + ", ".join(f"{k} {v}" for k, v in dropped.items()), flush=True)
    if stats["augmented_rows"] == 0:
        # An empty file would only fail the fine-tune that reads it, later and less clearly.
        raise NothingKept(f"no augmented rows kept out of {stats['candidates']}: "
                          + ", ".join(f"{k} {v}" for k, v in dropped.items()))
    ctx.add_artifact("augmented_csv", out_csv)


def preflight(params: Params, pre) -> None:
    pre.labeled_csv("params.train", params.train, params.text_column, params.label_column, params.num_labels)
    pre.model("params.forward_model", params.forward_model)
    pre.model("params.backward_model", params.backward_model)


KIND = Kind("augment", Params, run, summary="back-translation: extra training rows for a fine-tune",
            preflight=preflight, outputs=("augmented_csv",), preload=("torch", "transformers", "pipeline.augment"),
            gpus=1, memory_params=("forward_model", "backward_model", "batch_size", "max_length"))

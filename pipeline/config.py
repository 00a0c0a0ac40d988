"""Training configurations as plain dataclasses (no torch import: the queue validates them cheaply)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
BEST_METRICS = ("accuracy", "f1", "loss")
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")
TRACKERS = ("tensorboard", "mlflow", "wandb")  # experiment trackers a run may report to (pipeline/tracking.py)
# Settings that do not change what a run computes: a run resumed with other values is the same run.
NOT_TRAINING = ("report_to",)


class _Config:
    """What every config here does: check its fields, and round-trip through a dict."""

    def _require(self, checks: list[tuple[bool, str]]) -> None:
        """Raise ValueError naming the first check that fails."""
        for ok, message in checks:
            if not ok:
                raise ValueError(f"{type(self).__name__}: {message}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict):
        """Build from a dict (e.g. a job's JSON payload), rejecting unknown keys by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}")
        cfg = cls(**values)
        cfg.validate()
        return cfg


@dataclass
class _TrainCommon(_Config):
    """Settings shared by fine-tuning and TAPT."""

    model: str = "tiny"  # hub name, local folder, or "tiny" (built on the fly from the training texts)
    epochs: int = 3
    lr: float = 2e-5
    batch_size: int = 32  # per device
    grad_accum: int = 1
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    scheduler_type: str = "linear"
    max_length: int = 128
    seed: int = 42
    precision: str = "auto"  # "auto": bf16 if the GPU supports it, else fp16 on GPU, fp32 on CPU
    save_total_limit: int | None = 2  # checkpoints kept (the best one is always kept too)
    eval_batch_size: int | None = None  # default: 2 x batch_size (no gradients to hold)
    logging_steps: int = 0  # 0: log the train loss once per epoch
    cache_dir: str | None = None  # tokenization cache; default $SCHED_CACHE_DIR or ~/.cache/sched/tokens
    # Runs that cannot lead anywhere stop early with the reason (pipeline/health.py), not at the end:
    nan_check_steps: int = 50  # check the weights for NaN/inf every N steps (0: only the logged losses)
    not_learning_epoch: int = 2  # from this epoch on, fail a run whose evaluations never looked alive (0: never)
    # ...and not before this many optimizer steps: a model trained from scratch may predict one class
    # for its first ~50-100 updates and then learn (two epochs of 800 rows are only 50 steps)
    not_learning_min_steps: int = 100
    # experiment trackers to report to: tensorboard, mlflow, wandb (pip install 'sched[tracking]')
    report_to: list[str] = dataclasses.field(default_factory=list)

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        unknown = [name for name in self.report_to if name not in TRACKERS]
        self._require([
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.grad_accum >= 1, "grad_accum must be >= 1"),
            (0 <= self.warmup_ratio < 1, "warmup_ratio must be in [0, 1)"),
            (self.scheduler_type in SCHEDULERS, f"scheduler_type must be one of {SCHEDULERS}"),
            (self.max_length >= 8, "max_length must be >= 8"),
            (self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}"),
            (self.nan_check_steps >= 0, "nan_check_steps must be >= 0"),
            (self.not_learning_epoch >= 0, "not_learning_epoch must be >= 0"),
            (self.not_learning_min_steps >= 0, "not_learning_min_steps must be >= 0"),
            (not unknown, f"report_to: {', '.join(map(repr, unknown))} is not one of {', '.join(TRACKERS)}"),
            (len(set(self.report_to)) == len(self.report_to), "report_to names a tracker twice"),
        ])


@dataclass
class FinetuneConfig(_TrainCommon):
    """Fine-tuning a sequence classifier."""

    lr: float = 2e-5
    num_labels: int = 4
    focal_gamma: float = 0.0  # 0 = plain cross-entropy
    focal_alpha: list[float] | None = None  # per-class balance factor of focal loss
    label_smoothing: float = 0.0
    class_weights: list[float] | None = None
    swa_epochs: int = 0  # average the weights of the last K epochs (0 = off)
    early_stopping_patience: int = 0  # evaluations without improvement before stopping (0 = off)
    metric_for_best: str = "f1"
    full_data: bool = False  # train on train+val, no evaluation (the final run of a campaign)
    length_grouping: bool = True  # batch similar lengths together: less padding, faster
    special_tokens: list[str] | None = None  # added to the tokenizer; the embeddings grow to match
    # What "not learning" means for a classifier (the ensemble leaves such members out by the same test):
    collapse_share: float = 0.95  # one class: the most predicted class takes this share of validation rows
    min_gain_over_majority: float = 0.0  # alive: validation accuracy beats the majority class's share by more

    def validate(self) -> None:
        super().validate()
        for name in ("focal_alpha", "class_weights"):
            values = getattr(self, name)
            if values is not None and len(values) != self.num_labels:
                raise ValueError(f"FinetuneConfig: {name} needs {self.num_labels} values, got {len(values)}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError("FinetuneConfig: label_smoothing must be in [0, 1)")
        if self.focal_gamma < 0:
            raise ValueError("FinetuneConfig: focal_gamma must be >= 0")
        if not 0 <= self.swa_epochs <= self.epochs:
            raise ValueError("FinetuneConfig: swa_epochs must be in [0, epochs]")
        if self.metric_for_best not in BEST_METRICS:
            raise ValueError(f"FinetuneConfig: metric_for_best must be one of {BEST_METRICS}")
        if self.num_labels < 2:
            raise ValueError("FinetuneConfig: num_labels must be >= 2")
        if not 0 < self.collapse_share <= 1:
            raise ValueError("FinetuneConfig: collapse_share must be in (0, 1]")
        if not 0 <= self.min_gain_over_majority < 1:
            raise ValueError("FinetuneConfig: min_gain_over_majority must be in [0, 1)")


@dataclass
class TaptConfig(_TrainCommon):
    """Task-adaptive pretraining: continued masked-LM training on the task's unlabeled texts."""

    lr: float = 1e-4
    mlm_probability: float = 0.15
    whole_word_mask: bool = False
    eval_fraction: float = 0.05  # texts held out to measure MLM loss/perplexity each epoch
    eval_max_rows: int = 2000

    def validate(self) -> None:
        super().validate()
        if not 0 < self.mlm_probability < 1:
            raise ValueError("TaptConfig: mlm_probability must be in (0, 1)")
        if not 0 < self.eval_fraction < 1:
            raise ValueError("TaptConfig: eval_fraction must be in (0, 1)")


# The `baseline` kind (pipeline/baseline.py): here, not there, so validating its params imports no
# scikit-learn (a second of start-up for every `sched status`).
ANALYZERS = ("char_wb", "char", "word")


@dataclass
class BaselineConfig(_Config):
    analyzer: str = "char_wb"  # char_wb: character n-grams inside word boundaries; char: across them; word
    ngram_min: int = 1  # shortest n-gram
    ngram_max: int = 4  # longest n-gram
    min_df: int = 2  # drop n-grams seen in fewer training texts (noise, and memory)
    max_features: int | None = 300_000  # keep the most frequent n-grams (None: all)
    sublinear_tf: bool = True  # 1 + log(tf): a repeated syllable should not dominate a review
    C: float = 1.0  # inverse regularisation strength of the logistic regression
    max_iter: int = 2000  # solver iterations
    num_labels: int = 4

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        self._require([
            (self.analyzer in ANALYZERS, f"analyzer must be one of {ANALYZERS}"),
            (1 <= self.ngram_min <= self.ngram_max, "need 1 <= ngram_min <= ngram_max"),
            (self.min_df >= 1, "min_df must be >= 1"),
            (self.max_features is None or self.max_features >= 1, "max_features must be >= 1"),
            (self.C > 0, "C must be > 0"),
            (self.max_iter >= 1, "max_iter must be >= 1"),
            (self.num_labels >= 2, "num_labels must be >= 2"),
        ])

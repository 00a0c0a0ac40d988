"""The ensemble job's params, checked at submit time, and its error."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

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



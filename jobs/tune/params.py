"""The tune job's params: the search space, checked at submit time against the fine-tune's own
settings (a bad bound or choice is reported before anything runs), the budget and the deadline.
"""

from __future__ import annotations

import math
import typing
from datetime import datetime
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from pipeline.config import FinetuneConfig
from pipeline.util import parse_duration

from ..finetune import Params as FinetuneParams

# Settings a search space may cover: the fine-tune's training config, minus what must stay fixed
# (num_labels is the data's, full_data has no validation, cache_dir is where tokens are cached, the
# health checks say when a trial is dead) and list-valued ones (Optuna's categorical choices are scalars).
_NOT_TUNABLE = {"full_data", "cache_dir", "num_labels", "nan_check_steps", "not_learning_epoch",
                "not_learning_min_steps", "collapse_share", "min_gain_over_majority"}
_HINTS = typing.get_type_hints(FinetuneConfig)


def _scalar_kind(name: str) -> str | None:
    """"int", "float", "bool" or "str" for a config field, None for list-valued ones."""
    hint = _HINTS[name]
    args = [a for a in (typing.get_args(hint) or (hint,)) if a is not type(None)]
    if any(typing.get_origin(a) is list or a is list for a in args):
        return None
    for kind in (bool, float, int, str):  # bool first: it is an int too
        if kind in args:
            return kind.__name__
    return None


TUNABLE = tuple(n for n in FinetuneParams.config_names if n not in _NOT_TUNABLE and _scalar_kind(n))


def _error(message: str) -> PydanticCustomError:
    # `{msg}` template: our message may hold braces (values), which must not be read as fields.
    return PydanticCustomError("tune_params", "{msg}", {"msg": message})


class SpaceParam(BaseModel):
    """One dimension of the search space."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["float", "int", "categorical"]
    low: float | None = None  # float/int: smallest value
    high: float | None = None  # float/int: largest value
    log: bool = False  # float/int: sample on a log scale (low must be > 0)
    step: float | None = None  # float/int: grid step (not with log)
    choices: list[Any] | None = None  # categorical: the values to pick from

    @model_validator(mode="after")
    def _check(self):
        if self.type == "categorical":
            if not self.choices:
                raise _error("categorical needs a non-empty 'choices' list")
            extra = [k for k in ("low", "high", "step") if getattr(self, k) is not None] + (["log"] if self.log else [])
            if extra:
                raise _error(f"categorical takes only 'choices', not {', '.join(extra)}")
            bad = [c for c in self.choices if c is not None and not isinstance(c, (bool, int, float, str))]
            if bad:
                raise _error(f"choices must be numbers, strings, booleans or null, got {bad[0]!r}")
            return self
        if self.low is None or self.high is None:
            raise _error(f"{self.type} needs 'low' and 'high'")
        if self.choices is not None:
            raise _error(f"{self.type} takes 'low'/'high', not 'choices' (use type: categorical)")
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise _error("low and high must be finite numbers")
        if self.low > self.high:
            raise _error(f"low ({self.low:g}) must be <= high ({self.high:g})")
        if self.log and self.low <= 0:
            raise _error(f"log: true needs low > 0, got low={self.low:g}")
        if self.step is not None and (self.step <= 0 or self.log):
            raise _error("step must be > 0 and cannot be combined with log: true")
        if self.type == "int":
            for key in ("low", "high", "step"):
                value = getattr(self, key)
                if value is not None and value != int(value):
                    raise _error(f"int needs whole numbers, got {key}={value:g}")
        return self

    def candidates(self) -> list[Any]:
        """The values whose validity is checked at submit time: the bounds, or every choice."""
        if self.type == "categorical":
            return list(self.choices)
        cast = int if self.type == "int" else float
        return [cast(self.low), cast(self.high)]


def parse_until(value: str | float | None) -> tuple[str, float] | None:
    """("after", seconds) for a duration ("8h", "1h30m", "90s", "600"), ("at", epoch seconds) for an
    ISO date-time ("2025-06-01T08:00", local time unless it has an offset); None for None."""
    if value is None:
        return None
    try:
        return "after", parse_duration(value)
    except ValueError:
        pass
    try:
        return "at", datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        raise ValueError(f"'{value}' is neither a duration (8h, 1h30m, 90s) nor an ISO date-time "
                         "(2025-06-01T08:00)") from None


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    space: dict[str, SpaceParam] = Field(min_length=1)  # setting -> {type, low, high, log, step | choices}
    finetune: FinetuneParams = Field(default_factory=FinetuneParams)  # fixed fine-tune params of every trial
    metric: Literal["val_accuracy", "val_f1"] = "val_f1"  # the objective: a validation metric of the fine-tune
    direction: Literal["maximize", "minimize"] = "maximize"
    n_trials: int | None = Field(default=20, ge=1)  # the study's total of complete + pruned trials
    until: str | float | None = None  # deadline: ISO date-time, or a duration (8h) from the study's first start
    sampler: Literal["tpe", "random"] = "tpe"
    seed: int | None = 42  # sampler seed (each trial draws from seed + its number: reproducible, no repeats)
    startup_trials: int = Field(default=5, ge=0)  # tpe: random trials before it models the results
    pruner: Literal["median", "hyperband", "none"] = "median"
    pruner_startup_trials: int = Field(default=3, ge=0)  # median: finished trials before it prunes any
    pruner_warmup_epochs: int = Field(default=0, ge=0)  # median: epochs every trial runs before it may be pruned
    study: str | None = None  # study name; default the `workers: k` group name, else the job name
    heartbeat_s: int = Field(default=30, ge=1)  # a running trial writes a heartbeat this often
    grace_s: int | None = Field(default=None, ge=1)  # silence that marks a trial dead (default 4x heartbeat, >= 120)
    max_retry: int = Field(default=2, ge=0)  # times a trial whose process died is run again (stops do not count)

    @field_validator("until")
    @classmethod
    def _check_until(cls, value):
        try:
            parse_until(value)
        except ValueError as exc:
            raise _error(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _check(self):
        if self.n_trials is None and self.until is None:
            raise _error("params: give n_trials or until (or both), or the search never ends")
        fixed = self.finetune
        for key, bad, why in (("full_data", fixed.full_data, "trials need validation rows to be scored on"),
                              ("epochs_from", fixed.epochs_from, "set epochs, or put it in the space"),
                              ("params_from", fixed.params_from, "a tune starts from its own space")):
            if bad:
                raise _error(f"params.finetune.{key}: not allowed in a tune ({why})")
        fixed_values = fixed.model_dump(by_alias=True, exclude_unset=True)
        for name, spec in self.space.items():
            where = f"params.space.{name}"
            if name not in TUNABLE:
                raise _error(f"{where}: '{name}' is not a tunable fine-tune setting "
                             f"(tunable: {', '.join(sorted(TUNABLE))})")
            if name in fixed.model_fields_set:
                raise _error(f"{where}: '{name}' is also fixed in params.finetune; keep one")
            kind = _scalar_kind(name)
            if spec.type == "float" and kind != "float":
                raise _error(f"{where}: {name} is {'a whole number' if kind == 'int' else 'not a number'}; "
                             f"use type: {'int' if kind == 'int' else 'categorical'}")
            if spec.type == "int" and kind not in ("int", "float"):
                raise _error(f"{where}: {name} is not a number; use type: categorical")
            checked = []
            for value in spec.candidates():
                try:
                    trial_params = FinetuneParams.model_validate({**fixed_values, name: value})
                except ValidationError as exc:
                    reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
                    raise _error(f"{where}: {name}={value!r} is not a valid fine-tune setting: {reason}") from None
                checked.append(getattr(trial_params, name))
            if spec.type == "categorical":
                spec.choices = checked  # as the fine-tune reads them ("1e-3" from YAML becomes 0.001)
        return self

    def max_epochs(self) -> int:
        spec = self.space.get("epochs")
        return int(spec.high if spec.type != "categorical" else max(spec.choices)) if spec else self.finetune.epochs


def study_name(params: dict | None, job_name: str, group: str | None) -> str:
    """A tune job's Optuna study: its `study` param, else its `workers: k` group, else its own name."""
    return (params or {}).get("study") or group or job_name

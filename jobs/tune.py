"""`tune`: an Optuna search over fine-tune settings; the study lives in the queue's own database.

    - name: tune-roberta
      kind: tune
      workers: 2                 # tune-roberta#1 and #2 share one study (e.g. one per GPU)
      priority: -10
      preemptible: true          # backfill: yields its slot to higher-priority jobs, resumes later
      params:
        n_trials: 30             # the study's total of finished (complete + pruned) trials
        until: 8h                # and/or a deadline: ISO time, or a duration from the study's first start
        metric: val_f1
        space:
          lr: {type: float, low: 1e-5, high: 1e-3, log: true}
          batch_size: {type: categorical, choices: [16, 32]}
          epochs: {type: int, low: 1, high: 3}
        finetune: {model: klue/roberta-base, max_length: 128}   # fixed settings of every trial
    - name: final
      kind: finetune
      after: [tune-roberta]
      params: {model: klue/roberta-base, params_from: tune-roberta}

Every trial is a `finetune` on the campaign's shared split (same validation rows for all trials),
trained in `trial-<number>/` of the job's folder; each epoch's validation metric is reported to the
trial, so the pruner can stop a poor one early. Trials that are finished and not the best lose their
checkpoints and model files. The study (default name: the `workers: k` group, else the job name) is
created with `load_if_exists`, so a job that runs again continues it: finished trials are kept and
`n_trials` counts the whole study, across runs and across the k jobs of a group.

Crashes and stops:
- a trial whose process died is failed and queued to run again with the same params (at most
  `max_retry` times): by the job itself when it runs again (it owns the trials it started), and by
  Optuna's heartbeat for the trials of any other job (stale after `grace_s`). A re-run trial resumes
  from its last epoch checkpoint when its folder is this job's.
- `ctx.should_stop()` (shutdown, or preemption of a `preemptible` job) inside a trial: the fine-tune
  saves a checkpoint, the trial is queued again with the same params, and the job ends as preempted;
  when it runs again it continues that trial from the checkpoint. Between trials: it just stops.

Logs `trial_value` (step = trial number), `param_<name>` per trial, `trial_pruned_epoch`, `best_value`,
`best_trial`, and at the end `n_complete`/`n_pruned`/`n_failed`; artifacts `trials.csv`,
`best_params` (JSON: the best trial's params; see `params_from` of finetune), `best_model`, `val_split`.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
import typing
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from pipeline.config import FinetuneConfig

from .context import JobContext, Preempted
from .finetune import Params as FinetuneParams

# ------------------------------------------------------------------------- params

# Settings a search space may cover: the fine-tune's training config, minus what must stay fixed
# (num_labels is the data's, full_data has no validation, cache_dir is where tokens are cached) and
# list-valued ones (Optuna's categorical choices are scalars).
_NOT_TUNABLE = {"full_data", "cache_dir", "num_labels"}
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


_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*$")


def parse_until(value: str | float | None) -> tuple[str, float] | None:
    """("after", seconds) for a duration ("8h", "1h30m", "90s", "600"), ("at", epoch seconds) for an
    ISO date-time ("2025-06-01T08:00", local time unless it has an offset); None for None."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "after", float(value)
    match = _DURATION.match(str(value))
    if match and any(match.groups()):
        hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
        return "after", hours * 3600 + minutes * 60 + seconds
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


# ------------------------------------------------------------------------- storage


SQLITE_BUSY_TIMEOUT_S = 60.0  # the queue's writers hold the lock briefly; Optuna's writes wait their turn


def storage_url(url: str) -> str:
    """The queue's URL as Optuna's SQLAlchemy engine needs it (psycopg 3 for a bare postgresql://)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _immediate_transactions(engine) -> None:
    """Make every transaction of Optuna's SQLite engine BEGIN IMMEDIATE, like the queue's own.

    Optuna reads then writes inside one transaction (ask, tell, heartbeats). In WAL mode a deferred
    transaction that must upgrade its read lock while another connection wrote in between fails at
    once with "database is locked", whatever the busy timeout; taking the write lock up front makes
    it wait for its turn instead (see scheduler/db.py for the measurement).
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # SQLAlchemy's begin event below starts transactions

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened by the constructor predate the listeners


def open_storage(url: str, *, heartbeat_s: int | None = None, grace_s: int | None = None,
                 stale_trial_callback=None, attempts: int = 6):
    """Optuna's RDBStorage on the queue's database, with heartbeats when `heartbeat_s` is given.

    Several jobs of a group open a fresh database at once: their CREATE TABLEs race (PostgreSQL
    reports a duplicate type, SQLite "table exists"); table creation is idempotent, so try again.
    """
    import random
    import warnings

    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    url = storage_url(url)
    sqlite = url.startswith("sqlite")
    engine_kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}} if sqlite else {"pool_pre_ping": True}
    extra = {}
    if heartbeat_s is not None:
        extra = dict(heartbeat_interval=heartbeat_s, grace_period=grace_s or max(120, 4 * heartbeat_s),
                     heartbeat_stale_trial_callback=stale_trial_callback)
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **extra)
            break
        except (SQLAlchemyError, optuna.exceptions.StorageInternalError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 + random.random() * (attempt + 1))
    if sqlite:
        _immediate_transactions(storage.engine)
    return storage


class RetryTrial:
    """Queue a dead or stopped trial to run again: a WAITING copy with the same params.

    Used as Optuna's `heartbeat_stale_trial_callback` and by the tune job for its own trials. Like
    Optuna's RetryHeartbeatStaleTrialCallback (same `failed_trial`/`retry_history` attributes), but a
    stop on request (`preempted=True`) does not count against `max_retry`, the copy keeps the
    intermediate values (the epochs a resumed trial does not run again) and drops the owner mark, so
    the job that picks the copy up owns it.
    """

    def __init__(self, max_retry: int):
        self.max_retry = max_retry

    def __call__(self, study, trial, preempted: bool = False) -> None:
        import optuna

        retries = int(trial.system_attrs.get("sched_retries", 0)) + (0 if preempted else 1)
        if retries > self.max_retry:
            print(f"trial {trial.number} failed {retries} times; not retried (max_retry {self.max_retry})",
                  flush=True)
            return
        system_attrs = {k: v for k, v in trial.system_attrs.items() if k != "fixed_params"}
        system_attrs.update(failed_trial=trial.system_attrs.get("failed_trial", trial.number),
                            retry_history=[*trial.system_attrs.get("retry_history", []), trial.number],
                            sched_retries=retries)
        user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in _OWNER_ATTRS}
        study.add_trial(optuna.create_trial(
            state=optuna.trial.TrialState.WAITING, params=trial.params, distributions=trial.distributions,
            user_attrs=user_attrs, system_attrs=system_attrs, intermediate_values=trial.intermediate_values))


# user attrs of a trial: who runs it, where it trains, how it stopped
JOB_ATTR, DIR_ATTR, STOPPED_ATTR, SURPLUS_ATTR = "sched_job", "sched_trial_dir", "sched_stopped", "sched_surplus"
_OWNER_ATTRS = (JOB_ATTR, STOPPED_ATTR, SURPLUS_ATTR)
FIRST_START_ATTR = "sched_first_start"  # study user attr: epoch seconds of the study's first run
TINY_ATTR = "sched_tiny_model"  # study user attr: the "tiny" preset its trials train (a folder)


# ------------------------------------------------------------------------- the job


class _Stopped(Exception):
    """should_stop() fired inside a trial; the fine-tune saved a checkpoint first."""


class _Surplus(Exception):
    """Another worker of the study took the last trial of the budget at the same moment."""


class _Tuner:
    def __init__(self, params: Params, ctx: JobContext):
        import optuna

        self.params, self.ctx = params, ctx
        self.study_name = params.study or ctx.group or ctx.name
        self.retry = RetryTrial(params.max_retry)
        url = ctx.db_url or f"sqlite:///{(ctx.output_dir / 'optuna.db').resolve()}"
        self.storage = open_storage(url, heartbeat_s=params.heartbeat_s, grace_s=params.grace_s,
                                    stale_trial_callback=self.retry)
        from pipeline.tuning import make_pruner, make_sampler

        self.study = optuna.create_study(
            storage=self.storage, study_name=self.study_name, direction=params.direction, load_if_exists=True,
            sampler=make_sampler(params.sampler, params.seed, params.startup_trials),
            pruner=make_pruner(params.pruner, startup_trials=params.pruner_startup_trials,
                               warmup_epochs=params.pruner_warmup_epochs, max_epochs=params.max_epochs()))
        self.space = {name: spec.model_dump() for name, spec in params.space.items()}
        self.fixed = params.finetune.model_copy(update={"test": None})  # trials write no test logits
        if "metric_for_best" not in params.finetune.model_fields_set and "metric_for_best" not in params.space:
            # The model a trial keeps (and scores) is its best epoch by the metric being tuned.
            self.fixed = self.fixed.model_copy(update={"metric_for_best": params.metric.removeprefix("val_")})
        self.deadline: float | None = None
        self.logged_best: float | None = None
        self.current_id: int | None = None  # the trial in flight (or last run)

    # ---- set-up

    def load_data(self) -> None:
        import pandas as pd

        from .common import resolve_model
        from .finetune import _extra_rows, _load_data

        split, _ = _load_data(self.fixed)
        self.train, self.val = split.train, split.val
        extra = _extra_rows(self.fixed, self.ctx)
        if extra is not None:
            # As in finetune: only training rows grow; validation stays the campaign's shared split.
            self.train = pd.concat([self.train, extra[~extra["text"].isin(set(self.val["text"]))]],
                                   ignore_index=True)
        self.model_source = self._shared_tiny() or resolve_model(self.ctx, self.fixed.model,
                                                                 self.train["text"].tolist())
        if self.fixed.model == "tiny":
            self.model_source = str(Path(self.model_source).resolve())
            if self.study.user_attrs.get(TINY_ATTR) != self.model_source:
                self.study.set_user_attr(TINY_ATTR, self.model_source)
        split_file = self.ctx.output_dir / "val_split.txt"
        split_file.write_text(split.fingerprint + "\n")
        self.ctx.add_artifact("val_split", split_file)

    def _shared_tiny(self) -> str | None:
        """The "tiny" preset the study's first job built, when it is on this host. Building one
        trains a tokenizer, which is not bit-for-bit repeatable: the k jobs of a group share one so
        that their trials compare like for like."""
        path = self.study.user_attrs.get(TINY_ATTR) if self.fixed.model == "tiny" else None
        return path if path and Path(path, "model.safetensors").exists() else None

    def set_deadline(self) -> None:
        until = parse_until(self.params.until)
        first = self.study.user_attrs.get(FIRST_START_ATTR)
        if first is None:
            first = time.time()
            self.study.set_user_attr(FIRST_START_ATTR, first)
        if until is not None:
            kind, value = until
            self.deadline = value if kind == "at" else float(first) + value

    def recover_own_trials(self) -> None:
        """Trials this job left RUNNING can only be from an attempt that died (the queue runs one
        attempt of a job at a time): fail and re-queue them now rather than after the heartbeat's
        grace period."""
        import optuna
        from optuna.trial import TrialState

        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial.user_attrs.get(JOB_ATTR) != self.ctx.name:
                continue
            try:
                changed = self.storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
            if changed:
                print(f"trial {trial.number} was left running by an earlier attempt of this job: "
                      "failed, queued again", flush=True)
                self.retry(self.study, self.storage.get_trial(trial._trial_id))

    def fail_stale_trials(self) -> None:
        import warnings

        import optuna

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(self.study)

    # ---- budget

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for trial in self.study.get_trials(deepcopy=False):
            out[trial.state.name] = out.get(trial.state.name, 0) + 1
        return out

    def budget_reached(self, before: int | None = None) -> bool:
        """Finished trials plus the ones running elsewhere cover n_trials.

        `before`: count only running trials numbered below it. Trial numbers come from the storage in
        order, so when two workers ask at the same moment exactly one of them sees room.
        """
        from optuna.trial import TrialState

        if self.params.n_trials is None:
            return False
        used = 0
        for trial in self.study.get_trials(deepcopy=False):
            if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
                used += 1
            elif trial.state == TrialState.RUNNING and (before is None or trial.number < before):
                used += 1
        return used >= self.params.n_trials

    def stop_reason(self) -> str | None:
        if self.ctx.should_stop():
            return "stop requested"
        if self.deadline is not None and time.time() >= self.deadline:
            return f"deadline {datetime.fromtimestamp(self.deadline).isoformat(timespec='seconds')} reached"
        if self.budget_reached():
            return f"n_trials ({self.params.n_trials}) reached"
        return None

    # ---- one trial

    def trial_dir(self, trial) -> Path:
        """A re-run trial continues in its original folder when that is this job's (its checkpoints
        are there); anything else trains in a fresh `trial-<number>`."""
        previous = trial.user_attrs.get(DIR_ATTR)
        if previous and Path(previous).is_dir() and Path(previous).resolve().parent == self.ctx.output_dir.resolve():
            return Path(previous)  # the fine-tune drops a checkpoint a kill cut short, then resumes
        return self.ctx.output_dir / f"trial-{trial.number}"

    def objective(self, trial) -> float:
        from pipeline.hooks import Hooks, StopRequested
        from pipeline.training import finetune
        from pipeline.tuning import EpochReporter, suggest

        from .common import training_config

        if self.budget_reached(before=trial.number):
            trial.set_user_attr(SURPLUS_ATTR, True)
            self.study.stop()
            raise _Surplus(f"trial {trial.number} not run: the budget of {self.params.n_trials} is taken")
        self.current_id = trial._trial_id
        folder = self.trial_dir(trial)
        trial.set_user_attr(JOB_ATTR, self.ctx.name)
        trial.set_user_attr(DIR_ATTR, str(folder.resolve()))
        values = suggest(trial, self.space)
        cfg = training_config(self.fixed.model_copy(update=values), FinetuneConfig, FinetuneParams.config_names,
                              model=self.model_source)
        counts = self.counts()
        done = counts.get("COMPLETE", 0) + counts.get("PRUNED", 0)

        def on_progress(step: int, total: int, _message: str) -> None:
            self.ctx.progress(done + step / max(total, 1), self.params.n_trials,
                              f"trial {trial.number}: step {step}/{total}")

        reporter = EpochReporter(trial, self.params.metric, cfg.epochs,
                                 base=Hooks(on_progress=on_progress, should_stop=self.ctx.should_stop))
        print(f"trial {trial.number} starts in {folder.name}: {values}", flush=True)
        try:
            result = finetune(cfg, self.train, self.val, None, output_dir=str(folder), hooks=reporter.hooks())
        except StopRequested as stop:
            trial.set_user_attr(STOPPED_ATTR, "preempted")
            raise _Stopped(str(stop)) from None
        trial.set_user_attr("epochs_trained", result.epochs_run)
        value = getattr(result, self.params.metric)
        if value is None:
            raise RuntimeError(f"the fine-tune reported no {self.params.metric}")
        return float(value)

    # ---- after each trial

    def after_trial(self, study, trial) -> None:
        self.report(trial)
        self.clean_up()
        self.publish()
        reason = self.stop_reason()
        if reason:
            print(f"stopping the search: {reason}", flush=True)
            study.stop()

    def report(self, trial) -> None:
        from optuna.trial import TrialState

        if trial.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            return
        if trial.state == TrialState.COMPLETE:
            self.ctx.log_metric("trial_value", trial.value, step=trial.number)
            print(f"trial {trial.number} complete: {self.params.metric}={trial.value:.4f} {trial.params}", flush=True)
        else:
            epochs = max(trial.intermediate_values, default=0)
            self.ctx.log_metric("trial_pruned_epoch", epochs, step=trial.number)
            print(f"trial {trial.number} pruned after epoch {epochs}: {trial.params}", flush=True)
        for name, value in trial.params.items():
            if isinstance(value, (int, float)):  # bools too; strings only show in trials.csv
                self.ctx.log_metric(f"param_{name}", float(value), step=trial.number)

    def best_trial(self):
        try:
            return self.study.best_trial
        except ValueError:  # no complete trial yet
            return None

    def clean_up(self) -> None:
        """Finished trials keep result files only; the best keeps its model too (disk)."""
        from optuna.trial import TrialState

        best = self.best_trial()
        root = self.ctx.output_dir.resolve()
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            folder = trial.user_attrs.get(DIR_ATTR)
            # Only this job's folders: another job's best may be an artifact it already published.
            if not folder or Path(folder).parent != root or not Path(folder).is_dir():
                continue
            shutil.rmtree(Path(folder) / "checkpoints", ignore_errors=True)
            if best is None or trial.number != best.number:
                shutil.rmtree(Path(folder) / "model", ignore_errors=True)

    def publish(self, final: bool = False) -> None:
        """trials.csv, best_params and best metrics, as they stand now."""
        out = self.ctx.output_dir
        frame = self.study.trials_dataframe()
        frame.to_csv(out / "trials.csv", index=False)
        self.ctx.add_artifact("trials.csv", out / "trials.csv")
        best = self.best_trial()
        if best is not None:
            _write_json(out / "best_params.json", best.params)
            self.ctx.add_artifact("best_params", out / "best_params.json")
            model = Path(best.user_attrs.get(DIR_ATTR, "")) / "model"
            if best.user_attrs.get(DIR_ATTR) and model.is_dir():
                self.ctx.add_artifact("best_model", model)
            if self.logged_best != best.value or final:
                self.logged_best = best.value
                self.ctx.log_metric("best_value", best.value, step=best.number)
                self.ctx.log_metric("best_trial", best.number)
        if final:
            counts = self.counts()
            for state in ("COMPLETE", "PRUNED", "FAIL"):
                key = {"COMPLETE": "n_complete", "PRUNED": "n_pruned", "FAIL": "n_failed"}[state]
                self.ctx.log_metric(key, counts.get(state, 0))
            shown = ", ".join(f"{k.lower()} {v}" for k, v in sorted(counts.items()))
            print(f"study '{self.study_name}': {shown}; best "
                  + (f"trial {best.number} {self.params.metric}={best.value:.4f} {best.params}" if best else "none"),
                  flush=True)

    # ---- the search

    def run(self) -> None:
        self.load_data()
        self.set_deadline()
        self.recover_own_trials()
        self.fail_stale_trials()
        reason = self.stop_reason()
        try:
            if reason is None:
                self.study.optimize(self.objective, callbacks=[self.after_trial], catch=(_Surplus,),
                                    gc_after_trial=True)
        except _Stopped as stop:
            trial = self.storage.get_trial(self.current_id) if self.current_id is not None else None
            if trial is not None:
                self.retry(self.study, trial, preempted=True)
            self.clean_up()
            self.publish()
            raise Preempted(f"stopped inside trial {trial.number if trial else '?'} ({stop}); it continues "
                            "from its checkpoint when the job runs again") from None
        except BaseException:
            self._safe_publish()
            raise
        self.clean_up()
        if self.ctx.should_stop() and not self._finished():
            self.publish()
            raise Preempted("stopped between trials; the study continues when the job runs again")
        self.publish(final=True)

    def _finished(self) -> bool:
        past_deadline = self.deadline is not None and time.time() >= self.deadline
        return past_deadline or self.budget_reached()

    def _safe_publish(self) -> None:
        try:
            self.publish()
        except Exception as exc:  # noqa: BLE001 - the original error matters more
            print(f"could not write the study's results: {exc}", flush=True)


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    tmp.replace(path)


def run(params: Params, ctx: JobContext) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own lines say what happened per trial
    _Tuner(params, ctx).run()

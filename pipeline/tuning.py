"""Hyperparameter search helpers around Optuna: search spaces, seeded samplers, pruners, and the
training hooks that report each epoch's validation metric to a trial (and stop a pruned one).

Nothing here knows of queues or databases, and nothing imports torch: the queue's `tune` job
(jobs/tune.py) wires these to a study in the queue's database.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna
from optuna.samplers import BaseSampler, RandomSampler, TPESampler

from pipeline.hooks import Hooks

SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "hyperband", "none")
# Per-epoch keys that `pipeline.training.finetune` logs (split "val") for each tuning metric.
EPOCH_KEYS = {"val_accuracy": "accuracy", "val_f1": "f1"}


def suggest(trial: optuna.Trial, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Sample one value per entry of a search space.

    ``space`` maps a setting to ``{type: float|int, low, high, log?, step?}`` or
    ``{type: categorical, choices: [...]}`` (already validated).
    """
    values = {}
    for name, spec in space.items():
        kind = spec["type"]
        if kind == "float":
            values[name] = trial.suggest_float(name, spec["low"], spec["high"], log=spec.get("log", False),
                                               step=spec.get("step"))
        elif kind == "int":
            values[name] = trial.suggest_int(name, int(spec["low"]), int(spec["high"]), log=spec.get("log", False),
                                             step=int(spec.get("step") or 1))
        elif kind == "categorical":
            values[name] = trial.suggest_categorical(name, list(spec["choices"]))
        else:  # the params model only lets the three kinds through
            raise ValueError(f"space.{name}: unknown type {kind!r}")
    return values


class PerTrialSeedSampler(BaseSampler):
    """A sampler whose randomness is a function of (seed, trial number) alone.

    A plain seeded sampler replays the same random draws every time a process starts: a tune job
    that resumes would propose its first run's params again, and the k jobs of a shared study would
    all propose the same ones. Seeding each trial from its number (unique in the study) keeps a
    fresh single-worker study reproducible while resumed and parallel workers draw distinct values.
    TPE keeps no state between trials besides its random generator (it reads history from the
    study), so a fresh inner sampler per trial changes nothing else.
    """

    def __init__(self, factory: Callable[[int | None], BaseSampler], seed: int | None):
        self._factory = factory
        self._seed = seed
        self._inner = factory(seed)

    def before_trial(self, study, trial):
        seed = None if self._seed is None else (self._seed * 1_000_003 + trial.number) % (2**32)
        self._inner = self._factory(seed)
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values):
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._inner.reseed_rng()


def make_sampler(name: str, seed: int | None, startup_trials: int = 10) -> BaseSampler:
    """"tpe" (random for the first ``startup_trials`` trials, then TPE) or "random"; per-trial seeded."""
    if name == "tpe":
        # constant_liar: trials still running count as (pessimistic) results, so parallel workers
        # do not all sample next to the same promising point.
        factory = lambda s: TPESampler(seed=s, n_startup_trials=startup_trials, constant_liar=True)  # noqa: E731
    elif name == "random":
        factory = lambda s: RandomSampler(seed=s)  # noqa: E731
    else:
        raise ValueError(f"unknown sampler {name!r}; use one of {SAMPLERS}")
    return PerTrialSeedSampler(factory, seed)


def make_pruner(name: str, *, startup_trials: int = 3, warmup_epochs: int = 0,
                max_epochs: int = 3) -> optuna.pruners.BasePruner:
    """Pruners over per-epoch reports (step = 1-based epoch).

    median: stop a trial whose best value so far is worse than the median of earlier trials at the
    same epoch, once ``startup_trials`` trials finished and after ``warmup_epochs`` epochs.
    hyperband: successive halving brackets over 1..max_epochs epochs. none: never prune.
    """
    if name == "median":
        # Steps are epochs 1..E; Optuna prunes from step n_warmup_steps on.
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=warmup_epochs + 1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, max_epochs), reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {name!r}; use one of {PRUNERS}")


class EpochReporter:
    """Hooks for ``pipeline.training.finetune`` that report each epoch's validation metric to a trial.

    The epoch is derived from the step (``step * epochs / max_steps``), so it stays right when a
    run resumes from a checkpoint or halves its batch after an OOM. When the trial should be pruned
    (never after its last epoch: that value is the result anyway) ``optuna.TrialPruned`` is raised
    from inside the Trainer's evaluation; it propagates out of ``finetune`` (nothing there catches it),
    before that epoch's checkpoint is written.
    """

    def __init__(self, trial: optuna.Trial, metric: str, epochs: int, base: Hooks | None = None):
        if metric not in EPOCH_KEYS:
            raise ValueError(f"metric must be one of {sorted(EPOCH_KEYS)}, got {metric!r}")
        self.trial = trial
        self.key = EPOCH_KEYS[metric]
        self.epochs = epochs
        self.base = base or Hooks()
        self.max_steps: int | None = None
        self.last_epoch = 0
        self.values: dict[int, float] = {}

    def hooks(self) -> Hooks:
        return Hooks(on_log=self.on_log, on_progress=self.on_progress, should_stop=self.base.should_stop,
                     fault=self.base.fault)

    def on_progress(self, done: int, total: int, message: str) -> None:
        self.max_steps = total or self.max_steps
        self.base.on_progress(done, total, message)

    def _epoch(self, step: int | None) -> int:
        if self.max_steps and step is not None:
            return max(1, min(self.epochs, round(step * self.epochs / self.max_steps)))
        return self.last_epoch + 1

    def on_log(self, key: str, value: float, step: int | None, split: str | None) -> None:
        self.base.on_log(key, value, step, split)
        if split != "val" or key != self.key:
            return
        epoch = self._epoch(step)
        self.last_epoch = epoch
        self.values[epoch] = value
        self.trial.report(value, epoch)
        self.trial.set_user_attr("epochs_trained", epoch)
        if epoch < self.epochs and self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch} of {self.epochs} ({self.key}={value:.4f})")

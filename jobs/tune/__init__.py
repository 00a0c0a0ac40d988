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

A trial whose fine-tune diverged or is not learning (`pipeline.health`) is pruned with the reason.

Logs `trial_value` (step = trial number), `param_<name>` per trial, `trial_pruned_epoch`, `best_value`,
`best_trial`, the best trial's `val_accuracy`, `val_f1`, `epochs_run` and numeric params as
`best_<name>` (the tune's leaderboard row is its best trial), and at the end
`n_complete`/`n_pruned`/`n_failed`; artifacts `trials.csv`,
`best_params` (JSON: the best trial's params; see `params_from` of finetune), `best_model`, `val_split`.
"""

from ..common import MEMORY_PARAMS, TRAINING_MODULES
from ..registry import Column, Display, Kind
from ..work import tune_work
from .params import Params, SpaceParam, parse_until, study_name
from .tuner import FIRST_START_ATTR, JOB_ATTR, SURPLUS_ATTR, TINY_ATTR, RetryTrial, run

# Fixed settings a tune refuses (its trials need validation rows and their own settings).
_NOT_FROM_DEFAULTS = ("full_data", "epochs_from", "params_from")


def with_defaults(params: dict, defaults: dict[str, dict]) -> dict:
    """queue.yaml's `defaults.params.tune` under the job's params, and `defaults.params.finetune`
    under its `finetune:` (the trials are fine-tunes), except what the search space covers."""
    merged = {**defaults.get("tune", {}), **params}
    space = merged.get("space") if isinstance(merged.get("space"), dict) else {}
    inner = merged.get("finetune") if isinstance(merged.get("finetune"), dict) else {}
    base = {k: v for k, v in defaults.get("finetune", {}).items() if k not in space and k not in _NOT_FROM_DEFAULTS}
    if base:
        merged["finetune"] = {**base, **inner}
    return merged


def _until(params: dict) -> tuple[str, float] | None:
    """Its `until:` as the deadline forecast caps it (a bad value: no cap; submit refuses it)."""
    try:
        return parse_until(params.get("until"))
    except ValueError:
        return None


def preflight(params: Params, pre) -> None:
    """Every trial trains the fixed fine-tune settings: the same checks as a fine-tune's."""
    from ..finetune import preflight as finetune_preflight

    finetune_preflight(params.finetune, pre)


# On the leaderboard a tune is its best trial: that trial's scores and epochs, the fixed fine-tune
# settings with the best trial's params over them.
KIND = Kind("tune", Params, run, summary="an Optuna search over fine-tune settings, resumable, shared by k jobs",
            display=Display(model=True, scores={"val_accuracy": "val_accuracy", "val_f1": "val_f1"},
                            details={"epochs": Column("epochs_run", param="epochs")}, study=study_name,
                            params_of="finetune", param_metrics="best_", colour="#8c5fb0"),
            preflight=preflight, with_defaults=with_defaults, gpus=1, memory_params=MEMORY_PARAMS, preload=("optuna", *TRAINING_MODULES, "pipeline.tuning"),
            outputs=("best_params", "best_model", "trials.csv", "val_split", "best_value", "best_trial",
                     "val_accuracy", "val_f1", "epochs_run"),
            models={"best_model": "hf"}, work=tune_work, ends_early=True, time_limit=_until)

__all__ = ["KIND", "Params", "SpaceParam", "RetryTrial", "parse_until", "study_name", "run",
           "FIRST_START_ATTR", "JOB_ATTR", "SURPLUS_ATTR", "TINY_ATTR"]

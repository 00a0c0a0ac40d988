"""The search itself: Optuna's study on the queue's database, one fine-tune per trial.

See `jobs.tune` for what the job does; this module is the how (trials, retries, stops, clean-up).
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from datetime import datetime
from pathlib import Path

from pipeline.config import FinetuneConfig
from pipeline.util import atomic_write

from ..context import JobContext, Preempted
from ..finetune import Params as FinetuneParams
from .params import Params, parse_until, study_name


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
        self.study_name = study_name({"study": params.study}, ctx.name, ctx.group)
        self.retry = RetryTrial(params.max_retry)
        if ctx.studies is None:
            raise RuntimeError("a tune job needs a study storage: run it through the queue (its context "
                               "opens Optuna's storage on the queue's database)")
        self.storage = ctx.studies(heartbeat_s=params.heartbeat_s, grace_s=params.grace_s,
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
        self.current_number: int | None = None  # the trial in flight (or last run)
        self.trial_seconds: list[float] = []  # this job's trials so far: what the next one may take
        self.trial_started: float | None = None

    # ---- set-up

    def load_data(self) -> None:
        import pandas as pd

        from ..common import resolve_model
        from ..finetune import extra_rows, load_data

        split, _ = load_data(self.fixed)
        self.train, self.val = split.train, split.val
        extra = extra_rows(self.fixed, self.ctx)
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
        from optuna.trial import TrialState

        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial.user_attrs.get(JOB_ATTR) != self.ctx.name:
                continue
            try:
                failed = self.study.tell(trial.number, state=TrialState.FAIL)
            except RuntimeError:  # finished meanwhile (e.g. Optuna's heartbeat failed it first)
                continue
            print(f"trial {trial.number} was left running by an earlier attempt of this job: "
                  "failed, queued again", flush=True)
            self.retry(self.study, failed)

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
        return self.cut_short()

    def typical_trial_s(self) -> float:
        """What the next trial may take: the median of this job's trials, else of the study's
        finished ones (another job's, an earlier attempt's), else the scheduler's estimate of the
        job shared over its trials, else 0."""
        if self.trial_seconds:
            return statistics.median(self.trial_seconds)
        from optuna.trial import TrialState

        spans = [(t.datetime_complete - t.datetime_start).total_seconds()
                 for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
                 if t.datetime_start and t.datetime_complete]
        if spans:
            return statistics.median(spans)
        expected = self.ctx.expected_seconds()
        return expected / self.params.n_trials if expected and self.params.n_trials else 0.0

    def cut_short(self) -> str | None:
        """The deadline policy's `finish_by`: no trial that would end after it starts."""
        end_by = self.ctx.finish_by()
        if end_by is None:
            return None
        typical = self.typical_trial_s()
        if time.time() + typical <= end_by:
            return None
        return (f"the deadline policy asks it to end by {datetime.fromtimestamp(end_by).isoformat(timespec='seconds')}"
                f" and a trial takes about {typical:.0f} s (its campaign's deliverables come first)")

    # ---- one trial

    def trial_dir(self, trial) -> Path:
        """A re-run trial continues in its original folder when that is this job's (its checkpoints
        are there); anything else trains in a fresh `trial-<number>`."""
        previous = trial.user_attrs.get(DIR_ATTR)
        if previous and Path(previous).is_dir() and Path(previous).resolve().parent == self.ctx.output_dir.resolve():
            return Path(previous)  # the fine-tune drops a checkpoint a kill cut short, then resumes
        return self.ctx.output_dir / f"trial-{trial.number}"

    def objective(self, trial) -> float:
        import optuna

        from pipeline.health import TrainingStalled
        from pipeline.hooks import Hooks, StopRequested
        from pipeline.training import finetune
        from pipeline.tuning import EpochReporter, suggest

        from ..common import tracking_run, training_config

        if self.budget_reached(before=trial.number):
            trial.set_user_attr(SURPLUS_ATTR, True)
            self.study.stop()
            raise _Surplus(f"trial {trial.number} not run: the budget of {self.params.n_trials} is taken")
        self.current_number = trial.number
        self.trial_started = time.time()
        folder = self.trial_dir(trial)
        trial.set_user_attr(JOB_ATTR, self.ctx.name)
        trial.set_user_attr(DIR_ATTR, str(folder.resolve()))
        values = suggest(trial, self.space)
        trial_params = self.fixed.model_copy(update=values)
        cfg = training_config(trial_params, FinetuneConfig, FinetuneParams.config_names, model=self.model_source)
        counts = self.counts()
        done = counts.get("COMPLETE", 0) + counts.get("PRUNED", 0)

        def on_progress(step: int, total: int, _message: str) -> None:
            self.ctx.progress(done + step / max(total, 1), self.params.n_trials,
                              f"trials · trial {trial.number}: step {step}/{total}")

        reporter = EpochReporter(trial, self.params.metric, cfg.epochs,
                                 base=Hooks(on_progress=on_progress, should_stop=self.ctx.should_stop))
        print(f"trial {trial.number} starts in {folder.name}: {values}", flush=True)
        try:
            result = finetune(cfg, self.train, self.val, None, output_dir=str(folder), hooks=reporter.hooks(),
                              tracking=tracking_run(self.ctx, "tune", trial_params, trial=trial.number,
                                                    folder=folder.name))
        except StopRequested as stop:
            trial.set_user_attr(STOPPED_ATTR, "preempted")
            raise _Stopped(str(stop)) from None
        except TrainingStalled as stalled:
            # These settings diverged or learned nothing: a poor trial the sampler should learn from
            # (pruned), not a crash that ends the search or a failure worth retrying.
            trial.set_user_attr(STOPPED_ATTR, f"{type(stalled).__name__}: {stalled}")
            print(f"trial {trial.number} stopped: {type(stalled).__name__}: {stalled}", flush=True)
            raise optuna.TrialPruned(str(stalled)) from None
        trial.set_user_attr("epochs_trained", result.epochs_run)
        for key in ("val_accuracy", "val_f1"):  # the leaderboard shows the best trial's scores
            trial.set_user_attr(key, getattr(result, key))
        value = getattr(result, self.params.metric)
        if value is None:
            raise RuntimeError(f"the fine-tune reported no {self.params.metric}")
        return float(value)

    # ---- after each trial

    def after_trial(self, study, trial) -> None:
        if self.trial_started is not None:
            self.trial_seconds.append(time.time() - self.trial_started)
            self.trial_started = None
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

    def trial_numbered(self, number: int | None):
        if number is None:
            return None
        return next((t for t in self.study.get_trials(deepcopy=False) if t.number == number), None)

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
            atomic_write(out / "best_params.json", json.dumps(best.params, indent=2, sort_keys=True))
            self.ctx.add_artifact("best_params", out / "best_params.json")
            model = Path(best.user_attrs.get(DIR_ATTR, "")) / "model"
            if best.user_attrs.get(DIR_ATTR) and model.is_dir():
                self.ctx.add_artifact("best_model", model)
            if self.logged_best != best.value or final:
                self.logged_best = best.value
                self.ctx.log_metric("best_value", best.value, step=best.number)
                self.ctx.log_metric("best_trial", best.number)
                self.log_best_row(best)
        if final:
            counts = self.counts()
            for state in ("COMPLETE", "PRUNED", "FAIL"):
                key = {"COMPLETE": "n_complete", "PRUNED": "n_pruned", "FAIL": "n_failed"}[state]
                self.ctx.log_metric(key, counts.get(state, 0))
            shown = ", ".join(f"{k.lower()} {v}" for k, v in sorted(counts.items()))
            print(f"study '{self.study_name}': {shown}; best "
                  + (f"trial {best.number} {self.params.metric}={best.value:.4f} {best.params}" if best else "none"),
                  flush=True)

    def log_best_row(self, best) -> None:
        """The best trial as the job's own result (its leaderboard row): its scores, epochs and, as
        `best_<name>`, its numeric params."""
        for key in ("val_accuracy", "val_f1"):
            if best.user_attrs.get(key) is not None:
                self.ctx.log_metric(key, best.user_attrs[key], step=best.number)
        if best.user_attrs.get("epochs_trained") is not None:
            self.ctx.log_metric("epochs_run", best.user_attrs["epochs_trained"], step=best.number)
        for name, value in best.params.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.ctx.log_metric(f"best_{name}", float(value), step=best.number)

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
            trial = self.trial_numbered(self.current_number)
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


def run(params: Params, ctx: JobContext) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own lines say what happened per trial
    _Tuner(params, ctx).run()

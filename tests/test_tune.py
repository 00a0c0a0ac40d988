"""The `tune` job: Optuna studies in the queue's database, through real workers where it matters.

Tiny models on a few hundred real reviews of the shipped sample. The queue-level tests run each
job in its own child process (as on a GPU host) and run on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from scheduler.errors import PlanError
from scheduler.jobqueue import JobQueue, JobSpec
from scheduler.plan import build_plan
from scheduler.execute.slots import Slot
from scheduler.execute.worker import WorkerLoop, WorkerOptions
from tests.helpers import keyed_review_sample, review_sample, step_until, submit

DATA = Path(__file__).resolve().parents[1] / "data"
TRAINING = {"epochs": 3, "batch_size": 32, "max_length": 32, "precision": "fp32", "val_fraction": 0.2}


@pytest.fixture(autouse=True)
def _token_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCHED_CACHE_DIR", str(tmp_path / "token-cache"))  # children inherit it


def reviews(tmp_path, per_label: int, name: str = "train.csv") -> Path:
    return review_sample(tmp_path, per_label, name)


def tune_params(train: Path, **overrides) -> dict:
    params = {"n_trials": 3, "sampler": "random", "pruner": "none", "heartbeat_s": 1,
              "space": {"lr": {"type": "float", "low": 1e-3, "high": 4e-3, "log": True}},
              "finetune": {"train": str(train), **TRAINING}}
    params.update(overrides)
    return params


def load_study(url: str, name: str):
    import optuna

    from scheduler.store.studies import open_storage

    storage = open_storage(url)
    return optuna.load_study(study_name=name, storage=storage), storage


def states(study) -> dict[str, int]:
    out: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        out[trial.state.name] = out.get(trial.state.name, 0) + 1
    return out


def make_loop(queue, tmp_path, slots=None):
    # A generous stop grace: a stopped tune saves a checkpoint and its results before it exits.
    opts = WorkerOptions(runs_root=tmp_path / "runs", heartbeat_s=0.2, lease_s=60, stop_grace_s=60, poll_s=0.05)
    return WorkerLoop(queue, slots or [Slot("cpu0", None)], opts)


def in_flight_trial(out: Path, after: int = -1) -> Path | None:
    """A trial folder numbered above `after` that has an epoch checkpoint and no result yet."""
    for folder in sorted(out.glob("trial-*")):
        if int(folder.name.split("-")[1]) > after and not (folder / "result.json").exists() \
                and any((folder / "checkpoints").glob("checkpoint-*/trainer_state.json")):
            return folder
    return None


# ---------------------------------------------------------------- submit-time validation

@pytest.mark.parametrize("space, finetune, expected", [
    ({"lrr": {"type": "float", "low": 1e-5, "high": 1e-3}}, {}, "params.space.lrr: 'lrr' is not a tunable"),
    ({"lr": {"type": "float", "low": 1e-3, "high": 1e-5}}, {}, "params.space.lr: low (0.001) must be <= high"),
    ({"lr": {"type": "float", "low": 0, "high": 1e-3, "log": True}}, {}, "params.space.lr: log: true needs low > 0"),
    ({"batch_size": {"type": "categorical"}}, {}, "params.space.batch_size: categorical needs a non-empty 'choices'"),
    ({"lr": {"type": "gaussian", "low": 0, "high": 1}}, {}, "params.space.lr.type: Input should be 'float', 'int'"),
    ({"epochs": {"type": "int", "low": 0, "high": 3}}, {}, "params.space.epochs: epochs=0 is not a valid fine-tune"),
    ({"batch_size": {"type": "float", "low": 8, "high": 32}}, {},
     "params.space.batch_size: batch_size is a whole number"),
    ({"lr": {"type": "float", "low": 1e-5, "high": 1e-3}}, {"lr": 1e-4}, "params.space.lr: 'lr' is also fixed"),
    ({"lr": {"type": "float", "low": 1e-5, "high": 1e-3}}, {"epoch": 2}, "params.finetune.epoch: unknown key"),
])
def test_a_bad_search_space_is_refused_at_submit_naming_the_field(space, finetune, expected):
    raw = {"jobs": [{"name": "tune-bad", "kind": "tune", "params": {"space": space, "finetune": finetune}},
                    {"name": "after-it", "kind": "echo", "after": ["tune-bad"]}]}
    with pytest.raises(PlanError) as err:
        build_plan(raw, where="queue.yaml")
    assert str(err.value).startswith("queue.yaml: job 'tune-bad' (jobs[0]): ")
    assert expected in str(err.value)


def test_a_good_space_is_accepted_and_normalised():
    raw = {"jobs": [{"name": "tune", "kind": "tune", "workers": 2, "params": {
        "until": "8h", "metric": "val_accuracy",
        "space": {"lr": {"type": "float", "low": "1e-5", "high": 1e-3, "log": True},  # YAML reads 1e-5 as text
                  "batch_size": {"type": "categorical", "choices": [16, 32]},
                  "epochs": {"type": "int", "low": 1, "high": 3}},
        "finetune": {"model": "tiny", "max_length": 64}}}]}
    specs = build_plan(raw)
    assert [(s.name, s.group_name) for s in specs] == [("tune#1", "tune"), ("tune#2", "tune")]
    from jobs import get_kind

    params = get_kind("tune").parse(specs[0].params)
    assert params.space["lr"].low == 1e-5 and params.max_epochs() == 3


# ---------------------------------------------------------------- in-process: pruning, params_from, heartbeat

def _context(tmp_path, name, reporter, url, group=None):
    from functools import partial

    from jobs.context import JobContext
    from scheduler.store.studies import open_storage

    return JobContext(job_id=1, name=name, output_dir=tmp_path / "runs" / name, device="cpu", reporter=reporter,
                      db_url=url, group=group, studies=partial(open_storage, url))


@pytest.mark.slow
def test_pruning_stops_a_bad_trial_and_params_from_feeds_the_best_params_downstream(tmp_path, sqlite_url):
    import optuna

    from jobs import get_kind
    from jobs.context import MemoryReporter
    from scheduler.store.studies import open_storage

    train = keyed_review_sample(tmp_path, 300)  # a good lr learns these by epoch 2 from any start
    name = "tune-p#1"  # one job of a `workers: k` group: params_from names the group
    # Enqueue a sensible lr, then an absurd one: the median pruner (1 startup trial, 1 warm-up
    # epoch) must stop the second after epoch 2 of 3.
    storage = open_storage(sqlite_url)
    study = optuna.create_study(storage=storage, study_name="tune-p", direction="maximize")
    study.enqueue_trial({"lr": 2e-3})
    study.enqueue_trial({"lr": 1e-6})
    storage.engine.dispose()
    kind = get_kind("tune")
    params = kind.parse(tune_params(train, n_trials=2, pruner="median", pruner_startup_trials=1,
                                    pruner_warmup_epochs=1, metric="val_accuracy",
                                    space={"lr": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True}}))
    tune_reporter = MemoryReporter()
    kind.run(params, _context(tmp_path, name, tune_reporter, sqlite_url, group="tune-p"))

    study, storage = load_study(sqlite_url, "tune-p")
    good, bad = study.trials
    assert good.state.name == "COMPLETE" and good.params == {"lr": 2e-3}
    assert bad.state.name == "PRUNED" and sorted(bad.intermediate_values) == [1, 2]  # 2 of 3 epochs
    assert bad.intermediate_values[2] < good.intermediate_values[2]
    storage.engine.dispose()
    out = tmp_path / "runs" / name
    assert json.loads((out / "best_params.json").read_text()) == {"lr": 2e-3}
    assert (out / "trial-0" / "model").is_dir() and not (out / "trial-1" / "checkpoints").exists()
    logged = {(m["key"], m["step"]): m["value"] for m in tune_reporter.metrics}
    assert logged[("trial_value", 0)] == pytest.approx(good.value) and logged[("trial_pruned_epoch", 1)] == 2
    assert logged[("param_lr", 1)] == pytest.approx(1e-6) and logged[("n_pruned", None)] == 1
    trials_csv = pd.read_csv(tune_reporter.artifacts["trials.csv"])
    assert list(trials_csv["state"]) == ["COMPLETE", "PRUNED"]

    # Downstream: a finetune with params_from the group name takes the best lr over its own.
    downstream = MemoryReporter()
    downstream.others[name] = SimpleNamespace(name=name, kind="tune", status="succeeded", tags=[],
                                              artifacts=dict(tune_reporter.artifacts), metrics={})
    ft_kind = get_kind("finetune")
    ft_params = ft_kind.parse({"train": str(train), "test": None, "params_from": "tune-p", "lr": 5e-5,
                               **{**TRAINING, "epochs": 1}, "max_train_rows": 200})
    ft_kind.run(ft_params, _context(tmp_path, "final", downstream, sqlite_url))
    run_state = json.loads((tmp_path / "runs" / "final" / "train" / "run_state.json").read_text())
    assert run_state["config"]["lr"] == 2e-3  # the best params win over the job's own lr


def test_params_from_without_a_finished_tune_says_what_is_missing(tmp_path):
    from jobs import get_kind
    from jobs.context import MemoryReporter

    reporter = MemoryReporter()
    reporter.others["tune-x#1"] = SimpleNamespace(name="tune-x#1", kind="tune", status="running", tags=[],
                                                  artifacts={}, metrics={})
    kind = get_kind("finetune")
    with pytest.raises(ValueError, match=r"no succeeded job 'tune-x' .*tune-x#1 \(running\).*after: \[tune-x\]"):
        kind.run(kind.parse({"params_from": "tune-x"}), _context(tmp_path, "ft", reporter, None))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # the dead trial is asked by hand, not in optimize
def test_a_trial_with_a_stale_heartbeat_runs_again_and_a_resumed_job_keeps_its_deadline(tmp_path, sqlite_url):
    import optuna

    from jobs import get_kind
    from jobs.context import MemoryReporter
    from jobs.tune import FIRST_START_ATTR, JOB_ATTR
    from scheduler.store.studies import open_storage

    train = reviews(tmp_path, 60)
    # Another job's worker died in trial 0: RUNNING, last heartbeat long ago.
    storage = open_storage(sqlite_url, heartbeat_s=1, grace_s=1)
    study = optuna.create_study(storage=storage, study_name="tune-h", direction="maximize")
    dead = study.ask()
    dead.suggest_float("lr", 1e-3, 4e-3, log=True)
    dead.set_user_attr(JOB_ATTR, "tune-h#2")
    storage.record_heartbeat(dead._trial_id)
    time.sleep(2.5)
    storage.engine.dispose()

    kind = get_kind("tune")
    params = kind.parse(tune_params(train, n_trials=2, until="1h", grace_s=1, **{"finetune": {
        "train": str(train), **TRAINING, "epochs": 1}}))
    kind.run(params, _context(tmp_path, "tune-h#1", MemoryReporter(), sqlite_url, group="tune-h"))
    study, storage = load_study(sqlite_url, "tune-h")
    trials = study.get_trials(deepcopy=False)
    assert states(study) == {"FAIL": 1, "COMPLETE": 2}
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retried) == 1 and retried[0].state.name == "COMPLETE"
    assert retried[0].params == trials[dead.number].params  # the same params, run again
    first_start = study.user_attrs[FIRST_START_ATTR]
    storage.engine.dispose()

    # Run again with `until: 1s`: measured from the study's first start, long past: no new trial.
    again = kind.parse({**tune_params(train, n_trials=5, until="1s"), "finetune": {"train": str(train), **TRAINING}})
    reporter = MemoryReporter()
    kind.run(again, _context(tmp_path, "tune-h#1", reporter, sqlite_url, group="tune-h"))
    study, storage = load_study(sqlite_url, "tune-h")
    assert states(study) == {"FAIL": 1, "COMPLETE": 2} and study.user_attrs[FIRST_START_ATTR] == first_start
    assert "best_params" in reporter.artifacts
    storage.engine.dispose()


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # trials asked by hand, as three workers would
def test_of_trials_asked_at_once_only_those_within_the_budget_run(tmp_path, sqlite_url):
    from jobs import get_kind
    from jobs.context import MemoryReporter
    from jobs.tune.tuner import SURPLUS_ATTR, _Surplus, _Tuner

    params = get_kind("tune").parse(tune_params(tmp_path / "unused.csv", n_trials=2))
    tuner = _Tuner(params, _context(tmp_path, "tune-r#1", MemoryReporter(), sqlite_url, group="tune-r"))
    tuner.study.ask()  # two other workers took the budget of 2 ...
    second = tuner.study.ask()
    assert not tuner.budget_reached(before=second.number) and tuner.budget_reached(before=second.number + 1)
    tuner.study.optimize(tuner.objective, n_trials=1, catch=(_Surplus,))  # ... a moment before this one asked
    third = tuner.study.trials[-1]
    assert third.state.name == "FAIL" and third.user_attrs[SURPLUS_ATTR] is True and not third.params
    assert states(tuner.study) == {"RUNNING": 2, "FAIL": 1}
    tuner.storage.engine.dispose()


# ---------------------------------------------------------------- through real workers

@pytest.mark.slow
def test_a_tune_killed_mid_trial_runs_again_and_ends_with_exactly_n_trials(queue, db_url, tmp_path):
    train = reviews(tmp_path, 200)  # epochs long enough (~0.3 s) that the kill lands inside the trial
    job = submit(queue, "tune-k", "tune", max_attempts=2, params=tune_params(train, n_trials=3))
    loop = make_loop(queue, tmp_path)
    step_until(loop, lambda: queue.get(job).output_dir is not None)
    out = Path(queue.get(job).output_dir)
    # Trial 0 finished; a later trial has an epoch checkpoint on disk: kill -9 the job's process group.
    step_until(loop, lambda: (out / "trial-0" / "result.json").exists() and in_flight_trial(out, after=0))
    victim = in_flight_trial(out, after=0)
    (child,) = loop.children.values()
    os.killpg(child.proc.pid, signal.SIGKILL)
    step_until(loop, lambda: queue.get(job).status not in ("running", "queued"))
    row = queue.get(job)
    assert row.status == "succeeded" and row.attempts == 2, row.message

    study, storage = load_study(db_url, "tune-k")
    trials = study.get_trials(deepcopy=False)
    assert states(study) == {"COMPLETE": 3, "FAIL": 1}  # exactly n_trials, the killed one failed
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len({t.params["lr"] for t in complete}) == 3  # no trial ran twice
    (killed,) = [t for t in trials if t.state.name == "FAIL"]
    (rerun,) = [t for t in complete if t.system_attrs.get("failed_trial") == killed.number]
    assert rerun.params == killed.params and rerun.user_attrs["sched_trial_dir"] == str(victim.resolve())
    result = json.loads((victim / "result.json").read_text())
    assert result["resumed_from"] and result["start_epoch"] >= 1  # continued from its epoch checkpoint
    storage.engine.dispose()


@pytest.mark.slow
def test_two_workers_share_one_study_and_the_total_budget(queue, db_url, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two jobs on two cores: one thread each, no oversubscription
    train = reviews(tmp_path, 60)
    params = tune_params(train, n_trials=4, finetune={"train": str(train), **TRAINING, "epochs": 1})
    queue.submit([JobSpec(name=f"tune-g#{i}", kind="tune", params=params, group_name="tune-g") for i in (1, 2)])
    loop = make_loop(queue, tmp_path, slots=[Slot("cpu0", None), Slot("cpu1", None)])
    step_until(loop, lambda: all(queue.get(f"tune-g#{i}").status == "succeeded" for i in (1, 2)) and not loop.children)

    study, storage = load_study(db_url, "tune-g")
    counts = states(study)
    assert counts.get("COMPLETE") == 4 and "RUNNING" not in counts and "WAITING" not in counts, counts
    # A FAIL here can only be a trial that lost the race for the last slot of the budget, unrun.
    assert all(t.user_attrs.get("sched_surplus") for t in study.get_trials(deepcopy=False) if t.state.name == "FAIL")
    assert len({t.params["lr"] for t in study.trials if t.state.name == "COMPLETE"}) == 4
    assert {t.user_attrs["sched_job"] for t in study.trials if t.state.name == "COMPLETE"} <= {"tune-g#1", "tune-g#2"}
    storage.engine.dispose()


@pytest.mark.slow
def test_a_backfill_tune_yields_to_a_higher_priority_job_and_resumes_its_trial(db_url, tmp_path):
    queue = JobQueue(db_url)
    train = reviews(tmp_path, 200)  # trials long enough (~1 s) for the stop request to land inside one
    tune = submit(queue, "tune-b", "tune", priority=-10, preemptible=True, params=tune_params(train, n_trials=2))
    loop = make_loop(queue, tmp_path)
    step_until(loop, lambda: queue.get(tune).output_dir is not None)
    out = Path(queue.get(tune).output_dir)
    step_until(loop, lambda: (out / "trial-0").is_dir())  # trial 0 has started
    urgent = submit(queue, "urgent", "echo", priority=5)
    step_until(loop, lambda: queue.get(urgent).status == "succeeded")
    assert queue.get(tune).failure_kind == "preempted"  # it stopped and went back to the queue
    step_until(loop, lambda: queue.get(tune).status == "succeeded")
    assert queue.get(tune).attempts == 1  # the preemption did not spend an attempt

    study, storage = load_study(db_url, "tune-b")
    trials = study.get_trials(deepcopy=False)
    assert states(study) == {"COMPLETE": 2, "FAIL": 1}
    (stopped,) = [t for t in trials if t.state.name == "FAIL"]
    assert stopped.user_attrs["sched_stopped"] == "preempted"
    (resumed,) = [t for t in trials if t.system_attrs.get("failed_trial") == stopped.number]
    assert resumed.state.name == "COMPLETE" and resumed.params == stopped.params
    folder = Path(resumed.user_attrs["sched_trial_dir"])
    assert folder == Path(stopped.user_attrs["sched_trial_dir"])
    assert json.loads((folder / "result.json").read_text())["resumed_from"]  # from the stop's checkpoint
    assert resumed.system_attrs["sched_retries"] == 0  # a stop is not a failure
    storage.engine.dispose()
    queue.dispose()


# ---------------------------------------------------------------- sched study

def test_sched_study_shows_best_trial_counts_and_importances(sqlite_url):
    import optuna
    from click.testing import CliRunner

    from scheduler.cli.study import study as study_command
    from scheduler.store.studies import open_storage

    queue = JobQueue(sqlite_url)
    queue.submit([JobSpec(name=f"tune-s#{i}", kind="tune", group_name="tune-s") for i in (1, 2)])
    queue.dispose()
    storage = open_storage(sqlite_url)
    study = optuna.create_study(storage=storage, study_name="tune-s", direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("lr", 1e-5, 1e-3, log=True) * 1000 + t.suggest_int("epochs", 1, 3) * 0.01,
                   n_trials=12)
    study.enqueue_trial({"lr": 1e-4, "epochs": 2})
    optuna.create_study(storage=storage, study_name="tune-one", direction="maximize").optimize(
        lambda t: t.suggest_float("lr", 0, 1), n_trials=1)
    storage.engine.dispose()
    runner = CliRunner()

    result = runner.invoke(study_command, ["tune-s#2"], obj={"db": sqlite_url})  # a job's name finds its study
    assert result.exit_code == 0, result.output
    assert f"best: trial {study.best_trial.number} value" in result.output
    assert "complete 12, waiting 1" in result.output and "Parameter importances" in result.output
    data = json.loads(runner.invoke(study_command, ["tune-s", "--json", "--top", "3"], obj={"db": sqlite_url}).output)
    assert data["best"]["params"] == study.best_params and len(data["top"]) == 3
    assert set(data["importances"]) == {"lr", "epochs"}
    one = json.loads(runner.invoke(study_command, ["tune-one", "--json"], obj={"db": sqlite_url}).output)
    assert one["importances"] is None and "not available yet" in one["importance_note"]
    missing = runner.invoke(study_command, ["nope"], obj={"db": sqlite_url})
    assert missing.exit_code != 0 and "no study named 'nope'" in str(missing.exception)
    assert "Example:" in study_command.help


def test_sched_study_imports_neither_torch_nor_transformers():
    code = ("import sys; from scheduler.cli.study import study, study_summary; "
            "assert not {'torch', 'transformers'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])

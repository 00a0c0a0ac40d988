"""Experiment tracking (`report_to`): TensorBoard, MLflow and W&B runs of finetune, tapt and tune
trials, named after the job, grouped by its campaign, carrying its tags, id and params.

The training tests run the kinds in-process on a few hundred real reviews with the tiny model and
read back what each tracker wrote: TensorBoard's event files (EventAccumulator), MLflow's local
store (MlflowClient), W&B's offline run file. Nothing reaches the network: W&B runs offline and
telemetry is off. A tracker that is not installed skips its test (the `test` extra installs them).
"""

from __future__ import annotations

import glob
import json
import struct
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.helpers import review_sample

CAMPAIGN = "nsmc-7"
TAGS = [CAMPAIGN, "round2"]
TRAINING = {"epochs": 2, "batch_size": 32, "max_length": 48, "lr": 2e-3, "precision": "fp32",
            "not_learning_epoch": 0, "val_fraction": 0.2}


@pytest.fixture(autouse=True)
def _offline_trackers(tmp_path, monkeypatch):
    """Each test's trackers write under tmp_path only and reach no server."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID", "WANDB_PROJECT",
                 "WANDB_RUN_GROUP", "WANDB_DIR", "TENSORBOARD_LOGGING_DIR", "DISABLE_MLFLOW_INTEGRATION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DO_NOT_TRACK", "true")
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / name.lower()))


def run_job(tmp_path, kind: str, name: str, params: dict, *, job_id: int = 7, tags=TAGS, group=None,
            stop=None):
    """Run one job of `kind` in-process as a worker would: its run folder runs/<id>-<name>, the
    queue's database experiments.db beside runs/. Returns the job's context."""
    from jobs import get_kind
    from jobs.context import JobContext, MemoryReporter

    reporter = MemoryReporter()
    reporter.others[name] = SimpleNamespace(name=name, kind=kind, status="running", tags=list(tags), params=params,
                                            metrics={}, artifacts={}, output_dir=None)
    ctx = JobContext(job_id=job_id, name=name, output_dir=tmp_path / "runs" / f"{job_id:05d}-{name}", device="cpu",
                     reporter=reporter, db_url=f"sqlite:///{tmp_path / 'experiments.db'}", group=group,
                     stop_requested=stop or (lambda: False))
    kind_obj = get_kind(kind)
    kind_obj.run(kind_obj.parse(params), ctx)
    return ctx


def finetune_params(tmp_path, tiny_model, report_to, **extra) -> dict:
    train = review_sample(tmp_path, 60)  # 240 rows: 192 train, 48 validation
    return {"model": tiny_model, "train": str(train), "test": None, "report_to": report_to, **TRAINING, **extra}


# ---------------------------------------------------------------- params and submit-time checks


def test_report_to_accepts_the_trackers_and_refuses_anything_else():
    from jobs import get_kind
    from jobs.registry import ParamsError
    from pipeline.config import FinetuneConfig, TaptConfig

    assert FinetuneConfig().report_to == [] and TaptConfig(report_to=["tensorboard", "mlflow", "wandb"]).report_to
    with pytest.raises(ValueError, match="report_to: 'neptune' is not one of tensorboard, mlflow, wandb"):
        FinetuneConfig(report_to=["neptune"]).validate()
    with pytest.raises(ValueError, match="twice"):
        TaptConfig(report_to=["wandb", "wandb"]).validate()
    for kind in ("finetune", "tapt"):
        with pytest.raises(ParamsError, match="report_to: 'neptune' is not one of"):
            get_kind(kind).parse({"report_to": ["neptune"]})


def test_report_to_flows_from_queue_defaults_to_finetune_tapt_and_tune_trials():
    from jobs import get_kind
    from scheduler.plan import build_plan

    raw = {"defaults": {"params": {"finetune": {"report_to": ["tensorboard", "mlflow"]},
                                   "tapt": {"report_to": ["wandb"]}}},
           "jobs": [{"name": "ft", "kind": "finetune"}, {"name": "tapt", "kind": "tapt"},
                    {"name": "tune", "kind": "tune",
                     "params": {"space": {"lr": {"type": "float", "low": 1e-4, "high": 1e-3}}}}]}
    parsed = {spec.name: get_kind(spec.kind).parse(spec.params) for spec in build_plan(raw)}
    assert parsed["ft"].report_to == ["tensorboard", "mlflow"]
    assert parsed["tapt"].report_to == ["wandb"]
    assert parsed["tune"].finetune.report_to == ["tensorboard", "mlflow"]  # what every trial trains with


@pytest.fixture
def mlflow_missing(monkeypatch):
    """find_spec as if mlflow were missing and the other trackers installed (the check looks them
    up and never imports them)."""
    import importlib.machinery
    import importlib.util

    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        top = name.split(".")[0]
        if top == "mlflow":
            return None
        if top in ("tensorboard", "wandb"):
            return importlib.machinery.ModuleSpec(name, None)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_a_tracker_that_is_not_installed_is_one_line_at_submit_and_nothing_is_submitted(
        mlflow_missing, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from scheduler.cli import cli
    from scheduler.jobqueue import JobQueue

    monkeypatch.chdir(tmp_path)
    queue_file = tmp_path / "queue.yaml"
    queue_file.write_text(textwrap.dedent("""
        defaults: {gpus: 0, params: {finetune: {report_to: [tensorboard, mlflow]}}}
        jobs:
          - {name: ft, kind: finetune}
    """))
    url = f"sqlite:///{tmp_path / 'experiments.db'}"
    for extra in (["--dry-run"], []):
        result = CliRunner().invoke(cli, ["--db", url, "submit", str(queue_file), *extra])
        assert result.exit_code != 0, result.output
        problem = [line for line in result.output.splitlines() if "report_to" in line]
        assert len(problem) == 1, result.output
        assert "params.report_to: mlflow is not installed; pip install 'sched[tracking]'" in problem[0]
        assert "tensorboard" not in problem[0]  # installed: only the missing one is named
    assert JobQueue(url).status_counts() == {}


@pytest.mark.parametrize("kind, params", [
    ("finetune", {"report_to": ["mlflow"]}),
    ("tapt", {"report_to": ["mlflow"]}),
    ("tune", {"space": {"lr": {"type": "float", "low": 1e-4, "high": 1e-3}}, "finetune": {"report_to": ["mlflow"]}}),
])
def test_every_training_kind_checks_its_trackers_in_its_preflight(mlflow_missing, kind, params):
    import importlib.util

    from jobs import get_kind
    from jobs.preflight import Preflight

    pre = Preflight(lookup=lambda name: None)
    kind_obj = get_kind(kind)
    kind_obj.preflight(kind_obj.parse(params), pre)
    assert [p for p in pre.problems if "report_to" in p] == [
        "params.report_to: mlflow is not installed; pip install 'sched[tracking]' (or pip install mlflow)"]
    assert importlib.util.find_spec("mlflow") is None  # the patch held: the check looked it up


def test_a_job_is_named_grouped_and_located_from_its_context(tmp_path, monkeypatch):
    from jobs.common import tracking_run
    from jobs.context import JobContext, MemoryReporter

    reporter = MemoryReporter()
    reporter.others["ft-a"] = SimpleNamespace(tags=TAGS)
    db = tmp_path / "db" / "experiments.db"
    ctx = JobContext(job_id=12, name="ft-a", output_dir=tmp_path / "runs" / "00012-ft-a", device="cpu",
                     reporter=reporter, db_url=f"sqlite:///{db}")
    params = {"report_to": ["mlflow"], "lr": 0.002}
    assert tracking_run(ctx, "finetune", {"report_to": []}) is None
    run = tracking_run(ctx, "finetune", params)
    assert (run.name, run.campaign, run.tags, run.params) == ("ft-a", CAMPAIGN, tuple(TAGS), params)
    assert run.labels == {"sched.job_id": "12", "sched.job": "ft-a", "sched.kind": "finetune"}
    assert run.mlflow_uri == f"sqlite:///{db.parent / 'mlflow.db'}"  # beside the queue's database
    assert run.tensorboard_dir == str(ctx.output_dir / "tensorboard") and run.wandb_dir == str(ctx.output_dir)

    # A trial; no tags: the `workers: k` group is the campaign; no SQLite queue: the runs folder.
    bare = JobContext(job_id=3, name="tune#2", output_dir=tmp_path / "runs" / "00003-tune_2", device="cpu",
                      reporter=MemoryReporter(), db_url="postgresql://u:secret@db/q", group="tune")
    trial = tracking_run(bare, "tune", params, trial=4, folder="trial-4")
    assert (trial.name, trial.campaign, trial.labels["sched.trial"]) == ("tune#2-trial-4", "tune", "4")
    assert trial.tensorboard_dir == str(bare.output_dir / "tensorboard" / "trial-4")
    assert trial.mlflow_uri == f"sqlite:///{(tmp_path / 'runs').resolve() / 'mlflow.db'}"
    assert "secret" not in json.dumps(dataclass_dict(trial))

    # The environment names the servers and containers.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.lab:5000")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "sentiment")
    monkeypatch.setenv("WANDB_PROJECT", "korean-reviews")
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    run = tracking_run(ctx, "finetune", params)
    assert (run.mlflow_uri, run.mlflow_artifacts, run.mlflow_experiment, run.wandb_project) == (
        "http://mlflow.lab:5000", None, "sentiment", "korean-reviews")
    assert run.tensorboard_dir == str(tmp_path / "tb" / "00012-ft-a")


def dataclass_dict(value) -> dict:
    import dataclasses

    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in dataclasses.asdict(value).items()}


# ---------------------------------------------------------------- TensorBoard


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def text(folder: Path, tag: str) -> str:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    events.Reload()
    return b"".join(e.tensor_proto.string_val[0] for e in events.Tensors(f"{tag}/text_summary")).decode()


@pytest.mark.slow
def test_tensorboard_events_of_a_finetune_lie_in_its_run_folder_one_point_per_epoch(tmp_path, tiny_model):
    pytest.importorskip("tensorboard")
    ctx = run_job(tmp_path, "finetune", "ft-tb", finetune_params(tmp_path, tiny_model, ["tensorboard"]))

    folder = tmp_path / "runs" / "00007-ft-tb" / "tensorboard"  # `tensorboard --logdir runs/` finds it
    assert folder == ctx.output_dir / "tensorboard" and glob.glob(str(folder / "events.out.tfevents.*"))
    found = scalars(folder)
    for tag in ("eval/accuracy", "eval/f1", "eval/loss", "train/loss"):
        assert [step for step, _ in found[tag]] == [6, 12], tag  # 192 rows / batch 32: 6 steps an epoch
    job = text(folder, "sched/job")
    assert "ft-tb" in job and f"campaign: {CAMPAIGN}" in job and "round2" in job and "sched.job_id: 7" in job
    assert '"lr": 0.002' in job and '"max_length": 48' in job  # the job's own params
    assert '"learning_rate": 0.002' in text(folder, "args")  # HF's TrainingArguments


@pytest.mark.slow
def test_tensorboard_events_of_a_tapt_run_start_before_training(tmp_path, tiny_model):
    pytest.importorskip("tensorboard")
    texts = review_sample(tmp_path, 40)  # 160 texts: 32 held out, 128 to train on
    run_job(tmp_path, "tapt", "tapt-tb", {"model": tiny_model, "texts": [str(texts)], "eval_fraction": 0.2,
                                          "report_to": ["tensorboard"], **{k: TRAINING[k] for k in (
                                              "epochs", "batch_size", "max_length", "lr", "precision",
                                              "not_learning_epoch")}})
    found = scalars(tmp_path / "runs" / "00007-tapt-tb" / "tensorboard")
    assert [step for step, _ in found["eval/loss"]] == [0, 4, 8]  # before training, then each epoch


@pytest.mark.slow
def test_tune_trials_are_runs_named_after_the_job_and_trial(tmp_path, tiny_model, monkeypatch):
    pytest.importorskip("tensorboard")
    pytest.importorskip("optuna")
    from functools import partial

    from jobs import get_kind
    from jobs.context import JobContext, MemoryReporter
    from scheduler.store.studies import open_storage

    url = f"sqlite:///{tmp_path / 'experiments.db'}"
    train = review_sample(tmp_path, 60)
    kind = get_kind("tune")
    params = kind.parse({"n_trials": 2, "sampler": "random", "pruner": "none",
                         "space": {"lr": {"type": "categorical", "choices": [2e-3]}},
                         "finetune": {"model": tiny_model, "train": str(train), "report_to": ["tensorboard"],
                                      **{k: v for k, v in TRAINING.items() if k != "lr"}, "epochs": 1}})
    reporter = MemoryReporter()
    reporter.others["tune-tb#1"] = SimpleNamespace(tags=[])
    ctx = JobContext(job_id=9, name="tune-tb#1", output_dir=tmp_path / "runs" / "00009-tune-tb_1", device="cpu",
                     reporter=reporter, db_url=url, group="tune-tb", studies=partial(open_storage, url))
    kind.run(params, ctx)

    root = ctx.output_dir / "tensorboard"
    assert sorted(p.name for p in root.iterdir()) == ["trial-0", "trial-1"]
    for number in (0, 1):
        assert [step for step, _ in scalars(root / f"trial-{number}")["eval/accuracy"]] == [6]
        job = text(root / f"trial-{number}", "sched/job")
        assert f"**tune-tb#1-trial-{number}**" in job and "campaign: tune-tb" in job
        assert f"sched.trial: {number}" in job and '"lr": 0.002' in job


# ---------------------------------------------------------------- MLflow


@pytest.mark.slow
def test_mlflow_run_found_by_job_name_in_a_store_beside_the_database_and_resumed_after_a_stop(
        tmp_path, tiny_model):
    mlflow = pytest.importorskip("mlflow")
    params = finetune_params(tmp_path, tiny_model, ["mlflow"])
    calls = []

    def stop_in_epoch_2() -> bool:  # asked once per optimizer step: stop after step 8 of 12
        calls.append(1)
        return len(calls) >= 8

    from jobs.context import Preempted

    with pytest.raises(Preempted):
        run_job(tmp_path, "finetune", "ft-ml", params, stop=stop_in_epoch_2)
    store = tmp_path / "mlflow.db"  # beside experiments.db
    assert store.exists()
    client = mlflow.MlflowClient(f"sqlite:///{store}")
    experiment = client.get_experiment_by_name(CAMPAIGN)  # grouped by the campaign tag
    (stopped,) = client.search_runs([experiment.experiment_id], "attributes.run_name = 'ft-ml'")
    assert stopped.info.status == "KILLED"

    run_job(tmp_path, "finetune", "ft-ml", params)  # the next attempt resumes from its checkpoint...
    (run,) = client.search_runs([experiment.experiment_id], "attributes.run_name = 'ft-ml'")
    assert run.info.run_id == stopped.info.run_id and run.info.status == "FINISHED"  # ...in the same run
    assert [(m.step, m.value > 0) for m in client.get_metric_history(run.info.run_id, "eval_accuracy")] == [
        (6, True), (12, True)]  # one point per epoch
    assert "loss" in run.data.metrics and "eval_f1" in run.data.metrics
    tags, logged = run.data.tags, run.data.params
    assert (tags["sched.job_id"], tags["sched.job"], tags["sched.kind"]) == ("7", "ft-ml", "finetune")
    assert (tags["sched.campaign"], tags["sched.tags"]) == (CAMPAIGN, ",".join(TAGS))
    assert (logged["job.lr"], logged["job.max_length"], logged["job.report_to"]) == ("0.002", "48", '["mlflow"]')
    assert logged["job.model"] == tiny_model and logged["learning_rate"] == "0.002"  # ours and HF's


@pytest.mark.slow
def test_mlflow_uses_the_tracking_uri_it_is_given(tmp_path, tiny_model, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'elsewhere' / 'tracking.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "sentiment")
    run_job(tmp_path, "finetune", "ft-uri", finetune_params(tmp_path, tiny_model, ["mlflow"], epochs=1))
    assert not (tmp_path / "mlflow.db").exists()
    (run,) = mlflow.search_runs(experiment_names=["sentiment"], filter_string="attributes.run_name = 'ft-uri'",
                                output_format="list")
    assert run.info.status == "FINISHED" and run.data.tags["sched.campaign"] == CAMPAIGN


# ---------------------------------------------------------------- Weights & Biases


def wandb_records(path: str):
    """The records of a W&B run file (`run-<id>.wandb`): a 7-byte header, then LevelDB-log blocks of
    32 KiB holding (checksum, length, type) chunks of protobuf `Record`s."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        room = 32768 - pos % 32768
        if room < 7:
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:  # padding to the end of the block
            pos += room
            continue
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


@pytest.mark.slow
def test_wandb_offline_run_is_written_in_the_run_folder_named_grouped_and_tagged(tmp_path, tiny_model):
    pytest.importorskip("wandb")
    ctx = run_job(tmp_path, "finetune", "ft-wb", finetune_params(tmp_path, tiny_model, ["wandb"]))

    (run_file,) = glob.glob(str(ctx.output_dir / "wandb" / "offline-run-*" / "run-*.wandb"))
    records = list(wandb_records(run_file))
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (run.display_name, run.run_group, run.project, run.job_type) == ("ft-wb", CAMPAIGN, "sched", "finetune")
    assert list(run.tags) == [*TAGS, "job-7"]
    config = {}
    for record in records:
        if record.WhichOneof("record_type") in ("run", "config"):
            source = record.run.config if record.WhichOneof("record_type") == "run" else record.config
            config.update({item.key: json.loads(item.value_json) for item in source.update})
    assert config["job"]["lr"] == 0.002 and config["job"]["report_to"] == ["wandb"]  # the job's params
    assert config["sched"]["job_id"] == "7" and config["learning_rate"] == 0.002  # ...and HF's
    history = [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    assert [h["train/global_step"] for h in history if "eval/accuracy" in h] == [6, 12]  # one per epoch
    assert json.loads((ctx.output_dir / "train" / "tracking.json").read_text()) == {"wandb": run.run_id}

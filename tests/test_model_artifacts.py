"""Only a model that a model-producing kind registered is loaded from another job (issue 19, item 10).

The attack: an echo job writes `evil.joblib` (its message: a pickle that runs `os.mkdir`), and a
predict job names it with `model: {from: writer, artifact: evil.joblib}`. It must be refused at
submit, and, forced past submit (`--no-check`), refused again at run time before anything is
unpickled. A baseline's model, a fine-tune's and a tune group's best model still predict.
"""

from __future__ import annotations

import os
import re
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from jobs import get_kind
from jobs.common import ModelRefused
from jobs.context import JobContext, MemoryReporter
from jobs.registry import Kind, KindConflict, model_kinds
from scheduler.cli import cli
from scheduler.jobqueue import JobQueue
from scheduler.records import JobRecord, Records
from tests.helpers import review_sample, sample_test_csv, submit


def evil_pickle(marker: Path) -> str:
    """A protocol-0 pickle (plain text, so an echo can write it) whose loading runs os.mkdir(marker)."""
    return f"cos\nmkdir\n(V{marker}\ntR."


def sched(url, *args, ok=True):
    result = CliRunner().invoke(cli, ["--db", url, *args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def one_line(output: str) -> str:
    return " ".join(output.split())


@pytest.fixture
def no_joblib_load(monkeypatch):
    """joblib.load fails the test if anything calls it (the run-time checks come first)."""
    import joblib

    def refuse(*args, **kwargs):
        pytest.fail(f"joblib.load was called on {args[:1]}")

    monkeypatch.setattr(joblib, "load", refuse)


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """A queue where `writer` (echo, writes the evil pickle as evil.joblib) and `base` (a baseline)
    have run and succeeded through a real worker; the URL, folder, test CSV and marker."""
    folder = tmp_path_factory.mktemp("artifacts")
    marker = folder / "pwned"
    train, test = review_sample(folder, 30), sample_test_csv(folder, 20)
    url = f"sqlite:///{folder / 'experiments.db'}"
    campaign = {"jobs": [
        {"name": "writer", "kind": "echo", "params": {"message": evil_pickle(marker), "write_file": "evil.joblib"}},
        {"name": "base", "kind": "baseline", "params": {"train": str(train), "test": str(test)}},
    ]}
    (folder / "campaign.yaml").write_text(yaml.safe_dump(campaign))
    sched(url, "submit", str(folder / "campaign.yaml"))
    sched(url, "worker", "--gpus", "none", "--until-empty", "--runs", str(folder / "runs"))
    queue = JobQueue(url)
    assert {j.name: j.status for j in queue.find()} == {"writer": "succeeded", "base": "succeeded"}
    queue.dispose()
    evil = Path(Records(JobQueue(url)).job("writer").artifacts["evil.joblib"])
    assert evil.read_text() == evil_pickle(marker)

    class Ran:
        pass

    r = Ran()
    r.url, r.folder, r.test, r.marker, r.evil = url, folder, test, marker, evil
    yield r
    assert not marker.exists(), "the echo's pickle was loaded"


def predict_file(ran, name: str, model, kind: str = "predict") -> Path:
    params = {"model": model, "csv": str(ran.test)} if kind == "predict" else \
        {"model": model, "train": str(ran.test), "test": None}
    path = ran.folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"jobs": [{"name": name, "kind": kind, "gpus": 0, "params": params}]}))
    return path


def run_in_process(ran, name: str, model) -> MemoryReporter:
    """predict's run() here (joblib.load can be patched), reading the queue's records of other jobs."""
    records = Records(JobQueue(ran.url))
    reporter = MemoryReporter()
    reporter.job = records.job
    reporter.jobs_where = records.jobs_where
    ctx = JobContext(job_id=999, name=name, output_dir=ran.folder / "in-process" / name, device="cpu",
                     reporter=reporter)
    kind = get_kind("predict")
    kind.run(kind.parse({"model": model, "csv": str(ran.test)}), ctx)
    return reporter


# ---- the kinds say which of their artifacts are models -------------------------------------------


def test_model_kinds_declare_their_model_artifacts_and_formats():
    assert get_kind("finetune").models == {"model": "hf"}
    assert get_kind("tapt").models == {"model": "hf"}
    assert get_kind("tune").models == {"best_model": "hf"}
    assert get_kind("baseline").models == {"model": "joblib"}
    assert get_kind("ensemble").models == {"ensemble": "ensemble"}
    for kind in ("echo", "shell", "predict", "augment"):
        assert get_kind(kind).models == {}
    assert model_kinds(("joblib",)) == ["baseline"]
    assert set(model_kinds(("hf",))) == {"finetune", "tapt", "tune"}
    with pytest.raises(KindConflict, match="kind 'bad' declares models of unknown format"):
        Kind("bad", get_kind("echo").params_model, lambda p, c: None, models={"model": "pickle"})


# ---- refused at submit -------------------------------------------------------------------------


def test_the_echo_file_named_as_a_model_is_refused_at_submit(ran):
    path = predict_file(ran, "steal", {"from": "writer", "artifact": "evil.joblib"})
    for args in (["--dry-run"], []):
        refused = sched(ran.url, "submit", str(path), *args, ok=False)
        assert refused.exit_code == 1 and "Traceback" not in refused.output
        assert ("job 'steal', params.model: artifact 'evil.joblib' of job 'writer' is not a model: echo jobs "
                "register none, and only a registered model is loaded (models come from baseline, ensemble, "
                "finetune, tapt, tune jobs)") in one_line(refused.output)
    added = sched(ran.url, "add", "predict", "--name", "steal", "--gpus", "0",
                  "-p", "model={from: writer, artifact: evil.joblib}", "-p", f"csv={ran.test}", ok=False)
    assert "artifact 'evil.joblib' of job 'writer' is not a model" in one_line(added.output)
    queue = JobQueue(ran.url)
    assert "steal" not in {j.name for j in queue.find()}  # nothing was submitted
    queue.dispose()


def test_a_writer_in_the_same_file_is_refused_too(db_url, tmp_path):
    """The writer need not have run: its kind decides (on SQLite and PostgreSQL)."""
    text = textwrap.dedent("""
        jobs:
          - {name: writer, kind: echo, params: {message: x, write_file: evil.joblib}}
          - {name: steal, kind: predict, gpus: 0, after: [writer],
             params: {model: {from: writer, artifact: evil.joblib}, csv: data/reviews_test.csv}}
          - {name: bare, kind: predict, gpus: 0, after: [writer], params: {model: {from: writer}, csv: data/reviews_test.csv}}
    """)
    (tmp_path / "q.yaml").write_text(text)
    out = one_line(sched(db_url, "submit", str(tmp_path / "q.yaml"), ok=False).output)
    assert "2 problem(s)" in out
    assert "job 'steal', params.model: artifact 'evil.joblib' of job 'writer' is not a model" in out
    assert "job 'bare', params.model: job 'writer' has no model: echo jobs register none" in out
    queue = JobQueue(db_url)
    assert queue.status_counts() == {}
    submit(queue, "queued-writer", "echo", params={"write_file": "model"})  # in the queue, not yet run
    queue.dispose()
    (tmp_path / "q2.yaml").write_text(yaml.safe_dump({"jobs": [{
        "name": "steal2", "kind": "predict", "gpus": 0,
        "params": {"model": {"from": "queued-writer", "artifact": "model"}, "csv": "data/reviews_test.csv"}}]}))
    out = one_line(sched(db_url, "submit", str(tmp_path / "q2.yaml"), ok=False).output)
    assert "artifact 'model' of job 'queued-writer' is not a model: echo jobs register none" in out


def test_artifacts_that_are_not_models_or_not_this_format_are_refused_at_submit(ran):
    cases = [
        (predict_file(ran, "p1", {"from": "base", "artifact": "val_logits"}),
         "job 'p1', params.model: artifact 'val_logits' of job 'base' is not a model: baseline jobs register only "
         "'model' as one, and only a registered model is loaded"),
        (predict_file(ran, "f1", {"from": "base"}, kind="finetune"),
         "job 'f1', params.model: the model of job 'base' ('model', baseline) is a joblib file (a pickled "
         "scikit-learn pipeline), not a from_pretrained folder (model and tokenizer)"),
        (predict_file(ran, "f2", {"from": "writer", "artifact": "evil.joblib"}, kind="finetune"),
         "job 'f2', params.model: artifact 'evil.joblib' of job 'writer' is not a model: echo jobs register none"),
    ]
    for path, says in cases:
        assert says in one_line(sched(ran.url, "submit", str(path), ok=False).output)


# ---- forced past submit: refused at run time, nothing unpickled --------------------------------


def test_forced_past_submit_it_fails_at_run_time_and_nothing_is_unpickled(ran):
    sched(ran.url, "add", "predict", "--name", "forced", "--gpus", "0", "--no-check", "--max-attempts", "2",
          "-p", "model={from: writer, artifact: evil.joblib}", "-p", f"csv={ran.test}")
    sched(ran.url, "worker", "--gpus", "none", "--until-empty", "--runs", str(ran.folder / "runs"))
    queue = JobQueue(ran.url)
    row = queue.get("forced")
    queue.dispose()
    assert (row.status, row.attempts) == ("failed", 1)  # an input error: no second attempt
    assert "artifact 'evil.joblib' of job 'writer' is not a model" in row.message
    assert "\n" not in row.message
    assert not ran.marker.exists(), "the echo's pickle was loaded"


def test_the_run_time_check_refuses_before_joblib_load(ran, no_joblib_load):
    """predict's own check (after the runner's preflight) stops it, even with the preflight skipped."""
    for model, says in (({"from": "writer", "artifact": "evil.joblib"},
                         "params.model: artifact 'evil.joblib' of job 'writer' is not a model: echo jobs register none"),
                        ({"from": "writer"}, "params.model: job 'writer' has no model: echo jobs register none"),
                        ({"from": "base", "artifact": "test_logits"},
                         "params.model: artifact 'test_logits' of job 'base' is not a model: baseline jobs register "
                         "only 'model'")):
        with pytest.raises(ModelRefused, match="^" + re.escape(says)):
            run_in_process(ran, "steal", model)
    assert not ran.marker.exists()


def test_a_model_swapped_for_a_link_out_of_its_run_folder_is_refused(ran, no_joblib_load):
    base = Records(JobQueue(ran.url)).job("base")
    model = Path(base.artifacts["model"])
    kept = model.with_name("kept.joblib")
    model.rename(kept)
    try:
        model.symlink_to(ran.evil)  # the registered path now leads to the echo's file
        with pytest.raises(ModelRefused, match=r"model 'model' of job 'base': .*model\.joblib resolves to "
                                               r".*evil\.joblib, outside the job's run folder; it is not loaded"):
            run_in_process(ran, "swapped", {"from": "base"})
    finally:
        model.unlink(missing_ok=True)
        kept.rename(model)
    assert not ran.marker.exists()


# ---- legitimate models still predict -----------------------------------------------------------


def test_a_baseline_predicts_from_its_registered_model(ran, monkeypatch):
    import joblib

    loaded = []
    real_load = joblib.load
    monkeypatch.setattr(joblib, "load", lambda path, *a, **k: loaded.append(str(path)) or real_load(path, *a, **k))
    base = Records(JobQueue(ran.url)).job("base")
    expected = np.load(base.artifacts["test_logits"])
    for model in ({"from": "base"}, {"from": "base", "artifact": "model"}, base.artifacts["model"]):
        reporter = run_in_process(ran, f"p-{len(loaded)}", model)
        np.testing.assert_allclose(np.load(reporter.artifacts["test_logits"]), expected, atol=1e-6)
    assert loaded == [os.path.realpath(base.artifacts["model"])] * 2 + [base.artifacts["model"]]
    # through the queue: the preflight accepts it at submit and again in the runner
    sched(ran.url, "submit", str(predict_file(ran, "predict-base", {"from": "base"})))
    sched(ran.url, "worker", "--gpus", "none", "--until-empty", "--runs", str(ran.folder / "runs"))
    predicted = Records(JobQueue(ran.url)).job("predict-base")
    assert predicted.status == "succeeded"
    np.testing.assert_allclose(np.load(predicted.artifacts["test_logits"]), expected, atol=1e-6)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny classifier folder (config, weights, tokenizer), built from a config: nothing trains."""
    from pipeline.models import load_classifier, resolve_model_source

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = tmp_path_factory.mktemp("tiny")
    texts = [f"리뷰 {i} 좋아요 별로 최고 최악" for i in range(200)]
    model, tokenizer = load_classifier(resolve_model_source("tiny", str(folder), texts), num_labels=4)
    out = folder / "classifier"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_a_finetune_and_a_tune_group_model_predict_and_a_link_out_is_refused(tiny_model, tmp_path):
    from jobs.predict import logits_of, resolve

    runs = tmp_path / "runs"
    reporter = MemoryReporter()

    def job(name, kind, artifacts, output_dir):
        reporter.others[name] = JobRecord(id=len(reporter.others) + 1, name=name, kind=kind, status="succeeded",
                                          params={}, tags=[], output_dir=str(output_dir), artifacts=artifacts)

    ft = runs / "00001-ft"
    shutil.copytree(tiny_model, ft / "train" / "model")
    job("ft", "finetune", {"model": str(ft / "train" / "model")}, ft)
    # a tune group: tune#1's best trial trained in tune#2's run folder
    shutil.copytree(tiny_model, runs / "00003-tune_2" / "trial-4" / "model")
    job("tune#1", "tune", {"best_model": str(runs / "00003-tune_2" / "trial-4" / "model")}, runs / "00002-tune_1")
    job("tune#2", "tune", {}, runs / "00003-tune_2")
    # a fine-tune whose model folder holds a link to weights outside its run folder
    bad = runs / "00004-bad"
    shutil.copytree(tiny_model, bad / "model")
    (bad / "model" / "model.safetensors").unlink()
    (bad / "model" / "model.safetensors").symlink_to(tiny_model / "model.safetensors")
    job("bad", "finetune", {"model": str(bad / "model")}, bad)

    ctx = JobContext(job_id=9, name="p", output_dir=tmp_path / "p", device="cpu", reporter=reporter)
    params = get_kind("predict").parse({"model": {"from": "ft"}, "csv": "data/reviews_test.csv"})
    texts = ["좋아요 최고", "별로 최악"]

    for name in ("ft", "tune#1"):
        predictor = resolve(ctx, get_kind("predict").parse({"model": {"from": name}, "csv": "x.csv"}).model)
        assert predictor.kind == "hf"
        assert logits_of(predictor, texts, params, "cpu").shape == (2, 4)
    predictor = resolve(ctx, get_kind("predict").parse({"model": {"from": "bad"}, "csv": "x.csv"}).model)
    with pytest.raises(ModelRefused, match=r"model 'model' of job 'bad': .*model\.safetensors resolves to "
                                           r".*, outside the job's run folder"):
        logits_of(predictor, texts, params, "cpu")

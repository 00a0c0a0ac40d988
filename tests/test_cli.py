"""Every `sched` command, through click's runner, on a SQLite file."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from scheduler.cli import cli
from scheduler.jobqueue import JobQueue

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture
def run(sqlite_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def invoke(*args, ok=True):
        result = runner.invoke(cli, ["--db", sqlite_url, *args], catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, result.output
        else:
            assert result.exit_code != 0, result.output
        return result

    return invoke


def write(tmp_path, text, name="queue.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


GOOD = """
    vars: {msg: hello}
    defaults: {priority: 1, max_attempts: 2, params: {echo: {message: "{msg}"}}}
    jobs:
      - name: prep
        kind: echo
        priority: 10
      - name: "train-{model}"
        kind: echo
        matrix: {model: [a, b]}
        after: [prep]
        tags: [train]
        params: {metric: 0.5}
      - name: report
        kind: echo
        priority: 0
        after: ["train-{model}"]
"""


def test_every_command_has_help_with_an_example(run):
    for name in cli.commands:
        result = run(name, "--help")
        assert "Example" in result.output, name


def test_init_creates_the_database(run, tmp_path):
    result = run("init")
    assert "queue ready" in result.output
    assert (tmp_path / "experiments.db").exists()


def test_submit_dry_run_shows_the_expanded_plan_and_submits_nothing(run, tmp_path, sqlite_url):
    result = run("submit", str(write(tmp_path, GOOD)), "--dry-run")
    for name in ("prep", "train-a", "train-b", "report"):
        assert name in result.output
    assert "nothing submitted" in result.output
    assert JobQueue(sqlite_url).status_counts() == {}


def _plan_rows(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("│")]


def test_a_long_plan_lists_its_changes_and_first_jobs_then_a_count(run, tmp_path, sqlite_url):
    def queue_text(changed: int | None = None) -> str:
        return "jobs:\n" + "".join(f"  - {{name: echo-{i}, kind: echo, params: {{message: "
                                    f"'{'changed' if i == changed else i}'}}}}\n" for i in range(75))

    queue_file = tmp_path / "long.yaml"
    queue_file.write_text(queue_text())
    first = run("submit", str(queue_file))
    rows = _plan_rows(first.output)
    assert len(rows) == 60 and "echo-59 " in rows[-1] and "echo-60 " not in first.output
    assert "15 more jobs not listed (15 new); --all lists every job" in first.output
    assert "75 new" in first.output and JobQueue(sqlite_url).status_counts() == {"queued": 75}
    # A job past the first sixty changes: its row is listed, in file order, and the rest counted.
    queue_file.write_text(queue_text(changed=70))
    second = run("submit", str(queue_file), "--dry-run")
    rows = _plan_rows(second.output)
    assert len(rows) == 60 and "echo-70 " in rows[-1] and "replace" in rows[-1]
    assert "echo-58 " in rows[-2] and "echo-59 " not in second.output
    assert "15 more jobs not listed (15 same); --all lists every job" in second.output
    every = run("submit", str(queue_file), "--dry-run", "--all")
    assert len(_plan_rows(every.output)) == 75 and "not listed" not in every.output


def test_submit_then_worker_then_status_json(run, tmp_path):
    run("submit", str(write(tmp_path, GOOD)))
    run("worker", "--gpus", "none", "--until-empty", "--runs", str(tmp_path / "runs"))
    snap = json.loads(run("status", "--json").output)
    assert snap["counts"]["succeeded"] == 4
    job = snap["jobs"][0]
    for key in ("id", "name", "kind", "status", "priority", "attempts", "progress"):
        assert key in job
    by_name = {j["name"]: j for j in snap["jobs"]}
    assert by_name["train-a"]["tags"] == ["train"] and by_name["prep"]["priority"] == 10
    # the plan's order: prep first (priority and dependency), report last (after both trains)
    started = sorted(snap["jobs"], key=lambda j: j["started_at"] + str(j["id"]))
    assert started[0]["name"] == "prep"


BAD_FILES = {
    "malformed": ("jobs:\n  - name: a\n    kind: [echo\n", "invalid YAML at line"),
    "unknown-top-key": ("jobz: []\n", "jobz: unknown key"),
    "unknown-job-key": ("jobs:\n  - {name: a, kind: echo, priorty: 3}\n", "job 'a' (jobs[0]), field priorty: unknown key"),
    "unknown-kind": ("jobs:\n  - {name: a, kind: nope}\n", "job 'a' (jobs[0]), field kind: unknown job kind 'nope'"),
    "bad-param": ("jobs:\n  - {name: a, kind: sleep, params: {seconds: soon}}\n", "job 'a' (jobs[0]): params.seconds"),
    "unknown-param": ("jobs:\n  - {name: a, kind: echo, params: {mesage: x}}\n", "params.mesage: unknown key"),
    "cycle": ("jobs:\n  - {name: a, kind: echo, after: [b]}\n  - {name: b, kind: echo, after: [a]}\n",
              "dependency cycle: a -> b -> a"),
    "unknown-after": ("jobs:\n  - {name: a, kind: echo, after: [ghost]}\n", "unknown dependency 'ghost'"),
    "duplicate": ("jobs:\n  - {name: a, kind: echo}\n  - {name: a, kind: echo}\n", "duplicate job name 'a'"),
    "unknown-var": ("jobs:\n  - {name: 'a-{model}', kind: echo}\n", "unknown variable {model}"),
    "gpus": ("jobs:\n  - {name: a, kind: echo, gpus: 2}\n", "field gpus"),
    "timeout": ("jobs:\n  - {name: a, kind: echo, timeout: soon}\n", "not a duration"),
    "not-a-mapping": ("- a\n- b\n", "expected a mapping"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_queue_files_name_the_problem_and_submit_nothing(run, tmp_path, sqlite_url, case):
    run("add", "echo", "--name", "already-there")
    text, expected = BAD_FILES[case]
    path = write(tmp_path, text)
    result = run("submit", str(path), ok=False)
    assert expected in result.output
    assert str(path) in result.output or case == "unknown-after"
    assert "Traceback" not in result.output
    assert JobQueue(sqlite_url).status_counts() == {"queued": 1}  # the earlier job is intact


def test_missing_queue_file(run, tmp_path):
    result = run("submit", str(tmp_path / "nope.yaml"), ok=False)
    assert "nope.yaml: no such file" in result.output


def test_verbose_shows_the_traceback(run, tmp_path):
    result = run("-v", "submit", str(write(tmp_path, "jobz: []\n")), ok=False)
    assert "Traceback" in result.output


def test_add_show_priority_cancel_retry(run, sqlite_url):
    run("add", "echo", "--name", "one", "-p", "message=hi", "-p", "metric=3", "--tag", "x")
    run("add", "sleep", "--name", "two", "--after", "one", "--priority", "5", "-p", "seconds=0.1")
    shown = json.loads(run("show", "two", "--json").output)
    assert shown["after"] == [{"name": "one", "status": "queued"}] and shown["priority"] == 5
    assert shown["params"] == {"seconds": 0.1}
    assert "message" in run("show", "1").output
    run("priority", "two", "9")
    assert JobQueue(sqlite_url).get("two").priority == 9
    result = run("cancel", "one")
    assert "cancelled" in result.output
    assert JobQueue(sqlite_url).get("two").status == "upstream_failed"
    result = run("retry", "one")
    assert "queued again" in result.output
    assert JobQueue(sqlite_url).status_counts() == {"queued": 2}
    assert "params.metric: Input should be a valid number" in run("add", "echo", "--name", "bad", "-p", "metric=abc", ok=False).output
    assert "KEY=VALUE" in run("add", "echo", "--name", "bad", "-p", "metric", ok=False).output


def test_errors_for_unknown_jobs_and_invalid_changes(run):
    assert "no experiments.db here" in run("show", "ghost", ok=False).output  # and none is created
    run("init")
    assert "no job named or numbered 'ghost'" in run("show", "ghost", ok=False).output
    run("add", "echo", "--name", "one")
    run("cancel", "one")
    assert "only queued or running" in run("cancel", "one", ok=False).output
    assert "has not started yet" in run("logs", "one", ok=False).output


def test_drain_and_resume(run, tmp_path, sqlite_url):
    run("add", "echo", "--name", "one")
    assert "drained" in run("drain").output
    run("worker", "--gpus", "none", "--until-empty", "--runs", str(tmp_path / "runs"))
    assert JobQueue(sqlite_url).get("one").status == "queued"
    assert "drained" in run("status").output
    run("resume")
    run("worker", "--gpus", "none", "--until-empty", "--runs", str(tmp_path / "runs"))
    assert JobQueue(sqlite_url).get("one").status == "succeeded"


def test_logs_and_status_after_a_run(run, tmp_path):
    run("add", "echo", "--name", "talker", "-p", "message=words from the job")
    run("worker", "--gpus", "none", "--until-empty", "--runs", str(tmp_path / "runs"))
    assert "words from the job" in run("logs", "talker").output
    assert "words from the job" in run("logs", "talker", "-f").output  # returns: job has ended
    status = run("status").output
    assert "succeeded" in status and "talker" in status


def test_worker_rejects_bad_options(run):
    assert "--gpus takes a list" in run("worker", "--gpus", "x,y", ok=False).output
    assert "shorter than --lease" in run("worker", "--lease", "5", "--heartbeat", "10", ok=False).output


def test_kinds_lists_every_kind(run):
    output = run("kinds").output
    for kind in ("shell", "echo", "sleep", "fail", "crash"):
        assert kind in output


@pytest.mark.slow
def test_demo_runs_the_campaign_to_the_end(run, sqlite_url, tmp_path, monkeypatch):
    import numpy as np
    import pandas as pd

    from scheduler.records import Records
    from scheduler.results import leaderboard

    monkeypatch.setenv("SCHED_CACHE_DIR", str(tmp_path / "token-cache"))
    output = run("demo").output
    queue = JobQueue(sqlite_url)
    assert queue.status_counts() == {"succeeded": 10}
    assert {job.kind for job in queue.find()} >= {"finetune", "baseline", "ensemble", "predict", "tune", "tapt"}
    rows = {row["job"].split("-", 3)[-1]: row for row in leaderboard(queue)}
    records = Records(queue)
    # Every model learned, and none was left out. A model that learned nothing scores at most the
    # majority class's share of the validation rows (always predicting it), or chance within noise
    # (guessing): each must clear that share plus three standard errors, on the rows it is scored on.
    models = ("finetune-s1", "finetune-s2", "finetune-s3", "baseline", "tune")
    splits = {name: Path(records.job(rows[name]["job"]).artifacts["val_split"]).read_text() for name in models}
    assert len(set(splits.values())) == 1, splits  # one validation split for all of them
    labels = pd.read_csv(records.job(rows["baseline"]["job"]).artifacts["val_predictions"])["label"]
    majority = labels.value_counts(normalize=True).max()
    learned_nothing = majority + 3 * math.sqrt(majority * (1 - majority) / len(labels))
    for name in models:
        assert rows[name]["val_accuracy"] > learned_nothing, (name, rows[name]["val_accuracy"], majority, len(labels))
        assert rows[name]["left_out_by"] == []
    assert rows["tune"]["lr"] != rows["finetune-s1"]["lr"]  # the tune's row shows its best trial's lr
    ensemble = records.job(rows["ensemble"]["job"])
    predicted = records.job(rows["ensemble"]["job"].replace("-ensemble", "-predict"))
    val = pd.read_csv(ensemble.artifacts["val_predictions"])  # out of fold, as its val_accuracy
    assert rows["ensemble"]["val_accuracy"] == pytest.approx((val["pred"] == val["label"]).mean())
    labels = pd.read_csv(DATA / "reviews_test.csv")["label"].to_numpy()
    held_out = (np.load(ensemble.artifacts["test_probs"]).argmax(-1) == labels).mean()
    assert predicted.metrics["test_accuracy"] == pytest.approx(held_out)  # predict re-ran the ensemble
    assert "Results" in output and "demo finished" in output


def test_bad_database_url(tmp_path):
    result = CliRunner().invoke(cli, ["--db", "nonsense://", "status"])
    assert result.exit_code == 1
    assert "error:" in result.output

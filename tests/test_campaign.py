"""Day-to-day use of a long campaign: inputs checked at submit, an edited file submitted again, jobs
found and cleaned, hooks when jobs end."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from scheduler.cli import cli
from scheduler.jobqueue import JobQueue
from scheduler.execute.slots import Slot
from scheduler.execute.worker import WorkerLoop, WorkerOptions
from tests.helpers import step_until


def sched(url, *args, ok=True):
    result = CliRunner().invoke(cli, ["--db", url, *args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def data(tmp_path):
    good = tmp_path / "train.csv"
    pd.DataFrame({"review": ["좋아요", "별로", "최고", "최악"] * 5, "label": [3, 1, 3, 0] * 5}).to_csv(good, index=False)
    no_label = tmp_path / "no_label.csv"
    pd.DataFrame({"review": ["a", "b"], "stars": [1, 2]}).to_csv(no_label, index=False)
    bad_label = tmp_path / "bad_label.csv"
    pd.DataFrame({"review": ["a", "b", "c"], "label": [0, 7, 1]}).to_csv(bad_label, index=False)
    return {"good": good, "no_label": no_label, "bad_label": bad_label}


def finetune_file(tmp_path, train, model="tiny", name="ft", extra="") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"jobs:\n  - name: {name}\n    kind: finetune\n    gpus: 0\n    max_attempts: 2\n"
                    f"    params: {{train: {train}, test: null, model: {model}}}\n{extra}")
    return path


@pytest.mark.parametrize("case, says", [
    ("missing", "params.train: {path}: file not found"),
    ("no_label", "missing column 'label'; available columns: 'review', 'stars'"),
    ("bad_label", "label 7 in column 'label' is outside 0..3 at data row 2"),
])
def test_bad_data_is_refused_at_submit_and_nothing_is_inserted(case, says, data, tmp_path, sqlite_url):
    train = data.get(case, tmp_path / "nope.csv")
    for args in (["--dry-run"], []):
        result = sched(sqlite_url, "submit", str(finetune_file(tmp_path, train)), *args, ok=False)
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert says.format(path=train) in result.output.replace("\n", "")
    assert JobQueue(sqlite_url).status_counts() == {}


def test_a_misspelt_model_is_an_error_offline_and_a_note_online(data, tmp_path, sqlite_url, monkeypatch):
    path = finetune_file(tmp_path, data["good"], model="klue/robrta-base")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    refused = sched(sqlite_url, "submit", str(path), ok=False)
    assert "klue/robrta-base is not in the local Hugging Face cache and downloads are off" in \
        refused.output.replace("\n", "")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    noted = sched(sqlite_url, "submit", str(path), "--dry-run")
    assert "will be downloaded from the Hugging Face hub" in noted.output.replace("\n", "")
    folder = sched(sqlite_url, "submit", str(finetune_file(tmp_path, data["good"], model=str(tmp_path))), ok=False)
    assert "has no config.json" in folder.output.replace("\n", "")
    skipped = sched(sqlite_url, "submit", str(finetune_file(tmp_path, tmp_path / "nope.csv")), "--no-check")
    assert "1 new" in skipped.output


def test_a_from_reference_must_name_a_job_that_produces_it(data, tmp_path, sqlite_url):
    text = (f"jobs:\n  - {{name: pred, kind: predict, params: {{model: tiny, csv: {data['good']}}}}}\n"
            f"  - name: ft\n    kind: finetune\n    params: {{train: {data['good']}, test: null, model: {{from: pred}}}}\n"
            f"  - name: ft2\n    kind: finetune\n    params: {{train: {data['good']}, test: null, model: {{from: nobody}}}}\n")
    path = tmp_path / "refs.yaml"
    path.write_text(text)
    result = sched(sqlite_url, "submit", str(path), ok=False)
    out = result.output.replace("\n", "")
    assert "2 problem(s) in the jobs' inputs, nothing was submitted" in out
    assert "job 'ft', params.model: job 'pred' is a predict job; it produces no 'model'" in out
    assert "job 'ft2', params.model: no job named 'nobody' in this file or the queue" in out
    assert JobQueue(sqlite_url).status_counts() == {}


def test_an_input_error_at_run_time_fails_at_once_without_another_attempt(data, tmp_path, sqlite_url):
    train = tmp_path / "vanishing.csv"
    train.write_bytes(data["good"].read_bytes())
    sched(sqlite_url, "submit", str(finetune_file(tmp_path, train)))
    train.unlink()  # gone before the job runs
    queue = JobQueue(sqlite_url)
    loop = WorkerLoop(queue, [Slot("cpu0", None)], WorkerOptions(runs_root=tmp_path / "runs", poll_s=0.05))
    step_until(loop, lambda: queue.get("ft").status in ("failed", "succeeded"), timeout=120)
    row = queue.get("ft")
    assert (row.status, row.attempts, row.max_attempts) == ("failed", 1, 2)
    assert "PreflightError" in row.message and "file not found" in row.message
    queue.dispose()


# ---- an edited campaign submitted again --------------------------------------------------------

CAMPAIGN = """
jobs:
  - {{name: prep, kind: echo, params: {{message: "{prep}"}}}}
  - {{name: train, kind: echo, after: [prep], params: {{message: "{train}"}}}}
  - {{name: report, kind: echo, after: [train], params: {{message: report}}}}
{extra}"""


def write(tmp_path, prep="p", train="t", extra="") -> Path:
    path = tmp_path / "campaign.yaml"
    path.write_text(CAMPAIGN.format(prep=prep, train=train, extra=extra))
    return path


def run_one(queue, name):
    worker = queue.register_worker("h", 1, ["cpu0"])
    job = queue.claim(worker, "cpu0", 0)
    assert job.name == name
    queue.succeed(job.id, worker)


def actions(result) -> dict[str, str]:
    """{job: action} from the plan table of `sched submit`."""
    found = {}
    for line in result.output.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) > 3 and (cells[0].isdigit() or cells[1] == "removed"):
            found[cells[2]] = cells[1]
    return found


def test_resubmitting_an_unchanged_file_changes_nothing(tmp_path, sqlite_url):
    path = write(tmp_path)
    sched(sqlite_url, "submit", str(path))
    queue = JobQueue(sqlite_url)
    run_one(queue, "prep")
    again = sched(sqlite_url, "submit", str(path))
    assert actions(again) == {"prep": "same", "train": "same", "report": "same"}
    assert "3 same" in again.output
    assert queue.status_counts() == {"succeeded": 1, "queued": 2}


def test_a_changed_job_that_never_started_is_replaced_and_its_dependents_follow(tmp_path, sqlite_url):
    sched(sqlite_url, "submit", str(write(tmp_path)))
    queue = JobQueue(sqlite_url)
    before = queue.get("train").id
    result = sched(sqlite_url, "submit", str(write(tmp_path, train="t2")))
    assert actions(result) == {"prep": "same", "train": "replace", "report": "replace"}
    row = queue.get("train")
    assert row.id == before and row.params == {"message": "t2"}


def test_a_changed_job_that_ran_is_refused_unless_rerun_changed(tmp_path, sqlite_url):
    sched(sqlite_url, "submit", str(write(tmp_path)))
    queue = JobQueue(sqlite_url)
    run_one(queue, "prep")
    old = queue.get("prep").id
    edited = write(tmp_path, prep="p2", extra="  - {name: extra, kind: echo}\n")
    plan = sched(sqlite_url, "submit", str(edited), "--dry-run", ok=False)
    assert plan.exit_code == 1
    assert actions(plan) == {"prep": "changed", "train": "replace", "report": "replace", "extra": "new"}
    assert "refused: 'prep': changed, and job 1 of that name already ran (succeeded)" in plan.output.replace("\n", "")
    refused = sched(sqlite_url, "submit", str(edited), ok=False)
    assert "1 job(s) refused, nothing was submitted" in refused.output.replace("\n", "")
    assert queue.status_counts() == {"succeeded": 1, "queued": 2}
    rerun = sched(sqlite_url, "submit", str(edited), "--rerun-changed")
    assert actions(rerun)["prep"] == "rerun"
    kept = queue.get(f"prep@{old}")
    assert kept.status == "succeeded" and kept.params == {"message": "p"}
    fresh = queue.get("prep")
    assert fresh.id != old and fresh.status == "queued" and fresh.params == {"message": "p2"}
    assert [d["name"] for d in __import__("scheduler.views", fromlist=["x"]).job_detail(queue, "train")["after"]] \
        == ["prep"]


def test_a_job_taken_out_of_the_file_is_listed_as_removed_and_left_alone(tmp_path, sqlite_url):
    sched(sqlite_url, "submit", str(write(tmp_path, extra="  - {name: gone, kind: echo}\n")))
    result = sched(sqlite_url, "submit", str(write(tmp_path)), "--dry-run")
    assert actions(result)["gone"] == "removed" and "1 removed" in result.output
    assert JobQueue(sqlite_url).get("gone").status == "queued"


def test_a_changed_input_file_makes_the_job_changed(tmp_path, sqlite_url, data):
    train = tmp_path / "train-copy.csv"
    train.write_bytes(data["good"].read_bytes())
    path = finetune_file(tmp_path, train)
    sched(sqlite_url, "submit", str(path))
    assert actions(sched(sqlite_url, "submit", str(path), "--dry-run"))["ft"] == "same"
    train.write_text(train.read_text() + "또 볼래요,3\n")
    assert actions(sched(sqlite_url, "submit", str(path), "--dry-run"))["ft"] == "replace"


def test_reuse_takes_the_results_of_a_succeeded_twin_under_a_new_name(tmp_path, sqlite_url):
    from scheduler.records import Records

    first = tmp_path / "first.yaml"
    first.write_text("jobs:\n  - {name: probe-a, kind: echo, params: {message: same, metric: 0.75}}\n")
    sched(sqlite_url, "submit", str(first))
    queue = JobQueue(sqlite_url)
    worker = queue.register_worker("h", 1, ["cpu0"])
    job = queue.claim(worker, "cpu0", 0)
    Records(queue).log_metric(job.id, "value", 0.75)
    queue.succeed(job.id, worker)
    second = tmp_path / "second.yaml"
    second.write_text("jobs:\n  - {name: probe-b, kind: echo, params: {message: same, metric: 0.75}}\n")
    assert actions(sched(sqlite_url, "submit", str(second), "--dry-run"))["probe-b"] == "new"
    reused = sched(sqlite_url, "submit", str(second), "--reuse")
    assert actions(reused)["probe-b"] == f"reuse #{job.id}"
    row = queue.get("probe-b")
    assert (row.status, row.reused_from) == ("succeeded", job.id)
    assert Records(queue).job("probe-b").metrics == {"value": 0.75}
    shown = json.loads(sched(sqlite_url, "show", "probe-b", "--json").output)
    assert shown["reused_from"] == job.id


# ---- finding and cleaning ----------------------------------------------------------------------


@pytest.fixture
def history(tmp_path, sqlite_url):
    path = tmp_path / "h.yaml"
    path.write_text("jobs:\n"
                    "  - {name: ft-a, kind: echo, tags: [r1]}\n  - {name: ft-b, kind: echo, tags: [r2]}\n"
                    "  - {name: tune-x, kind: sleep, tags: [r2]}\n  - {name: late, kind: echo, after: [ft-a]}\n")
    sched(sqlite_url, "submit", str(path))
    queue = JobQueue(sqlite_url)
    worker = queue.register_worker("h", 1, ["cpu0"])
    a = queue.claim(worker, "cpu0", 0)
    queue.succeed(a.id, worker)
    b = queue.claim(worker, "cpu0", 0)
    queue.fail(b.id, worker, message="boom")
    return queue


def test_ls_filters_by_state_tag_kind_name_and_age(history, sqlite_url):
    names = lambda *args: [j["name"] for j in json.loads(sched(sqlite_url, "ls", "--json", *args).output)]  # noqa
    assert names() == ["ft-a", "ft-b", "tune-x", "late"]
    assert names("--status", "failed") == ["ft-b"]
    assert names("--tag", "r2") == ["ft-b", "tune-x"]
    assert names("--kind", "sleep") == ["tune-x"]
    assert names("--name", "ft-*") == ["ft-a", "ft-b"]
    assert names("--since", "1h", "--status", "queued") == ["tune-x", "late"]
    empty = sched(sqlite_url, "ls", "--tag", "round9", ok=False)
    assert empty.exit_code == 1 and "no job matches --tag round9" in empty.output
    typo = sched(sqlite_url, "ls", "--status", "succeded", ok=False)
    assert typo.exit_code == 1 and "unknown state 'succeded'" in typo.output


def test_rm_removes_finished_jobs_only_and_never_what_others_wait_for(history, sqlite_url, tmp_path):
    refused = sched(sqlite_url, "rm", "ft-a", ok=False)
    assert "needed by" in refused.output and history.get("ft-a").status == "succeeded"
    running = sched(sqlite_url, "rm", "tune-x", ok=False)
    assert "only finished jobs can be removed" in running.output
    dry = sched(sqlite_url, "rm", "--status", "failed", "--dry-run")
    assert "would remove 2 'ft-b' (failed)" in dry.output
    removed = sched(sqlite_url, "rm", "--status", "failed")
    assert "removed 1 job(s)" in removed.output
    assert history.status_counts() == {"succeeded": 1, "queued": 2}
    nothing = sched(sqlite_url, "rm", "--status", "failed", ok=False)
    assert nothing.exit_code == 1 and "no job matches --status failed" in nothing.output


def test_retry_force_runs_a_succeeded_job_again(history, sqlite_url):
    plain = sched(sqlite_url, "retry", "ft-a", ok=False)
    assert "--force runs a succeeded job again" in plain.output
    sched(sqlite_url, "retry", "--force", "ft-a")
    assert history.get("ft-a").status == "queued"


def test_commands_that_read_say_when_there_is_no_database(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SCHED_DB", raising=False)
    for args in (["status"], ["show", "x"], ["results"], ["report"], ["ls"], ["logs", "x"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1 and "no experiments.db here" in result.output, (args, result.output)
    assert not (tmp_path / "experiments.db").exists()


def test_filters_that_match_nothing_say_so(history, sqlite_url, tmp_path):
    assert "no job on the leaderboard matches --tag round2" in sched(sqlite_url, "results", "--tag", "round2",
                                                                      ok=False).output
    assert "unknown state 'succeded'" in sched(sqlite_url, "results", "--status", "succeded", ok=False).output
    out = tmp_path / "r.html"
    nosuch = sched(sqlite_url, "report", "--tag", "nosuch", "--out", str(out), ok=False)
    assert "no job carries the tag 'nosuch'" in nosuch.output and not out.exists()


def test_small_things(history, sqlite_url):
    assert sched(sqlite_url, "--version").output.startswith("sched ")
    sched(sqlite_url, "priority", "late", "-10")
    assert history.get("late").priority == -10
    study = sched(sqlite_url, "study", str(history.get("tune-x").id), ok=False)  # a job id is accepted
    assert "no Optuna study in this database yet" in study.output


def test_shell_completion_offers_job_names(history, sqlite_url):
    import os
    import subprocess
    import sys

    env = {**os.environ, "_SCHED_COMPLETE": "bash_complete", "COMP_WORDS": f"sched --db {sqlite_url} show ft-",
           "COMP_CWORD": "4"}
    out = subprocess.run([sys.executable, "-m", "scheduler.cli"], env=env, capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0 and out.stdout.split() == ["plain,ft-a", "plain,ft-b"]


def test_on_finish_and_on_failure_run_with_the_job_in_their_environment(tmp_path, sqlite_url):
    out = tmp_path / "hooks"
    out.mkdir()
    path = tmp_path / "hooks.yaml"
    path.write_text(
        "defaults:\n"
        f"  on_finish: [sh, -c, 'env | grep ^SCHED_ | sort > {out}/$SCHED_JOB_NAME.finish']\n"
        f"  on_failure: [sh, -c, 'echo $SCHED_JOB_STATUS $SCHED_JOB_MESSAGE > {out}/$SCHED_JOB_NAME.failure']\n"
        "jobs:\n  - {name: good, kind: echo, params: {metric: 0.5}}\n"
        "  - {name: bad, kind: fail, params: {message: kaput}}\n")
    sched(sqlite_url, "submit", str(path))
    queue = JobQueue(sqlite_url)
    loop = WorkerLoop(queue, [Slot("cpu0", None)], WorkerOptions(runs_root=tmp_path / "runs", poll_s=0.05))
    step_until(loop, lambda: queue.status_counts() == {"succeeded": 1, "failed": 1})
    deadline = time.monotonic() + 10
    while len(list(out.iterdir())) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    finish = (out / "good.finish").read_text()
    assert "SCHED_JOB_STATUS=succeeded" in finish and "SCHED_METRIC_VALUE=0.5" in finish
    assert "SCHED_DB" not in finish
    assert (out / "bad.failure").read_text().strip() == "failed RuntimeError: kaput"
    assert not (out / "good.failure").exists() and (out / "bad.finish").exists()
    queue.dispose()

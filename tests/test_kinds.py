"""Kinds describe themselves: a kind defined only in a test module shows up everywhere."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from jobs.registry import KindConflict, all_kinds, builtin_names, get_kind
from scheduler.cli import cli
from scheduler.jobqueue import JobQueue
from scheduler.report import write_report
from scheduler.results import leaderboard
from scheduler.execute.slots import parse_slots
from scheduler.execute.worker import WorkerLoop, WorkerOptions
from tests.helpers import submit


@pytest.fixture
def probe_kind(monkeypatch):
    monkeypatch.setenv("SCHED_KINDS", "tests.kind_example")


def test_every_builtin_module_exports_its_kind_under_its_own_name():
    names = builtin_names()
    assert {"shell", "echo", "finetune", "tune", "ensemble", "tapt", "predict", "augment"} <= set(names)
    for name in names:
        assert get_kind(name).name == name and get_kind(name).summary


def test_a_kind_from_a_test_module_is_listed_run_ranked_and_reported(probe_kind, sqlite_url, tmp_path):
    listed = CliRunner().invoke(cli, ["--db", sqlite_url, "kinds"], catch_exceptions=False)
    assert listed.exit_code == 0 and "probe" in listed.output and "linear probe" in listed.output
    queue = JobQueue(sqlite_url)
    submit(queue, "probe-a", "probe", params={"steps": 3})
    submit(queue, "probe-b", "probe", params={"steps": 6, "gain": 0.15})
    submit(queue, "probe-waiting", "probe", params={"steps": 2}, after=["probe-b"], priority=-1)
    queue.cancel(queue.resolve("probe-waiting"))
    loop = WorkerLoop(queue, parse_slots("none"), WorkerOptions(runs_root=tmp_path / "runs", poll_s=0.05))
    loop.run(until_empty=True)
    assert queue.status_counts() == {"succeeded": 2, "cancelled": 1}

    rows = leaderboard(queue)  # the first score column is the probe's own: it sorts by default
    assert [r["job"] for r in rows] == ["probe-b", "probe-a", "probe-waiting"]
    assert rows[0]["probe_auc"] == pytest.approx(0.9) and rows[0]["probe_steps"] == 6
    assert rows[0]["model"] == "probe-small" and rows[0]["gain"] == 0.15
    assert rows[2]["probe_auc"] is None and rows[2]["probe_steps"] == 2  # configured steps: never ran
    shown = CliRunner().invoke(cli, ["--db", sqlite_url, "results"], catch_exceptions=False)
    assert "probe auc" in shown.output and "0.9000" in shown.output

    summary = write_report(queue, tmp_path / "report.html")
    assert {"probe-a:val/probe_score", "probe-b:train/probe_loss"} <= set(summary.series)
    page = (tmp_path / "report.html").read_text()
    data = json.loads(page.split('id="report-data">')[1].split("</script>")[0])
    assert {r["job"] for r in data["leaderboard"]} == {"probe-a", "probe-b", "probe-waiting"}
    assert data["leaderboard"][0]["probe_auc"] == pytest.approx(0.9)
    assert "probe_auc per model" in page  # the leaderboard chart is of the first score
    queue.dispose()


def test_a_kind_named_like_a_builtin_or_exporting_nothing_is_refused(monkeypatch, tmp_path):
    module = tmp_path / "clashing_kinds.py"
    module.write_text("from jobs.registry import Kind\nfrom jobs.echo import Params, run\n"
                      "KIND = Kind('echo', Params, run)\n")
    empty = tmp_path / "no_kind_here.py"
    empty.write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SCHED_KINDS", "clashing_kinds")
    with pytest.raises(KindConflict, match="kind 'echo' from clashing_kinds has the name of a built-in kind"):
        all_kinds()
    monkeypatch.setenv("SCHED_KINDS", "no_kind_here")
    with pytest.raises(KindConflict, match="no_kind_here exports no KIND"):
        all_kinds()


def test_two_kinds_declaring_one_column_differently_are_refused(monkeypatch, tmp_path):
    from scheduler.kinds import leaderboard_layout

    (tmp_path / "twisted_kind.py").write_text(
        "from jobs.registry import Display, Kind\nfrom jobs.echo import Params, run\n"
        "KIND = Kind('twisted', Params, run, display=Display(scores={'val_accuracy': 'acc_top5'}))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SCHED_KINDS", "twisted_kind")
    with pytest.raises(KindConflict, match="leaderboard score 'val_accuracy'"):
        leaderboard_layout()

"""Scheduled submissions: the CLI, and each firing submitted once however many workers run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from scheduler.cli import cli
from scheduler.cron import CRON_STORE, _paused_scheduler, fire, last_fire_time, list_crons
from scheduler.jobqueue import JobQueue
from scheduler.store.schema import cron_fires

NIGHTLY = 'jobs:\n  - {name: "nightly-{fire_time}", kind: echo, params: {message: "from {cron}"}}\n'


@pytest.fixture
def nightly(tmp_path):
    path = tmp_path / "nightly.yaml"
    path.write_text(NIGHTLY)
    return path


def invoke(url, *args):
    return CliRunner().invoke(cli, ["--db", url, "cron", *args])


def test_add_list_remove(sqlite_url, nightly):
    result = invoke(sqlite_url, "add", "0 2 * * *", str(nightly), "--name", "nightly")
    assert result.exit_code == 0, result.output
    assert "next run" in result.output
    listed = invoke(sqlite_url, "list", "--json")
    assert '"expression": "0 2 * * *"' in listed.output and str(nightly) in listed.output
    assert "exists already" in invoke(sqlite_url, "add", "5 * * * *", str(nightly), "--name", "nightly").output
    assert invoke(sqlite_url, "rm", "nightly").exit_code == 0
    assert list_crons(JobQueue(sqlite_url)) == []
    removed_again = invoke(sqlite_url, "rm", "nightly")
    assert removed_again.exit_code == 1 and "no cron named 'nightly'" in removed_again.output


@pytest.mark.parametrize("expression,expected", [("* * *", "Wrong number of fields"),
                                                 ("61 * * * *", "bad cron expression '61 * * * *'")])
def test_bad_expressions_store_nothing(sqlite_url, nightly, expression, expected):
    result = invoke(sqlite_url, "add", expression, str(nightly))
    assert result.exit_code == 1 and expected in result.output
    assert list_crons(JobQueue(sqlite_url)) == []


def test_missing_or_invalid_queue_file_stores_nothing(sqlite_url, tmp_path):
    result = invoke(sqlite_url, "add", "0 2 * * *", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 1 and "nope.yaml: no such file" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("jobs:\n  - {name: x, kind: nosuchkind}\n")
    result = invoke(sqlite_url, "add", "0 2 * * *", str(bad))
    assert result.exit_code == 1 and "unknown job kind 'nosuchkind'" in result.output
    assert list_crons(JobQueue(sqlite_url)) == []


def test_last_fire_time():
    now = datetime(2026, 11, 30, 2, 0, 30, tzinfo=timezone.utc)
    assert last_fire_time("0 2 * * *", now) == datetime(2026, 11, 30, 2, 0, tzinfo=timezone.utc)
    assert last_fire_time("*/5 * * * *", now + timedelta(minutes=7)) == datetime(2026, 11, 30, 2, 5,
                                                                                  tzinfo=timezone.utc)


def test_a_firing_is_submitted_once_when_workers_race(db_url, nightly):
    queues = [JobQueue(db_url) for _ in range(4)]
    now = datetime.now(timezone.utc)
    results = []
    threads = [threading.Thread(target=lambda q=q: results.append(fire("nightly", str(nightly), "* * * * *", q, now)))
               for q in queues]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, False, True]
    assert queues[0].status_counts() == {"queued": 1}
    later = now + timedelta(minutes=1)
    assert fire("nightly", str(nightly), "* * * * *", queues[0], later)  # the next minute fires again
    assert queues[0].status_counts() == {"queued": 2}
    for q in queues:
        q.dispose()


def test_cron_fires_once_with_two_workers_running(db_url, nightly, tmp_path):
    queue = JobQueue(db_url)
    assert invoke(db_url, "add", "0 2 * * *", str(nightly), "--name", "nightly").exit_code == 0
    scheduler = _paused_scheduler(queue)  # make the daily firing due now
    scheduler.modify_job("nightly", jobstore=CRON_STORE, next_run_time=datetime.now(timezone.utc) + timedelta(seconds=2))
    scheduler.shutdown(wait=False)
    env = {**os.environ, "SCHED_DB": db_url}
    args = [sys.executable, "-m", "scheduler.cli", "worker", "--gpus", "none", "--lease", "4", "--heartbeat", "1"]
    workers = [subprocess.Popen(args + ["--runs", str(tmp_path / f"runs{i}")], env=env, cwd=tmp_path)
               for i in range(2)]
    try:
        deadline = time.monotonic() + 60
        while queue.status_counts().get("succeeded", 0) < 1:
            assert time.monotonic() < deadline, "the cron never fired"
            time.sleep(0.2)
        time.sleep(3)  # both workers' schedulers have woken up since the firing
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(timeout=30)
    with queue.read() as conn:
        fires = conn.execute(select(cron_fires)).all()
    assert len(fires) == 1 and fires[0].jobs_submitted == 1
    assert queue.status_counts() == {"succeeded": 1}
    assert list_crons(queue)[0]["last_result"] == "1 job(s) submitted"
    queue.dispose()

"""Faults with real processes: a killed worker or runner leaves no process of its job behind, an
worker that cannot renew a lease stops its job before the lease runs out and queues it again, a recreated database is rebuilt, a stop
during start-up is honoured at once, a deleted run folder keeps the failure reason, and the
database password stays out of the job's environment."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from scheduler.jobqueue import JobQueue
from scheduler.execute.slots import Slot
from scheduler.execute.worker import WorkerLoop, WorkerOptions
from tests.conftest import drop_pg_database, fresh_pg_database
from tests.helpers import alive, step_until, submit, wait_for

ROOT = Path(__file__).resolve().parents[1]




def _read_pid(path: Path) -> int:
    wait_for(lambda: path.exists() and path.read_text().strip(), 30, f"{path} never written")
    return int(path.read_text().split()[0])


def _worker(url: str, tmp_path: Path, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "scheduler.cli", "--db", url, "worker", "--gpus", "none", "--lease", "3",
            "--heartbeat", "0.5", "--runs", str(tmp_path / "runs"), *extra]
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.parametrize("program", [
    "sleep 333 & echo $! > {pid}; wait",  # a child of the job's shell, in the job's process group
    "setsid sleep 334 & echo $! > {pid}; wait",  # one that left the process group and session
])
def test_a_killed_worker_leaves_no_process_of_its_job(program, db_url, tmp_path):
    pid_file = tmp_path / "sleep.pid"
    queue = JobQueue(db_url)
    submit(queue, "sleeper", "shell", params={"argv": ["sh", "-c", program.format(pid=pid_file)]}, max_attempts=2)
    worker = _worker(db_url, tmp_path)
    sleeper = _read_pid(pid_file)
    assert alive(sleeper)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    wait_for(lambda: not alive(sleeper), 5, "the job's program outlived its worker")
    queue.dispose()


def test_a_runner_killed_abruptly_leaves_nothing_behind(sqlite_url, tmp_path):
    """The runner dies with SIGKILL (as the OOM killer would): no clean-up of its own runs, but the
    worker finds the job's processes by their run token and stops them."""
    pid_file = tmp_path / "daemon.pid"
    queue = JobQueue(sqlite_url)
    program = f"setsid sleep 335 & echo $! > {pid_file}; sleep 0.3; kill -9 $PPID; sleep 30"
    job_id = submit(queue, "runner-dies", "shell", params={"argv": ["sh", "-c", program]})
    loop = WorkerLoop(queue, [Slot("cpu0", None)], WorkerOptions(runs_root=tmp_path / "runs", poll_s=0.05,
                                                                   heartbeat_s=0.2, lease_s=5))
    step_until(loop, lambda: queue.get(job_id).status not in ("queued", "running"), timeout=60)
    assert queue.get(job_id).status == "killed"
    daemon = _read_pid(pid_file)
    wait_for(lambda: not alive(daemon), 5, "the daemon of a runner killed with SIGKILL lived on")
    queue.dispose()


class _Outage:
    """Makes every database call of one JobQueue fail while `down` is set (its hot path too)."""

    def __init__(self, queue: JobQueue):
        self.down = threading.Event()

        def guard(real):
            def call(*args, **kwargs):
                if self.down.is_set():
                    raise OperationalError("SELECT 1", {}, Exception("connection refused (injected outage)"))
                return real(*args, **kwargs)
            return call

        queue.write, queue.read = guard(queue.write), guard(queue.read)
        if queue.hot is not None:
            queue.hot._run = guard(queue.hot._run)


def test_a_worker_that_cannot_renew_stops_its_job_before_the_lease_runs_out_and_queues_it_again(db_url, tmp_path):
    from scheduler.store.engine import db_now

    queue = JobQueue(db_url)
    go = tmp_path / "go"  # the job runs until the test creates this file: past the outage, whatever its length
    pids = tmp_path / "pids"
    job_id = submit(queue, "survivor", "shell", max_attempts=2,
                    params={"argv": ["sh", "-c", f'echo $$ >> "{pids}"; while [ ! -e "{go}" ]; do sleep 0.05; done']})
    outage = _Outage(queue)
    loop = WorkerLoop(queue, [Slot("cpu0", None)], WorkerOptions(
        runs_root=tmp_path / "runs", lease_s=1.0, heartbeat_s=0.3, poll_s=0.05, reaper_s=0.2, stop_grace_s=0.3))
    runner = threading.Thread(target=loop.run, kwargs={"until_empty": True})
    probe = JobQueue(db_url)  # sees the database as other hosts do

    def lease_left() -> float:
        """Seconds left on the job's lease by the database's clock (negative: expired)."""
        with probe.read() as conn:
            now = db_now(conn)
        return (probe.get(job_id).lease_until - now).total_seconds()

    try:
        runner.start()
        wait_for(lambda: probe.get(job_id).status == "running" and pids.exists(), 60, "job never started")
        first = int(pids.read_text().split()[0])
        outage.down.set()
        wait_for(lambda: loop.database_was_down and lease_left() < 0, 30,
                  "the worker never met the outage, or the outage never outlasted the lease")
        # By the time the lease ran out, the job was gone: another worker may now run it safely.
        assert not alive(first), "the job outlived its lease while its worker could not renew it"
        outage.down.clear()
        # After the outage: queued again as preempted (no attempt spent), then run again here.
        wait_for(lambda: len(pids.read_text().split()) == 2, 30, "the job was not run again after the outage")
        go.touch()
        runner.join(timeout=60)
        assert not runner.is_alive()
        row = probe.get(job_id)
        assert (row.status, row.attempts) == ("succeeded", 1)
        log = Path(row.log_path).read_text()
        assert log.count("=== survivor #") == 2
    finally:
        outage.down.clear()
        go.touch()
        loop.request_stop()
        runner.join(timeout=30)
        probe.dispose()
        queue.dispose()


def test_a_worker_rebuilds_a_dropped_and_recreated_database_and_registers_again(pg_server, tmp_path):
    from scheduler.views import status_snapshot

    url, name = fresh_pg_database(pg_server)
    try:
        queue = JobQueue(url)
        submit(queue, "before", "echo")
        worker = _worker(url, tmp_path)
        wait_for(lambda: queue.get("before").status == "succeeded", 60, "first job never ran")
        queue.dispose()
        drop_pg_database(name)
        from tests.conftest import _pg_admin

        with _pg_admin() as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        wait_for(lambda: _live_workers(url), 60, "the worker never rebuilt the tables and registered")
        queue = JobQueue(url)
        assert [w["host"] for w in status_snapshot(queue, all_jobs=False)["workers"]]
        submit(queue, "after", "echo")
        wait_for(lambda: queue.get("after").status == "succeeded", 60, "the worker did not run new jobs")
        queue.dispose()
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
    finally:
        drop_pg_database(name)


def _live_workers(url: str) -> int:
    """Workers registered in the database, read without creating any table."""
    from sqlalchemy import create_engine, text

    from scheduler.store.engine import normalize_url

    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM sched_workers WHERE state = 'running'")).scalar()
    except Exception:  # noqa: BLE001 - the tables are not there yet
        return 0
    finally:
        engine.dispose()


def test_a_stop_during_start_up_is_honoured_at_once(sqlite_url, tmp_path):
    queue = JobQueue(sqlite_url)
    job_id = submit(queue, "late-start", "shell", params={"argv": ["sleep", "60"]})
    loop = WorkerLoop(queue, [Slot("cpu0", None)], WorkerOptions(runs_root=tmp_path / "runs", poll_s=0.05,
                                                                   stop_grace_s=30))
    loop.run_once()
    assert queue.get(job_id).status == "running"
    loop.request_stop()  # before the runner has even imported the job kinds
    started = time.monotonic()
    step_until(loop, lambda: not loop.children, timeout=30)
    assert time.monotonic() - started < 15  # not the 30 s grace of a SIGKILL
    row = queue.get(job_id)
    assert (row.status, row.failure_kind) == ("queued", "preempted")
    queue.dispose()


def test_the_failure_reason_survives_a_deleted_run_folder(sqlite_url, tmp_path):
    queue = JobQueue(sqlite_url)
    job_id = submit(queue, "loses-its-folder", "shell", params={"argv": ["sh", "-c", "sleep 1.5; exit 3"]})
    loop = WorkerLoop(queue, [Slot("cpu0", None)], WorkerOptions(runs_root=tmp_path / "runs", poll_s=0.05))
    step_until(loop, lambda: queue.get(job_id).status == "running")
    shutil.rmtree(tmp_path / "runs")
    step_until(loop, lambda: queue.get(job_id).status == "failed")
    assert queue.get(job_id).message == "CommandFailed: sh exited with code 3"
    queue.dispose()


def test_the_database_password_stays_out_of_the_jobs_environment(pg_server, tmp_path):
    from sqlalchemy.engine import make_url

    url, name = fresh_pg_database(pg_server)
    secret = "s3cret-p4ss"  # the local server trusts: any password connects, and none may leak
    with_password = make_url(url).set(password=secret).render_as_string(hide_password=False)
    try:
        queue = JobQueue(with_password)
        job_id = submit(queue, "prints-env", "shell", params={"argv": ["sh", "-c", "env; cat /proc/$PPID/environ"]})
        loop = WorkerLoop(queue, [Slot("cpu0", None)], WorkerOptions(runs_root=tmp_path / "runs", poll_s=0.05))
        step_until(loop, lambda: queue.get(job_id).status == "succeeded")
        log = Path(queue.get(job_id).log_path).read_text()
        assert "SCHED_DB=postgresql" in log and secret not in log
        queue.dispose()
    finally:
        drop_pg_database(name)


def test_echo_writes_only_inside_its_run_folder():
    from jobs import ParamsError, get_kind

    for name in ("../../x", "/etc/passwd", ".."):
        with pytest.raises(ParamsError, match="not a plain file name"):
            get_kind("echo").parse({"write_file": name})
    assert os.path.basename(get_kind("echo").parse({"write_file": "out.txt"}).write_file) == "out.txt"

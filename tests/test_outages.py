"""Faults a days-long campaign meets (the database, the disk, hostile run folders), with real
processes: a worker cut off from PostgreSQL by a real TCP proxy stops its job before its lease
runs out, so the worker that takes the job over never runs a second copy; a brief outage does not
fail a running job nor lose what it logged; a full runs folder burns no attempt; a deleted SQLite
file stops the claiming; a link planted in runs/ is not followed; logs are capped; runners never
hold the database password."""

from __future__ import annotations

import errno
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from scheduler.jobqueue import JobQueue, run_folder_name
from scheduler.execute.slots import Slot
from scheduler.execute.worker import WorkerLoop, WorkerOptions, cap_log
from tests.conftest import drop_pg_database, fresh_pg_database
from tests.helpers import alive, step_until, submit, wait_for
from tests.proxy import Proxy

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def ticker(monkeypatch):
    monkeypatch.setenv("SCHED_KINDS", "tests.outage_kind")


@pytest.fixture
def pg_url(pg_server):
    url, name = fresh_pg_database(pg_server)
    yield url
    drop_pg_database(name)


def _through(url: str, proxy: Proxy) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)


def _worker(url: str, tmp_path: Path, name: str, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "scheduler.cli", "--db", url, "worker", "--gpus", "none", "--lease", "4",
            "--heartbeat", "0.5", "--grace", "1", "--runs", str(tmp_path / "runs"), *extra]
    log = open(tmp_path / f"{name}.log", "w")
    return subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)



def _runs_by_pid(trace: Path) -> dict[int, tuple[float, float]]:
    """(first, last) time each copy of the job wrote to its trace."""
    spans: dict[int, tuple[float, float]] = {}
    for line in trace.read_text().splitlines():
        pid, at = line.split()
        first, _ = spans.get(int(pid), (float(at), 0.0))
        spans[int(pid)] = (first, float(at))
    return spans


def _steps_until(loop, done, timeout: float) -> None:
    """Worker steps as run() takes them: a step that meets a database error is taken again."""
    from sqlalchemy.exc import SQLAlchemyError

    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "condition not reached in time"
        try:
            loop.run_once()
        except SQLAlchemyError:
            pass
        time.sleep(0.05)



def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)


# ---------------------------------------------------------------- 1. leases and signals in an outage

def test_a_worker_cut_off_from_the_database_stops_its_job_before_another_worker_runs_it(pg_url, tmp_path, ticker):
    proxy = Proxy(5432)
    trace = tmp_path / "trace"
    queue = JobQueue(pg_url)
    job_id = submit(queue, "long", "ticker", params={"steps": 150, "every": 0.1, "trace": str(trace)}, max_attempts=3)
    cut_off = _worker(_through(pg_url, proxy), tmp_path, "a")
    direct = None
    try:
        wait_for(lambda: queue.get(job_id).status == "running" and trace.exists(), 60, "worker A never started it")
        first_worker = queue.get(job_id).worker_id
        (a_pid,) = _runs_by_pid(trace)
        proxy.cut()
        cut_at = time.time()
        direct = _worker(pg_url, tmp_path, "b")
        wait_for(lambda: len(_runs_by_pid(trace)) == 2, 120, "worker B never started the job")
        a_alive_when_b_started = alive(a_pid)
        wait_for(lambda: queue.get(job_id).status == "succeeded", 120, "worker B never finished the job")
        assert not a_alive_when_b_started, "worker A's copy was still alive when worker B started its own"
        row = queue.get(job_id)
        assert row.worker_id != first_worker
        spans = sorted(_runs_by_pid(trace).values())
        (a_first, a_last), (b_first, _) = spans
        assert a_last < b_first, "two copies of the job ran at once"
        assert a_last - cut_at < 4, "worker A did not stop its copy within the lease"
        # SIGTERM during the outage: worker A stops at once, without waiting for the database.
        cut_off.send_signal(signal.SIGTERM)
        started = time.monotonic()
        cut_off.wait(timeout=20)
        assert time.monotonic() - started < 10
    finally:
        proxy.close()
        _stop(cut_off)
        if direct is not None:
            _stop(direct)
        queue.dispose()


@contextmanager
def _ticker_behind_a_proxy(pg_url: str, tmp_path: Path, *worker_args: str):
    """A long job run by a worker that reaches PostgreSQL through a proxy: (proxy, worker, job's pid)."""
    proxy = Proxy(5432)
    trace = tmp_path / "trace"
    queue = JobQueue(pg_url)
    job_id = submit(queue, "long", "ticker", params={"steps": 600, "every": 0.1, "trace": str(trace)})
    worker = _worker(_through(pg_url, proxy), tmp_path, "a", *worker_args)
    try:
        wait_for(lambda: queue.get(job_id).status == "running" and trace.exists(), 60, "never started")
        (pid,) = _runs_by_pid(trace)
        yield proxy, worker, pid
    finally:
        proxy.close()
        _stop(worker)
        queue.dispose()


def test_sigterm_during_an_outage_stops_the_running_job_within_the_grace(pg_url, tmp_path, ticker):
    with _ticker_behind_a_proxy(pg_url, tmp_path, "--lease", "60", "--heartbeat", "5") as (proxy, worker, pid):
        proxy.stall()  # every database call of the worker now hangs
        time.sleep(1.0)
        worker.send_signal(signal.SIGTERM)
        wait_for(lambda: not alive(pid), 3.5, "the job was not stopped within the grace")  # --grace 1
        proxy.restore()
        worker.wait(timeout=30)  # and once its calls return, the worker ends


def test_a_stalled_database_does_not_keep_a_job_past_its_timeout_or_lease(pg_url, tmp_path, ticker):
    with _ticker_behind_a_proxy(pg_url, tmp_path) as (proxy, _worker_proc, pid):  # lease 4 s
        proxy.stall()
        stalled = time.monotonic()
        wait_for(lambda: not alive(pid), 10, "the job outlived its lease while the database hung")
        assert time.monotonic() - stalled < 4.5


# ---------------------------------------------------------------- 2. a brief outage and a running job

def test_a_brief_outage_neither_fails_a_running_job_nor_loses_its_metrics(pg_url, tmp_path, ticker):
    proxy = Proxy(5432)
    url = _through(pg_url, proxy)
    queue = JobQueue(pg_url)
    job_id = submit(queue, "steady", "ticker", params={"steps": 50, "every": 0.1})
    worker_queue = JobQueue(url)
    loop = WorkerLoop(worker_queue, [Slot("cpu0", None)], WorkerOptions(
        runs_root=tmp_path / "runs", lease_s=30, heartbeat_s=0.5, poll_s=0.05))
    try:
        step_until(loop, lambda: queue.get(job_id).status == "running", timeout=60)
        time.sleep(1.0)
        proxy.cut()
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            try:
                loop.run_once()
            except Exception:  # noqa: BLE001 - what run() retries
                time.sleep(0.1)
        proxy.restore()
        _steps_until(loop, lambda: queue.get(job_id).status != "running", timeout=60)
    finally:
        loop.close()
        proxy.close()
    row = queue.get(job_id)
    assert (row.status, row.attempts) == ("succeeded", 1), row.message
    with queue.read() as conn:
        from scheduler.store import queries as q

        steps = [m.value for m in q.job_metrics(conn, job_id) if m.key == "step"]
    assert steps == [float(i) for i in range(50)]  # each once, in order
    assert "the database is unreachable" in Path(row.log_path).read_text()
    worker_queue.dispose()
    queue.dispose()


def test_an_outage_that_outlasts_the_job_fails_it_saying_so():
    from sqlalchemy.exc import OperationalError

    from scheduler.outage import BufferedReporter, OutageOutlasted

    class Down:
        def log_metric(self, *args):
            raise OperationalError("INSERT", {}, Exception("connection refused"))

        def metric_recorded(self, *args):
            raise OperationalError("SELECT", {}, Exception("connection refused"))

    clock = [0.0]
    reporter = BufferedReporter(Down(), wait_s=30, sleep=lambda s: clock.__setitem__(0, clock[0] + s),
                                clock=lambda: clock[0])
    reporter.log_metric(1, "loss", 0.5)  # the job goes on
    assert len(reporter.pending) == 1
    with pytest.raises(OutageOutlasted, match=r"unreachable for 30s after the job ended .*1 metric"):
        reporter.finish()
    assert clock[0] >= 30


# ---------------------------------------------------------------- 3. the runs folder

def test_a_runs_folder_that_fills_up_puts_jobs_back_without_spending_attempts(queue, tmp_path, monkeypatch):
    import scheduler.execute.worker as worker_module
    from scheduler.views import status_snapshot

    ids = [submit(queue, f"e{i}", "echo", max_attempts=1) for i in range(5)]
    real = worker_module.make_run_folder

    def full(root, folder):
        raise OSError(errno.ENOSPC, "No space left on device", str(folder))

    monkeypatch.setattr(worker_module, "make_run_folder", full)
    loop = WorkerLoop(queue, [Slot("cpu0", None)], WorkerOptions(runs_root=tmp_path / "runs", poll_s=0.05))
    loop.run_once()
    rows = [queue.get(i) for i in ids]
    assert [(r.status, r.attempts) for r in rows] == [("queued", 0)] * 5
    assert "is full" in loop.problem
    assert "is full" in status_snapshot(queue, all_jobs=False)["workers"][0]["problem"]
    monkeypatch.setattr(worker_module, "make_run_folder", real)  # space came back
    step_until(loop, lambda: all(queue.get(i).status == "succeeded" for i in ids), timeout=60)
    assert loop.problem is None and all(queue.get(i).attempts == 1 for i in ids)
    loop.close()


def test_no_claim_below_the_minimum_free_space(queue, tmp_path):
    job_id = submit(queue, "e", "echo")
    loop = WorkerLoop(queue, [Slot("cpu0", None)], WorkerOptions(runs_root=tmp_path / "runs", min_free_mib=2**40))
    loop.run_once()
    assert queue.get(job_id).status == "queued" and "is full" in loop.problem
    loop.options.min_free_mib = 1
    step_until(loop, lambda: queue.get(job_id).status == "succeeded", timeout=60)
    loop.close()


def test_a_huge_log_keeps_its_head_and_tail(sqlite_url, tmp_path):
    log = tmp_path / "job.log"
    log.write_bytes(b"H" * 1000 + b"M" * 5000 + b"T" * 1000)
    assert cap_log(str(log), 4000)
    text = log.read_bytes()
    assert text.startswith(b"H" * 1000 + b"M" * 1000) and text.endswith(b"M" * 0 + b"T" * 1000)
    assert b"bytes of this log left out" in text and len(text) < 4000
    assert not cap_log(str(log), 4000)  # under the cap: left alone

    queue = JobQueue(sqlite_url)
    program = "head -c 3000000 /dev/zero | tr '\\0' x; echo; echo the-end; sleep 2"
    job_id = submit(queue, "chatty", "shell", params={"argv": ["sh", "-c", program]})
    loop = WorkerLoop(queue, [Slot("cpu0", None)], WorkerOptions(runs_root=tmp_path / "runs", heartbeat_s=0.2,
                                                                 poll_s=0.05, max_log_mib=1))
    step_until(loop, lambda: queue.get(job_id).status == "succeeded", timeout=60)
    loop.close()
    data = Path(queue.get(job_id).log_path).read_bytes()
    assert len(data) < 1.1 * 2**20 and b"left out (max_log_size)" in data and b"the-end" in data
    queue.dispose()


# ---------------------------------------------------------------- 6. a deleted SQLite file

def test_a_worker_whose_database_file_was_deleted_stops_claiming(sqlite_url, tmp_path):
    queue = JobQueue(sqlite_url)
    loop = WorkerLoop(queue, [Slot("cpu0", None)], WorkerOptions(runs_root=tmp_path / "runs", poll_s=0.05))
    loop.run_once()
    for path in tmp_path.glob("experiments.db*"):
        path.unlink()
    fresh = JobQueue(sqlite_url)  # what `sched submit` does next: a new file at the same path
    job_id = submit(fresh, "after", "echo")
    for _ in range(3):
        loop.run_once()
    assert fresh.get(job_id).status == "queued"
    assert loop.problem.startswith("its database file") and "deleted or replaced" in loop.problem
    loop.close()
    queue.dispose()
    fresh.dispose()


# ---------------------------------------------------------------- 11. links planted in runs/

def test_a_link_planted_as_a_run_folder_is_not_followed(queue, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    job_id = submit(queue, "target", "echo")
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / run_folder_name(job_id, "target")).symlink_to(elsewhere)
    loop = WorkerLoop(queue, [Slot("cpu0", None)], WorkerOptions(runs_root=runs, poll_s=0.05))
    loop.run_once()
    row = queue.get(job_id)
    assert row.status == "failed" and "is a symbolic link" in row.message
    assert list(elsewhere.iterdir()) == [] and not loop.children
    loop.close()


def test_rm_files_refuses_a_linked_run_folder_before_removing_anything(sqlite_url, tmp_path):
    from click.testing import CliRunner

    from scheduler.cli import cli

    queue = JobQueue(sqlite_url)
    job_id = submit(queue, "done", "echo")
    loop = WorkerLoop(queue, [Slot("cpu0", None)], WorkerOptions(runs_root=tmp_path / "runs", poll_s=0.05))
    step_until(loop, lambda: queue.get(job_id).status == "succeeded", timeout=60)
    loop.close()
    folder = Path(queue.get(job_id).output_dir)
    elsewhere = tmp_path / "elsewhere"
    folder.rename(elsewhere)
    folder.symlink_to(elsewhere)
    result = CliRunner().invoke(cli, ["--db", sqlite_url, "rm", "done", "--files"])
    assert result.exit_code != 0 and "is a symbolic link" in result.output
    assert queue.get(job_id).status == "succeeded" and elsewhere.is_dir()  # nothing removed
    queue.dispose()


# ---------------------------------------------------------------- 13. the password and runners

def test_runners_never_hold_the_database_password(pg_url, tmp_path, monkeypatch):
    from sqlalchemy.engine import make_url

    url = make_url(pg_url).set(password="pw-s3cret-42").render_as_string(hide_password=False)  # trust auth
    monkeypatch.setenv("SCHED_DB", url)  # how a user may give the worker its database
    queue = JobQueue(url)
    out = tmp_path / "runner-env"
    job_id = submit(queue, "peek", "shell",
                    params={"argv": ["sh", "-c", f"tr '\\0' '\\n' < /proc/$PPID/environ > {out}; env >> {out}"]})
    loop = WorkerLoop(queue, [Slot("cpu0", None)], WorkerOptions(runs_root=tmp_path / "runs", poll_s=0.05))
    step_until(loop, lambda: queue.get(job_id).status == "succeeded", timeout=60)
    loop.close()
    seen = out.read_text()
    assert "SCHED_DB=" in seen and "pw-s3cret-42" not in seen
    queue.dispose()


def test_a_sqlite_file_made_immutable_for_a_while_neither_fails_a_job_nor_loses_its_metrics(sqlite_url, tmp_path,
                                                                                          ticker):
    import shutil

    if shutil.which("chattr") is None:
        pytest.skip("chattr (e2fsprogs) is not installed")
    queue = JobQueue(sqlite_url)
    job_id = submit(queue, "steady", "ticker", params={"steps": 50, "every": 0.1})
    loop = WorkerLoop(queue, [Slot("cpu0", None)], WorkerOptions(
        runs_root=tmp_path / "runs", lease_s=30, heartbeat_s=0.5, poll_s=0.05))
    files = [str(p) for p in sorted(tmp_path.glob("experiments.db*")) if not p.name.endswith("-shm")]
    try:
        _steps_until(loop, lambda: queue.get(job_id).status == "running", timeout=60)
        time.sleep(1.0)
        subprocess.run(["chattr", "+i", *files], check=True)
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            try:
                loop.run_once()
            except Exception:  # noqa: BLE001 - what run() retries
                time.sleep(0.1)
    finally:
        subprocess.run(["chattr", "-i", *files], check=False)
    _steps_until(loop, lambda: queue.get(job_id).status != "running", timeout=60)
    loop.close()
    row = queue.get(job_id)
    assert (row.status, row.attempts) == ("succeeded", 1), row.message
    with queue.read() as conn:
        from scheduler.store import queries as q

        steps = [m.value for m in q.job_metrics(conn, job_id) if m.key == "step"]
    assert steps == [float(i) for i in range(50)]
    queue.dispose()


@pytest.mark.parametrize("committed", [True, False], ids=["reply-lost", "not-written"])
def test_a_metric_write_that_failed_is_recorded_once_whether_or_not_it_committed(queue, committed):
    """An outage can cut the reply to a COMMIT that went through: the write fails, yet its row is
    there. Written again blindly the metric would appear twice; skipped blindly it could be lost."""
    from sqlalchemy.exc import OperationalError

    from scheduler.outage import BufferedReporter
    from scheduler.records import Records

    job_id = submit(queue, "m", "echo")
    records = Records(queue)

    class Flaky:
        cuts = 2  # the first two writes fail, after (committed) or before their row is written

        def __getattr__(self, name):
            return getattr(records, name)

        def log_metric(self, *args):
            if committed:
                records.log_metric(*args)
            if self.cuts:
                self.cuts -= 1
                raise OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))
            if not committed:
                records.log_metric(*args)

    reporter = BufferedReporter(Flaky(), wait_s=30, sleep=lambda s: None)
    reporter.log_metric(job_id, "loss", 0.5, 1)
    reporter.log_metric(job_id, "accuracy", 0.9, None, "val")  # no step: matched as such
    reporter.log_metric(job_id, "loss", 0.4, 2)
    reporter.finish()
    history = records.job(job_id).history
    assert [(h["key"], h["value"], h["step"], h["split"]) for h in history] == [
        ("loss", 0.5, 1, None), ("accuracy", 0.9, None, "val"), ("loss", 0.4, 2, None)]

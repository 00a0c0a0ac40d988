"""Warm start: a spare runner per slot with the next jobs' imports done, runners of light kinds
taking the next job, and an event-driven worker loop. Real processes throughout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timezone
from pathlib import Path

import pytest

from scheduler.jobqueue import JobQueue, JobSpec
from scheduler.execute.runner import PRELOAD_NICENESS
from scheduler.execute.slots import Slot
from scheduler.execute.worker import WorkerLoop, WorkerOptions
from tests.helpers import step_until, wait_for

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def warm_kind(monkeypatch):
    monkeypatch.setenv("SCHED_KINDS", "tests.warm_kind")


def loop_for(queue, tmp_path, **options):
    opts = dict(runs_root=tmp_path / "runs", heartbeat_s=0.2, lease_s=5, stop_grace_s=2, poll_s=0.05, warm=True)
    opts.update(options)
    return WorkerLoop(queue, [Slot("cpu0", None)], WorkerOptions(**opts))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _marks_of_two_warmchecks(sqlite_url, tmp_path) -> tuple[JobQueue, dict, dict]:
    """Two `warmcheck` jobs through a warm worker on one slot; the queue and what each recorded."""
    marker = tmp_path / "marks.jsonl"
    queue = JobQueue(sqlite_url)
    queue.submit([JobSpec(name=f"w{i}", kind="warmcheck", params={"marker": str(marker)}) for i in (1, 2)])
    loop = loop_for(queue, tmp_path)
    try:
        step_until(loop, lambda: queue.status_counts().get("succeeded") == 2, timeout=120)
    finally:
        loop.close()
    first, second = [json.loads(line) for line in marker.read_text().splitlines()]
    return queue, first, second


def test_a_job_on_a_spare_finds_its_imports_done_before_its_claim(warm_kind, sqlite_url, tmp_path):
    queue, first, second = _marks_of_two_warmchecks(sqlite_url, tmp_path)
    assert not first["preloaded"]  # the first runner was started for it: nothing ahead of time
    assert second["preloaded"]  # a spare imported it while the first job ran
    assert second["imported_at"] < second["started_at"] and second["pid"] != first["pid"]
    assert first["frozen"] > 0 and second["frozen"] > 0  # the imports are kept out of every collection
    claimed = queue.get("w2").started_at.replace(tzinfo=timezone.utc).timestamp()
    assert second["kind_imported_at"] < claimed  # the spare imported the kind's module ahead too
    assert second["database_open"] and not first["database_open"]  # ... and opened the database
    assert "(warm runner)" in Path(queue.get("w2").log_path).read_text()
    queue.dispose()


def test_a_spare_imports_at_a_lower_priority_and_its_job_runs_at_the_workers(warm_kind, sqlite_url, tmp_path):
    """A spare importing beside a running job must yield the CPU to it: its import thread is nicer,
    and it shares the worker's session (Linux's autogroup would otherwise give it an equal share of
    the CPU whatever its priority); the job it then runs keeps the worker's priority."""
    queue, first, second = _marks_of_two_warmchecks(sqlite_url, tmp_path)
    queue.dispose()
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    assert second["preloaded"]
    assert second["import_niceness"] == min(19, ours + PRELOAD_NICENESS)  # imported ahead, yielding
    assert first["import_niceness"] == ours  # imported by the job itself, at the job's priority
    assert first["job_niceness"] == second["job_niceness"] == ours
    for job in (first, second):
        assert job["session"] == os.getsid(0)  # the worker's session (the test process runs the loop)
        assert job["process_group"] == job["pid"]  # its own process group: stop signals reach all it starts


def test_light_jobs_share_one_runner(sqlite_url, tmp_path):
    queue = JobQueue(sqlite_url)
    out = tmp_path / "pids"
    queue.submit([JobSpec(name=f"s{i}", kind="shell", params={"argv": ["sh", "-c", f"echo $PPID >> {out}"]})
                  for i in range(5)])
    loop = loop_for(queue, tmp_path)
    try:
        step_until(loop, lambda: queue.status_counts().get("succeeded") == 5)
    finally:
        loop.close()
    assert len(set(out.read_text().split())) == 1  # one runner ran all five programs


def test_a_spare_imports_what_the_job_after_a_light_one_needs(warm_kind, sqlite_url, tmp_path):
    """A light job's runner takes the next job only when it holds what that job imports: behind a
    `sleep` (no heavy imports) comes a job that needs its preload, and a spare imports it meanwhile."""
    marker = tmp_path / "marks.jsonl"
    queue = JobQueue(sqlite_url)
    queue.submit([JobSpec(name="light", kind="sleep", params={"seconds": 2}),
                  JobSpec(name="heavy", kind="warmcheck", params={"marker": str(marker)}, after=["light"])])
    loop = loop_for(queue, tmp_path)
    try:
        step_until(loop, lambda: queue.status_counts().get("succeeded") == 2, timeout=120)
    finally:
        loop.close()
    record = json.loads(marker.read_text())
    started = queue.get("heavy").started_at.replace(tzinfo=timezone.utc).timestamp()
    assert record["preloaded"] and record["imported_at"] < started  # imported before its claim
    queue.dispose()


def test_a_crashed_spare_is_replaced_and_a_stopped_worker_leaves_no_runner(sqlite_url, tmp_path):
    queue = JobQueue(sqlite_url)
    loop = loop_for(queue, tmp_path)
    loop.run_once()
    spare = loop.spares["cpu0"]
    os.kill(spare.pid, signal.SIGKILL)
    spare.proc.wait()
    step_until(loop, lambda: loop.spares["cpu0"].pid != spare.pid)
    assert _alive(loop.spares["cpu0"].pid)
    replacement = loop.spares["cpu0"].pid
    loop.close()
    assert not _alive(replacement) and not loop.spares
    queue.dispose()


def test_no_warm_keeps_no_spare(sqlite_url, tmp_path):
    queue = JobQueue(sqlite_url)
    loop = loop_for(queue, tmp_path, warm=False)
    loop.run_once()
    assert loop.spares == {}
    queue.dispose()


def _runners_of(worker_pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"scheduler.execute.runner" in cmd and str(worker_pid).encode() in cmd and _alive(int(entry)):
                found.append(int(entry))
    return found


def test_spares_die_with_their_worker(sqlite_url, tmp_path):
    worker = subprocess.Popen([sys.executable, "-m", "scheduler.cli", "--db", sqlite_url, "worker", "--gpus",
                               "none", "--runs", str(tmp_path / "runs")], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not _runners_of(worker.pid):
        assert time.monotonic() < deadline, "no spare runner started"
        time.sleep(0.1)
    spares = _runners_of(worker.pid)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in spares):
        assert time.monotonic() < deadline, "a spare outlived its worker"
        time.sleep(0.1)


@pytest.mark.parametrize("ending", ["cancel", "timeout", "shutdown"])
def test_stops_end_a_job_on_a_warm_runner_as_they_do_on_a_new_one(ending, sqlite_url, tmp_path):
    queue = JobQueue(sqlite_url)
    queue.submit([JobSpec(name="first", kind="echo"),
                  JobSpec(name="long", kind="sleep", params={"seconds": 30},
                          timeout_s=1.5 if ending == "timeout" else None)])
    loop = loop_for(queue, tmp_path)
    try:
        step_until(loop, lambda: queue.get("long").progress_done is not None)
        assert "(warm runner)" in Path(queue.get("long").log_path).read_text()
        if ending == "cancel":
            queue.cancel(queue.resolve("long"))
        elif ending == "shutdown":
            loop.request_stop()
        step_until(loop, lambda: not loop.children)
    finally:
        loop.close()
    row = queue.get("long")
    expected = {"cancel": ("cancelled", "cancelled"), "timeout": ("killed", "killed"),
                "shutdown": ("queued", "preempted")}[ending]
    assert (row.status, row.failure_kind) == expected
    queue.dispose()


def test_an_idle_worker_wakes_when_a_job_is_submitted(db_url, tmp_path, monkeypatch):
    """The loop sleeps on the database (SQLite data_version, PostgreSQL LISTEN), not on a timer."""
    import threading

    from scheduler.execute import worker

    waits: list[list] = []  # [entered, left (None while waiting), timeout] of each of the loop's waits

    class Watched(worker.Wakeup):
        def wait(self, fds, timeout):
            span = [time.monotonic(), None, timeout]
            waits.append(span)
            try:
                super().wait(fds, timeout)
            finally:
                span[1] = time.monotonic()

    monkeypatch.setattr(worker, "Wakeup", Watched)
    queue = JobQueue(db_url)
    loop = loop_for(queue, tmp_path, poll_s=120, heartbeat_s=120, lease_s=240)  # each wait: 120 s at most
    runner = threading.Thread(target=loop.run)

    def asleep() -> bool:
        """In a wait that nothing pending will end: its spare has reported ready, and the wait is
        past the first look at the database (which may see the loop's own last commit)."""
        spare, last = loop.spares.get("cpu0"), (waits[-1] if waits else None)
        return (spare is not None and spare.ready and last is not None and last[1] is None
                and time.monotonic() - last[0] > 0.5)

    runner.start()
    try:
        wait_for(asleep, 60, "the worker never settled into an idle wait")
        submitted = time.monotonic()
        JobQueue(db_url).submit([JobSpec(name="wake", kind="echo")])
        wait_for(lambda: queue.get("wake").status == "succeeded", 60, "the idle worker did not wake for the new job")
        (woken,) = [w for w in waits if w[0] < submitted and (w[1] is None or w[1] >= submitted)]
        assert woken[1] - woken[0] < woken[2]  # the submission ended that wait, not its timeout
    finally:
        loop.request_stop()
        runner.join(timeout=30)
        queue.dispose()


_TTY_PROBE = '''
import os
try:
    os.close(os.open("/dev/tty", os.O_RDWR))
    OUTCOME = "opened"
except OSError as exc:
    OUTCOME = type(exc).__name__
with open(os.environ["TTY_PROBE_OUT"], "a") as fh:
    fh.write(OUTCOME + "\\n")
'''

_START_A_RUNNER = '''
import os, time
from scheduler.execute.launch import start_runner
os.close(os.open("/dev/tty", os.O_RDWR))  # this process has the terminal: the probe is meaningful
runner = start_runner(dict(os.environ), ("tty_probe",))
deadline = time.monotonic() + 60
while not runner.ready and time.monotonic() < deadline:
    runner.messages()
    time.sleep(0.05)
runner.proc.kill()
runner.proc.wait()
'''


def test_a_runner_leaves_its_workers_terminal(tmp_path):
    """Runners share the worker's session but not its terminal: a job's program that opens /dev/tty
    fails at once rather than being stopped as a background reader of the worker's terminal."""
    import pty

    (tmp_path / "tty_probe.py").write_text(_TTY_PROBE)
    out = tmp_path / "outcome"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)]), "TTY_PROBE_OUT": str(out)}
    pid, master = pty.fork()  # the child leads a new session whose controlling terminal is the pty
    if pid == 0:
        os.chdir(ROOT)
        os.execve(sys.executable, [sys.executable, "-c", _START_A_RUNNER], env)
    try:
        while True:  # drain the terminal until the child is gone
            try:
                if not os.read(master, 4096):
                    break
            except OSError:  # EIO: the child closed its side
                break
    finally:
        os.close(master)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert out.read_text().split() == ["OSError"]  # ENXIO: no controlling terminal in the runner

"""The worker loop with fake job kinds: each job runs in a real child process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scheduler.jobqueue import JobQueue
from scheduler.execute.slots import Slot, parse_slots
from scheduler.execute.worker import WorkerLoop, WorkerOptions
from tests.helpers import step_until, submit, wait_for


@pytest.fixture
def queue(sqlite_url):
    q = JobQueue(sqlite_url)
    yield q
    q.dispose()


def make_loop(queue, tmp_path, slots=None, **options):
    opts = dict(runs_root=tmp_path / "runs", heartbeat_s=0.2, lease_s=5, stop_grace_s=2, poll_s=0.05)
    opts.update(options)
    return WorkerLoop(queue, slots or [Slot("cpu0", None)], WorkerOptions(**opts))


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def runner_pids(worker_pid: int) -> list[int]:
    """The live runners started by that worker (their command line names the worker's pid)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"scheduler.execute.runner" in cmd and str(worker_pid).encode() in cmd:
                pids.append(int(proc.name))
    return pids


def test_echo_job_logs_metric_artifact_and_output(queue, tmp_path):
    job_id = submit(queue, "hello", "echo", params={"message": "hi there", "metric": 0.75,
                                                    "write_file": "out.txt"})
    loop = make_loop(queue, tmp_path)
    step_until(loop, lambda: queue.get(job_id).status == "succeeded")
    from scheduler.records import Records

    record = Records(queue).job("hello")
    assert record.metrics == {"value": 0.75}
    assert Path(record.artifacts["out.txt"]).read_text() == "hi there"
    log = Path(queue.get(job_id).log_path).read_text()
    assert "hi there" in log and "attempt 1/1" in log


def test_failing_job_is_retried_then_fails_with_its_error(queue, tmp_path):
    job_id = submit(queue, "bad", "fail", params={"message": "no GPU memory left"}, max_attempts=2)
    loop = make_loop(queue, tmp_path)
    step_until(loop, lambda: queue.get(job_id).status == "failed")
    row = queue.get(job_id)
    assert row.attempts == 2
    assert row.message == "RuntimeError: no GPU memory left"
    assert "Traceback" in Path(row.log_path).read_text()


def test_crashing_child_is_reported_with_its_exit_code(queue, tmp_path):
    job_id = submit(queue, "crash", "crash", params={"exit_code": 7})
    step_until(make_loop(queue, tmp_path), lambda: queue.get(job_id).status == "failed")
    row = queue.get(job_id)
    assert row.exit_code == 7 and "exited with code 7" in row.message


def test_timeout_kills_the_job_and_its_process_group(queue, tmp_path):
    marker = tmp_path / "child.pid"
    # 3 s: time for the program to start and say its pid even on a loaded machine
    job_id = submit(queue, "hang", "shell", timeout_s=3.0, params={"argv": [
        sys.executable, "-c",
        f"import os,time; open({str(marker)!r},'w').write(str(os.getpid())); time.sleep(60)"]})
    step_until(make_loop(queue, tmp_path), lambda: queue.get(job_id).status == "killed")
    assert "timed out after 3s" in queue.get(job_id).message
    grandchild = int(marker.read_text())
    deadline = time.monotonic() + 5
    while _running(grandchild):  # the program the job started died too (a zombie has ended)
        assert time.monotonic() < deadline, "the job's program outlived its timeout"
        time.sleep(0.05)


def test_cancel_of_a_running_job_kills_it(queue, tmp_path):
    job_id = submit(queue, "long", "sleep", params={"seconds": 60})
    loop = make_loop(queue, tmp_path)
    step_until(loop, lambda: queue.get(job_id).status == "running")
    queue.cancel(job_id)
    step_until(loop, lambda: queue.get(job_id).status == "cancelled")
    assert not loop.children


def test_shutdown_preempts_running_jobs_and_queues_them_again(queue, tmp_path):
    job_id = submit(queue, "long", "sleep", params={"seconds": 60}, max_attempts=1)
    loop = make_loop(queue, tmp_path)
    step_until(loop, lambda: queue.get(job_id).progress_done is not None)  # the job itself is running
    loop.request_stop()
    step_until(loop, lambda: not loop.children)
    row = queue.get(job_id)
    assert (row.status, row.failure_kind, row.attempts) == ("queued", "preempted", 0)
    assert "stopped after" in Path(row.log_path).read_text()  # the job saw should_stop()


def test_shell_job_gets_its_gpu_slot_environment(queue, tmp_path):
    out = tmp_path / "env.txt"
    code = ("import os; open(os.environ['OUT'],'w').write("
            "os.environ['CUDA_VISIBLE_DEVICES']+'|'+os.environ['CUDA_DEVICE_ORDER']+'|'+os.environ['SCHED_DEVICE'])")
    job_id = submit(queue, "env", "shell", gpus=1, params={"argv": [sys.executable, "-c", code],
                                                           "env": {"OUT": str(out)}})
    loop = make_loop(queue, tmp_path, slots=[Slot("gpu3", 3)])
    step_until(loop, lambda: queue.get(job_id).status == "succeeded")
    assert out.read_text() == "3|PCI_BUS_ID|cuda"


def test_shell_job_with_a_missing_program_fails_clearly(queue, tmp_path):
    job_id = submit(queue, "nope", "shell", params={"argv": ["/no/such/program"]})
    step_until(make_loop(queue, tmp_path), lambda: queue.get(job_id).status == "failed")
    assert "program not found: /no/such/program" in queue.get(job_id).message


def test_two_slots_run_jobs_side_by_side(queue, tmp_path):
    ids = [submit(queue, f"nap-{i}", "sleep", params={"seconds": 1.0}) for i in range(2)]
    loop = make_loop(queue, tmp_path, slots=parse_slots("none", cpu_slots=2))
    loop.run_once()
    assert len(loop.children) == 2
    step_until(loop, lambda: all(queue.get(i).status == "succeeded" for i in ids))


def test_run_until_empty_follows_priorities_and_dependencies(queue, tmp_path):
    marker = tmp_path / "order.txt"
    from scheduler.plan import build_plan

    plan = {"vars": {"m": str(marker)}, "defaults": {"params": {"sleep": {"seconds": 0, "marker": "{m}"}}},
            "jobs": [
                {"name": "low", "kind": "sleep", "priority": 1},
                {"name": "high", "kind": "sleep", "priority": 10},
                {"name": "mid-{x}", "kind": "sleep", "priority": 5, "matrix": {"x": ["a", "b"]}},
                {"name": "top-but-blocked", "kind": "sleep", "priority": 100, "after": ["mid-{x}"]},
            ]}
    queue.submit(build_plan(plan))
    make_loop(queue, tmp_path).run(until_empty=True)
    assert marker.read_text().split() == ["high", "mid-a", "mid-b", "top-but-blocked", "low"]


def test_max_jobs_stops_claiming(queue, tmp_path):
    for i in range(3):
        submit(queue, f"e{i}", "echo")
    make_loop(queue, tmp_path, max_jobs=2).run(until_empty=True)
    assert queue.status_counts() == {"succeeded": 2, "queued": 1}


def test_worker_parent_never_imports_torch():
    code = ("import sys, scheduler.cli, scheduler.execute.worker, scheduler.execute.runner, scheduler.plan, jobs; "
            "[jobs.get_kind(k) for k in jobs.kind_names()]; "
            "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_killed_worker_leaves_no_child_and_its_job_runs_again_once(db_url, tmp_path):
    marker = tmp_path / "starts.txt"
    queue = JobQueue(db_url)
    job_id = submit(queue, "victim", "sleep", max_attempts=2, params={"seconds": 3, "marker": str(marker)})
    env = {**os.environ, "SCHED_DB": db_url}
    args = [sys.executable, "-m", "scheduler.cli", "worker", "--gpus", "none", "--lease", "2",
            "--heartbeat", "0.5", "--runs", str(tmp_path / "runs")]
    first = subprocess.Popen(args, env=env, cwd=tmp_path)
    deadline = time.monotonic() + 30
    while not (marker.exists() and queue.get(job_id).status == "running"):
        assert time.monotonic() < deadline, "job never started"
        time.sleep(0.1)
    before = set(runner_pids(first.pid))
    assert before
    first.send_signal(signal.SIGKILL)
    first.wait()
    wait_for(lambda: not before & set(runner_pids(first.pid)), 30, "the runner outlived its worker")
    # it died with its worker, not at the end of its job (a 3 s sleep prints "slept 3.0s" when done)
    assert "slept" not in Path(queue.get(job_id).log_path).read_text()
    assert queue.get(job_id).status == "running"  # until the lease expires
    second = subprocess.run(args + ["--until-empty"], env=env, cwd=tmp_path, timeout=60)
    assert second.returncode == 0
    row = queue.get(job_id)
    assert (row.status, row.attempts) == ("succeeded", 2)
    assert marker.read_text().split() == ["victim", "victim"]
    queue.dispose()


def test_status_shows_the_worker_and_the_running_job_with_progress(queue, tmp_path):
    from rich.console import Console

    from scheduler.render import status_view
    from scheduler.views import status_snapshot

    job_id = submit(queue, "napper", "sleep", params={"seconds": 3})
    submit(queue, "waiter", "echo", after=["napper"])
    loop = make_loop(queue, tmp_path)
    step_until(loop, lambda: queue.get(job_id).progress_done is not None)
    snap = status_snapshot(queue, all_jobs=False)
    assert [w["id"] for w in snap["workers"]] == [loop.worker_id]
    running = snap["running"][0]
    assert running["name"] == "napper" and running["progress"]["total"] == 60
    assert snap["queue"][0]["waiting_for"] == ["napper"]
    console = Console(record=True, width=120)
    console.print(status_view(snap))
    text = console.export_text()
    assert "napper" in text and "steps of 0.05 s" in text and "waiting for" in text
    loop.request_stop()
    step_until(loop, lambda: not loop.children)


def test_backfill_job_yields_to_a_higher_priority_job_and_resumes_later(queue, tmp_path):
    marker = tmp_path / "starts.txt"
    backfill = submit(queue, "backfill", "sleep", priority=-10, preemptible=True,
                      params={"seconds": 2.0, "marker": str(marker)})
    loop = make_loop(queue, tmp_path)
    step_until(loop, lambda: queue.get(backfill).progress_done is not None)  # running, handlers set
    urgent = submit(queue, "urgent", "echo", priority=5)
    step_until(loop, lambda: queue.get(urgent).status == "succeeded")
    row = queue.get(backfill)
    assert row.failure_kind == "preempted"  # it was asked to stop and queued again
    step_until(loop, lambda: queue.get(backfill).status == "succeeded")
    assert marker.read_text().split() == ["backfill", "backfill"]  # started again after `urgent`
    assert queue.get(backfill).attempts == 1  # the preemption did not spend an attempt


def test_a_job_that_is_not_preemptible_keeps_its_slot(queue, tmp_path):
    steady = submit(queue, "steady", "sleep", priority=-10, params={"seconds": 1.5})
    loop = make_loop(queue, tmp_path)
    step_until(loop, lambda: queue.get(steady).status == "running")
    urgent = submit(queue, "urgent", "echo", priority=5)
    step_until(loop, lambda: queue.get(steady).status == "succeeded")
    started = queue.get(urgent).started_at
    assert started is None or started >= queue.get(steady).finished_at  # it waited its turn
    assert queue.get(steady).failure_kind is None


def test_cpu_slots_share_the_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    slots = parse_slots("none", cpu_slots=2)
    assert [s.child_env(0)["OMP_NUM_THREADS"] for s in slots] == ["4", "4"]
    assert "OMP_NUM_THREADS" not in Slot("gpu0", 0).child_env(1)


def test_a_job_that_honours_the_stop_request_still_times_out(queue, tmp_path):
    # `sleep` sees should_stop() on SIGTERM and raises Preempted (exit 75): the timeout must win.
    job_id = submit(queue, "slow", "sleep", timeout_s=1.0, max_attempts=1, params={"seconds": 60})
    step_until(make_loop(queue, tmp_path), lambda: queue.get(job_id).status == "killed")
    assert queue.get(job_id).message == "timed out after 1s"


def test_programs_a_finished_job_left_behind_are_stopped(queue, tmp_path):
    marker = tmp_path / "bg.pid"
    code = f"import subprocess, sys; p = subprocess.Popen(['sleep', '120']); open({str(marker)!r}, 'w').write(str(p.pid))"
    job_id = submit(queue, "leaves-a-server", "shell", params={"argv": [sys.executable, "-c", code]})
    step_until(make_loop(queue, tmp_path), lambda: queue.get(job_id).status == "succeeded")
    leftover = int(marker.read_text())  # its 120 s sleep: gone (or a reaped-soon zombie) long before
    wait_for(lambda: not _running(leftover), 30, "a program the finished job left behind lives on")


def test_a_runs_folder_that_cannot_be_used_stops_claiming_and_burns_no_attempt(queue, tmp_path):
    from scheduler.views import status_snapshot

    blocker = tmp_path / "runs"
    blocker.write_text("a file where the runs folder should be")
    job_id = submit(queue, "homeless", "echo")
    loop = make_loop(queue, tmp_path, runs_root=blocker)
    for _ in range(3):
        loop.run_once()
    row = queue.get(job_id)
    assert (row.status, row.attempts) == ("queued", 0) and not loop.children
    (worker,) = status_snapshot(queue, all_jobs=False)["workers"]
    assert worker["problem"].startswith(f"{blocker}/ cannot be used")
    blocker.unlink()  # the folder can be made again: the worker claims again by itself
    step_until(loop, lambda: queue.get(job_id).status == "succeeded", timeout=60)
    assert queue.get(job_id).attempts == 1
    assert status_snapshot(queue, all_jobs=False)["workers"][0]["problem"] is None
    loop.close()


def test_a_database_error_in_a_step_is_retried_not_fatal(queue, tmp_path, monkeypatch):
    from sqlalchemy.exc import OperationalError

    job_id = submit(queue, "survivor", "echo")
    real_claim, calls = queue.claim, []

    def flaky_claim(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("claim", {}, Exception("database is locked"))
        return real_claim(*args, **kwargs)

    monkeypatch.setattr(queue, "claim", flaky_claim)
    make_loop(queue, tmp_path, poll_s=0.01).run(until_empty=True)
    assert queue.get(job_id).status == "succeeded" and len(calls) >= 2


def test_until_empty_does_not_stop_while_a_job_is_runnable(queue, tmp_path):
    # Another worker may finish a dependency between this worker's claim and its emptiness check.
    loop = make_loop(queue, tmp_path)
    loop.start()
    job_id = submit(queue, "just-unblocked", "echo")
    assert not loop._nothing_left()
    queue.cancel(job_id)
    assert loop._nothing_left()

"""sched's workers as Slurm jobs, against a real single-node Slurm (scripts/slurm-local.sh, which
.ci/run starts) and the real PostgreSQL. Without a Slurm these tests skip, unless
SCHED_REQUIRE_SLURM=1 (CI), where a missing Slurm fails them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scheduler.jobqueue import JobQueue, JobSpec
from scheduler.execute.slurm import Demand, WorkerJob, WorkerTemplate, plan_scale, workers_needed
from tests.conftest import drop_pg_database, fresh_pg_database

ROOT = Path(__file__).resolve().parents[1]
REQUIRE = os.environ.get("SCHED_REQUIRE_SLURM") == "1"


def _slurm_problem() -> str | None:
    if shutil.which("sinfo") is None:
        return "no Slurm client here (bash scripts/slurm-local.sh start)"
    done = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True, timeout=30)
    if done.returncode != 0 or not any(s in done.stdout for s in ("idle", "mix", "alloc")):
        return f"no Slurm node takes jobs ({done.stderr.strip() or done.stdout.strip()})"
    return None


@pytest.fixture
def slurm_pg(pg_server):
    problem = _slurm_problem()
    if problem:
        if REQUIRE:
            pytest.fail(f"Slurm required (SCHED_REQUIRE_SLURM=1): {problem}")
        pytest.skip(problem)
    url, name = fresh_pg_database(pg_server)
    yield url
    subprocess.run(["scancel", "--me", "--name", "sched-worker"], check=False)
    _wait_for(lambda: not _worker_jobs(), 60, "worker jobs left behind")
    drop_pg_database(name)


def _sched(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scheduler.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=env)


def _worker_jobs() -> list[dict]:
    return json.loads(_sched("slurm", "ls", "--json").stdout or "[]")


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def _up(url: str, runs: Path, *extra: str) -> None:
    done = _sched("--db", url, "slurm", "up", "--runs", str(runs), "--grace", "2", "--lease", "10", *extra)
    assert done.returncode == 0, done.stderr + done.stdout


# ---------------------------------------------------------------- scaling, pure

def test_workers_needed_and_the_scale_plan():
    work = Demand(gpu_jobs=[1, 1, 2, 4], cpu_jobs=3)
    assert workers_needed(work, gpus_per_worker=2, cpu_slots=1) == 3  # the 4-GPU job fits no 2-GPU worker
    assert workers_needed(Demand(cpu_jobs=5), gpus_per_worker=0, cpu_slots=2) == 3
    jobs = [WorkerJob("10", "RUNNING", "", "n1", "1:00", 0), WorkerJob("11", "PENDING", "Resources", "", "", 0),
            WorkerJob("12", "PENDING", "Priority", "", "", 0)]
    assert plan_scale(needed=6, jobs=jobs, minimum=0, maximum=5).submit == 2
    assert plan_scale(needed=1, jobs=jobs, minimum=0, maximum=5).cancel == ("12", "11")  # newest pending first
    assert plan_scale(needed=0, jobs=jobs, minimum=2, maximum=5).cancel == ("12",)


def test_the_batch_script_signals_in_time_and_holds_no_password(tmp_path):
    script = WorkerTemplate(db_url="postgresql+psycopg://me@db/exp", runs=tmp_path, gpus=2, time="4:00:00",
                            partition="gpu", grace_s=60, idle_exit="5m", sbatch_args=("--constraint=a100",)).script()
    assert "#SBATCH --signal=B:TERM@90" in script and "#SBATCH --gres=gpu:2" in script
    assert "#SBATCH --time=4:00:00" in script and "#SBATCH --constraint=a100" in script
    assert "exec " in script and "--gpus auto" in script and "--idle-exit 5m" in script
    from scheduler.execute.slurm import bare_url

    url = bare_url("postgresql://me:s3cret@db/exp")
    assert "s3cret" not in url and url.startswith("postgresql+psycopg://me@db/exp")
    assert "s3cret" not in WorkerTemplate(db_url=url, runs=tmp_path).script()


# ---------------------------------------------------------------- against a real Slurm

def test_up_two_workers_drain_thirty_jobs_exactly_once(slurm_pg, tmp_path):
    queue = JobQueue(slurm_pg)
    queue.submit([JobSpec(name=f"e{i}", kind="echo", params={}) for i in range(30)])
    _up(slurm_pg, tmp_path / "runs", "--workers", "2", "--cpus-per-task", "1", "--idle-exit", "5s")
    _wait_for(lambda: queue.status_counts().get("succeeded", 0) == 30, 180, "the Slurm workers did not drain it")
    rows = [queue.get(f"e{i}") for i in range(30)]
    assert all(r.attempts == 1 for r in rows)
    from scheduler.views import status_snapshot

    hosts = {w["id"]: w["host"] for w in status_snapshot(queue, all_jobs=True)["workers"]}
    used = {r.worker_id for r in rows}
    assert all("slurm job" in hosts.get(w, "slurm job (gone)") for w in used)
    _wait_for(lambda: not _worker_jobs(), 90, "idle workers did not exit (--idle-exit)")
    queue.dispose()


def test_gang_jobs_see_the_allocations_gpus_and_no_other(slurm_pg, tmp_path, monkeypatch):
    monkeypatch.setenv("SCHED_KINDS", "tests.gpu_kind")  # sbatch passes the environment on
    out = tmp_path / "seen"
    out.mkdir()
    queue = JobQueue(slurm_pg)
    queue.submit([JobSpec(name="pair", kind="gpu_probe", params={"out": str(out)}, gpus=2),
                  JobSpec(name="single", kind="gpu_probe", params={"out": str(out)}, gpus=1)])
    _up(slurm_pg, tmp_path / "runs", "--workers", "1", "--gpus-per-worker", "2", "--cpus-per-task", "1",
        "--idle-exit", "5s")
    _wait_for(lambda: queue.status_counts().get("succeeded", 0) == 2, 180, "the GPU jobs did not run")
    pair = json.loads((out / "pair.1.json").read_text())
    single = json.loads((out / "single.1.json").read_text())
    assert sorted(pair["CUDA_VISIBLE_DEVICES"].split(",")) == ["0", "1"]  # what Slurm gave the worker
    assert single["CUDA_VISIBLE_DEVICES"] in ("0", "1")
    queue.dispose()


def test_scancel_of_a_worker_preempts_its_job_and_another_worker_finishes_it(slurm_pg, tmp_path):
    queue = JobQueue(slurm_pg)
    queue.submit([JobSpec(name="long", kind="sleep", params={"seconds": 8}, max_attempts=1)])
    _up(slurm_pg, tmp_path / "runs", "--workers", "1", "--cpus-per-task", "1", "--idle-exit", "5s")
    _wait_for(lambda: queue.get("long").status == "running", 120, "never started")
    (first,) = [j["job_id"] for j in _worker_jobs() if j["state"] == "RUNNING"]
    subprocess.run(["scancel", first], check=True)
    _wait_for(lambda: queue.get("long").status == "queued", 60, "the job was not preempted")
    assert queue.get("long").failure_kind == "preempted"
    _up(slurm_pg, tmp_path / "runs", "--workers", "1", "--cpus-per-task", "1", "--idle-exit", "5s")
    _wait_for(lambda: queue.get("long").status == "succeeded", 120, "the job was not finished by another worker")
    assert queue.get("long").attempts == 1  # max_attempts 1: the preemption spent none
    queue.dispose()


def test_a_worker_near_its_time_limit_preempts_its_job_and_scale_replaces_it(slurm_pg, tmp_path):
    queue = JobQueue(slurm_pg)
    queue.submit([JobSpec(name="long", kind="sleep", params={"seconds": 40}, max_attempts=1)])
    runs = tmp_path / "runs"
    # a 1-minute limit: Slurm signals the worker 2 + 30 s before it (--grace 2 + the margin)
    _up(slurm_pg, runs, "--workers", "1", "--cpus-per-task", "1", "--time", "1", "--idle-exit", "5s")
    _wait_for(lambda: queue.get("long").status == "running", 120, "never started")
    _wait_for(lambda: queue.get("long").status == "queued", 90, "not preempted before the time limit")
    assert queue.get("long").failure_kind == "preempted"
    done = _sched("--db", slurm_pg, "slurm", "scale", "--once", "--max", "1", "--runs", str(runs), "--cpus-per-task",
                  "1", "--grace", "2", "--idle-exit", "5s")
    assert done.returncode == 0 and "submitted 1" in done.stdout, done.stdout + done.stderr
    _wait_for(lambda: queue.get("long").status == "succeeded", 150, "the replacement did not finish it")
    assert queue.get("long").attempts == 1
    queue.dispose()


def test_scale_follows_the_queue_up_and_down(slurm_pg, tmp_path):
    queue = JobQueue(slurm_pg)
    queue.submit([JobSpec(name=f"s{i}", kind="sleep", params={"seconds": 30}) for i in range(4)])
    runs = str(tmp_path / "runs")
    args = ["--db", slurm_pg, "slurm", "scale", "--once", "--max", "2", "--runs", runs, "--idle-exit", "5s"]
    # 2 CPUs per worker on a 2-CPU node: one runs, the other waits for resources (pending)
    done = _sched(*args, "--cpus-per-task", "2")
    assert "submitted 2" in done.stdout, done.stdout + done.stderr
    _wait_for(lambda: sum(j["state"] == "RUNNING" for j in _worker_jobs()) == 1, 60, "no worker started")
    assert [j["state"] for j in _worker_jobs()].count("PENDING") == 1
    for i in range(4):
        queue.cancel(queue.resolve(f"s{i}"))
    done = _sched(*args, "--cpus-per-task", "2")
    assert "cancelled 1 pending" in done.stdout, done.stdout
    _wait_for(lambda: not _worker_jobs(), 90, "the idle worker did not exit")
    queue.dispose()


def test_slurm_refuses_sqlite_and_names_a_missing_command(tmp_path):
    done = _sched("--db", f"sqlite:///{tmp_path / 'q.db'}", "slurm", "up")
    assert done.returncode != 0 and "needs a PostgreSQL queue" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}  # python, and no Slurm
    done = _sched("slurm", "ls", env=env)
    assert done.returncode != 0 and "needs Slurm's `squeue` on PATH" in done.stderr + done.stdout

"""Data-parallel jobs: a kind with `data_parallel` given k processes (SCHED_PROCESSES=k, which the
worker sets for a job on k GPUs) runs as k ranks under torchrun; rank 0 alone records.

The protocol (what each rank records and reads, how failures, input errors and stops reach the
queue) is checked with a torch-free test kind (tests/dp_kind.py), in seconds. A real fine-tune on
two CPU processes (gloo) checks the ML side: it succeeds, records each metric once, and takes half
the optimizer steps per epoch of one process on the same data.
"""

from __future__ import annotations

import json
import math
import os
import signal
from collections import Counter
from pathlib import Path

import pytest

from pipeline import distributed
from scheduler.jobqueue import JobQueue
from scheduler.execute.ranks import PASSWORD_ENV, SPEC_FILE, read_endings
from scheduler.records import Records
from scheduler.execute.runner import PREEMPTED_EXIT
from scheduler.execute.slots import Slot
from scheduler.execute.worker import WorkerLoop, WorkerOptions
from tests.helpers import review_sample, step_until, submit


@pytest.fixture
def dp_kind(monkeypatch, tmp_path):
    monkeypatch.setenv("SCHED_KINDS", "tests.dp_kind")
    monkeypatch.setenv("SCHED_PROCESSES", "2")  # the worker's runners get it (a CPU slot sets none)
    monkeypatch.setenv("SCHED_CACHE_DIR", str(tmp_path / "token-cache"))


def make_loop(queue, tmp_path, **extra):
    options = WorkerOptions(runs_root=tmp_path / "runs", heartbeat_s=0.2, lease_s=60, stop_grace_s=60, poll_s=0.05,
                            **extra)
    return WorkerLoop(queue, [Slot("cpu0", None)], options)


def drain(queue, tmp_path, timeout: float = 120) -> None:
    loop = make_loop(queue, tmp_path)
    try:
        step_until(loop, lambda: not queue.status_counts().get("queued") and not loop.children, timeout)
    finally:
        loop.close()


def metric_rows(url: str, name: str) -> list[dict]:
    records = Records(JobQueue(url))
    return records.job(name).history


# ---- pipeline.distributed without a process group ----------------------------------------------


def test_distributed_helpers_answer_from_the_environment_without_a_process_group(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    ran = []
    with distributed.main_first():  # one process: nobody to wait for
        ran.append("block")
    distributed.barrier()
    assert ran == ["block"] and distributed.any_rank(True) and not distributed.any_rank(False)

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun's environment, before any group is started
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (1, 2, False)


# ---- the protocol, with a torch-free kind ------------------------------------------------------


def test_each_rank_runs_and_reads_but_rank_0_alone_records(dp_kind, tmp_path, pg_server):
    # A password travels from the worker to rank 0's database connection, never through a file.
    from sqlalchemy.engine import make_url

    from tests.conftest import drop_pg_database, fresh_pg_database

    bare, name = fresh_pg_database(pg_server)
    url = make_url(bare).set(password="s3cret-pw").render_as_string(hide_password=False)  # trust auth ignores it
    queue = JobQueue(url)
    try:
        submit(queue, "dp", "dpcheck")
        drain(queue, tmp_path, timeout=90)
        job = queue.get("dp")
        assert job.status == "succeeded", job.error
        folder = Path(job.output_dir)
        seen = [json.loads((folder / f"seen-{rank}.json").read_text()) for rank in (0, 1)]
        assert [(s["rank"], s["world"], s["own_record"]) for s in seen] == [(0, 2, "dp"), (1, 2, "dp")]
        assert [s["password"] for s in seen] == ["s3cret-pw", "s3cret-pw"]  # each rank's URL has it
        assert [s["env_with_password"] for s in seen] == [[], []]  # no variable's value holds it
        assert [s["started_with_password"] for s in seen] == [False, False]  # nor the environment it started with
        assert "s3cret-pw" not in (folder / SPEC_FILE).read_text()
        rows = metric_rows(url, "dp")
        assert [(m["key"], m["value"]) for m in rows] == [("rank_says", 0.0)]  # once, by rank 0
        assert set(Records(queue).job("dp").artifacts) == {"from_rank_0"}
        assert {r: e.code for r, e in read_endings(folder).items()} == {0: 0, 1: 0}
        assert (folder / "rank-1.log").exists()  # rank 1's output; the job's log is rank 0's
    finally:
        queue.dispose()
        drop_pg_database(name)


def test_a_failing_rank_fails_the_job_with_its_reason(dp_kind, sqlite_url, tmp_path):
    queue = JobQueue(sqlite_url)
    submit(queue, "dp-fail", "dpcheck", max_attempts=1, params={"fail_rank": 1})
    drain(queue, tmp_path, timeout=90)
    job = queue.get("dp-fail")
    assert job.status == "failed"
    assert job.error == "rank 1 (log: rank-1.log): ValueError: rank 1 was told to fail"
    queue.dispose()


def test_an_input_error_in_a_rank_is_not_retried(dp_kind, sqlite_url, tmp_path):
    queue = JobQueue(sqlite_url)
    submit(queue, "dp-input", "dpcheck", max_attempts=3, params={"input_error_rank": 0})
    drain(queue, tmp_path, timeout=90)
    job = queue.get("dp-input")
    assert (job.status, job.attempts) == ("failed", 1)  # exit 65: retrying cannot help
    assert job.error == "InputError: rank 0 found its inputs wrong"
    queue.dispose()


def test_a_stop_request_reaches_every_rank_and_the_job_is_preempted(dp_kind, sqlite_url, tmp_path):
    queue = JobQueue(sqlite_url)
    submit(queue, "dp-stop", "dpcheck", params={"wait_for_stop": True})
    loop = make_loop(queue, tmp_path, max_jobs=1)  # the preempted job, queued again, is not taken again

    def folder() -> Path:
        return Path(queue.get("dp-stop").output_dir or tmp_path / "not-started")

    try:
        step_until(loop, lambda: all((folder() / f"seen-{r}.json").exists() for r in (0, 1)), timeout=90)
        # What the worker's preemption sends: SIGUSR1 to the runner alone, which passes it on.
        # The worker records no reason of its own here, so the ending comes from the exit code.
        (child,) = loop.children.values()
        os.kill(child.runner.pid, signal.SIGUSR1)
        step_until(loop, lambda: not loop.children, timeout=60)
    finally:
        loop.close()
    endings = read_endings(folder())
    assert {r: e.code for r, e in endings.items()} == {0: PREEMPTED_EXIT, 1: PREEMPTED_EXIT}
    assert queue.get("dp-stop").status == "queued"  # preempted: queued again
    assert "preempted: rank 0 stopped on request" in Path(queue.get("dp-stop").log_path).read_text()
    queue.dispose()


def test_ranks_pop_the_password_before_anything_else(monkeypatch, tmp_path):
    # The variable is gone from the rank's environment, so nothing the job starts inherits it.
    from scheduler.execute import ranks

    secret = tmp_path / "secret"
    secret.write_text("pw")
    monkeypatch.setenv(PASSWORD_ENV, str(secret))
    monkeypatch.setattr(ranks.signal, "signal", lambda *a: None)
    with pytest.raises(SystemExit):
        ranks.main([])  # no spec: usage
    assert PASSWORD_ENV not in os.environ


# ---- a real fine-tune on two CPU processes -----------------------------------------------------

FINETUNE = {"test": None, "epochs": 1, "batch_size": 16, "max_length": 32, "precision": "fp32",
            "val_fraction": 0.2, "lr": 2e-3, "not_learning_epoch": 0}


def _steps_per_epoch(url: str, name: str) -> int:
    """The optimizer step at which the first epoch's validation was logged."""
    return next(int(m["step"]) for m in metric_rows(url, name) if m["key"] == "accuracy" and m["split"] == "val")


@pytest.mark.slow
def test_a_finetune_on_two_processes_records_once_and_takes_half_the_steps(tmp_path, sqlite_url, monkeypatch):
    monkeypatch.setenv("SCHED_CACHE_DIR", str(tmp_path / "token-cache"))
    params = {"train": str(review_sample(tmp_path, 50)), **FINETUNE}  # 200 rows: 160 train, 40 val
    queue = JobQueue(sqlite_url)
    for name, processes in (("ft-1", "1"), ("ft-2", "2")):
        monkeypatch.setenv("SCHED_PROCESSES", processes)
        submit(queue, name, "finetune", max_attempts=1, params=params)
        drain(queue, tmp_path, timeout=240)
        assert queue.get(name).status == "succeeded", queue.get(name).error

    folder = Path(queue.get("ft-2").output_dir)
    assert {r: e.code for r, e in read_endings(folder).items()} == {0: 0, 1: 0}  # two ranks ran
    rows = metric_rows(sqlite_url, "ft-2")
    repeats = [key for key, n in Counter((m["key"], m["step"], m["split"]) for m in rows).items() if n > 1]
    assert not repeats, repeats  # each metric once: rank 1 recorded nothing
    assert {"val_accuracy", "val_f1", "epochs_run", "loss"} <= {m["key"] for m in rows}
    artifacts = Records(queue).job("ft-2").artifacts
    assert {"model", "val_logits", "val_predictions", "result"} <= set(artifacts)
    assert Path(artifacts["val_logits"]).exists()
    # Per-device batch stays 16: two processes share an epoch, each taking half of its batches.
    single, double = _steps_per_epoch(sqlite_url, "ft-1"), _steps_per_epoch(sqlite_url, "ft-2")
    assert single == math.ceil(160 / 16) and double == math.ceil(single / 2)
    queue.dispose()

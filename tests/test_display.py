"""Readable on any terminal: at 80 and 160 columns no job name is broken across lines, tables drop
low-value columns before they wrap, paths keep their file names, numbers have units; a worker
whose output pipe closes still stops cleanly; an expired lease is pointed out."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from rich.cells import cell_len
from rich.console import Console
from sqlalchemy import update

from scheduler.jobqueue import JobQueue, JobSpec
from scheduler.records import Records
from scheduler.render import job_view, jobs_table, progress_text, results_table, status_view
from scheduler.results import leaderboard
from scheduler.store.engine import db_now
from scheduler.store.schema import jobs
from scheduler.tables import compact_names, cut_left, cut_middle
from scheduler.views import job_detail, job_dict, status_snapshot

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["klue/roberta-base", "klue/bert-base", "kykim/bert-kor-base", "beomi/kcbert-base",
          "monologg/koelectra-base-v3"]
NAMES = [f"demo-1130-003201-finetune-{m}-seed{s}" for m in MODELS for s in (1, 2)]


def render(renderable, width: int) -> list[str]:
    console = Console(width=width, record=True, force_terminal=False, color_system=None)
    console.print(renderable)
    return console.export_text().splitlines()


def data_rows(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("│")]


@pytest.fixture
def campaign(sqlite_url):
    queue = JobQueue(sqlite_url)
    queue.submit([JobSpec(name=n, kind="finetune", tags=["demo"], params={"model": n.split("finetune-")[1][:-6],
                                                                            "lr": 2e-5 * (i + 1)})
                  for i, n in enumerate(NAMES)])
    worker = queue.register_worker("gpu-host-with-a-long-name", 1, ["gpu0", "gpu1"])
    records = Records(queue)
    for i in range(6):
        job = queue.claim(worker, "gpu0", 1)
        records.log_metric(job.id, "val_accuracy", 0.5 + i / 100)
        records.log_metric(job.id, "val_f1", 0.4 + i / 100)
        records.log_metric(job.id, "epochs_run", 3)
        if i % 2:
            queue.fail(job.id, worker, message="CUDA out of memory while training " + "x" * 100)
        else:
            queue.succeed(job.id, worker)
    running = queue.claim(worker, "gpu1", 1)
    records.set_progress(running.id, 0.465116, 3, "trials · trial 0: step 20/43")
    yield queue
    queue.dispose()


@pytest.mark.parametrize("width", [80, 160])
def test_no_name_is_broken_across_lines(campaign, width):
    snap = status_snapshot(campaign, all_jobs=False)
    views = {
        "status": (status_view(snap, width=width), [j["name"] for j in snap["running"] + snap["queue"]]),
        "results": (results_table(leaderboard(campaign), None, width=width), NAMES),
        "ls": (jobs_table([job_dict(r) for r in campaign.find()], width=width), NAMES),
    }
    for view, (renderable, names) in views.items():
        lines = render(renderable, width)
        assert all(len(line) <= width for line in lines), view
        rows = data_rows(lines)
        for name in names:
            tail = name[-14:]  # the distinguishing end of every name is on one line
            assert any(tail in row for row in rows), (view, width, name)
        if view in ("results", "ls"):
            assert len(rows) == len(names), (view, width)  # one line per job: nothing wrapped


def test_narrow_tables_drop_columns_before_wrapping(campaign):
    wide = render(results_table(leaderboard(campaign), None, width=220), 220)
    narrow = render(results_table(leaderboard(campaign), None, width=80), 80)
    assert "params" in " ".join(wide) and "val accuracy" in " ".join(narrow)
    assert "params" not in " ".join(narrow)  # the least useful column went first


def test_compact_names_drop_the_common_start_and_cut_the_middle():
    names, start = compact_names(NAMES[::2], 30)
    assert start == "demo-1130-003201-finetune-"
    assert names[0] == "…klue/roberta-base-seed1" and len(set(names)) == 5
    assert cut_middle("demo-1130-003201-finetune-beomi/kcbert-base-seed3", 24) == "demo-11…cbert-base-seed3"
    assert cut_left("/very/long/path/to/runs/00042-finetune/model.safetensors", 30).endswith("model.safetensors")
    cut = cut_middle("한국어 리뷰 감성 분석 모델 미세조정", 12)  # wide characters count double
    assert cut == "한… 미세조정" and cell_len(cut) == 12  # 7 characters fill the 12 cells


def test_numbers_have_units_and_sensible_rounding(campaign):
    assert progress_text({"done": 0.465116, "total": 3, "message": "trials · trial 0"}) == "0.5/3 trials · trial 0"
    assert progress_text({"done": 120, "total": 400, "message": "steps · epoch 1.2/3"}) == "120/400 steps · epoch 1.2/3"
    text = "\n".join(render(status_view(status_snapshot(campaign, all_jobs=False), width=160), 160))
    assert "0.5/3 trials" in text and "0.465116" not in text


def test_show_keeps_the_end_of_long_paths(campaign, tmp_path):
    job = campaign.get(NAMES[0])
    Records(campaign).add_artifact(job.id, "model", "/" + "/".join(["deep"] * 30) + "/00001-ft/model.safetensors")
    lines = render(job_view(job_detail(campaign, job.id), width=80), 80)
    (row,) = [line for line in lines if line.startswith("│ model ")]  # the path on one line, not wrapped:
    assert re.fullmatch(r"│ model +│ …/(deep/)+00001-ft/model\.safetensors │", row.rstrip()), row  # its end kept
    assert all(len(line) <= 80 for line in lines)


def test_status_points_out_a_running_job_whose_lease_expired(campaign):
    running = campaign.find(statuses=["running"])[0]
    with campaign.write() as conn:
        expired = db_now(conn) - timedelta(seconds=40)
        conn.execute(update(jobs).where(jobs.c.id == running.id).values(lease_until=expired))
    snap = status_snapshot(campaign, all_jobs=False)
    assert snap["expired"] == [running.id]
    text = "\n".join(render(status_view(snap, width=160), 160))
    assert "lost? lease expired 4" in text and "1 running job(s) with an expired lease" in text


def test_watch_fits_the_terminal_height_and_keeps_failures(campaign):
    snap = status_snapshot(campaign, all_jobs=False)
    lines = render(status_view(snap, width=120, height=30), 120)
    assert len(lines) <= 30
    assert "Failures" in "\n".join(lines)


def test_a_worker_whose_pipe_closes_still_stops_and_requeues_its_job(sqlite_url, tmp_path):
    queue = JobQueue(sqlite_url)
    queue.submit([JobSpec(name="long", kind="sleep", params={"seconds": 60})])
    worker = subprocess.Popen(
        [sys.executable, "-m", "scheduler.cli", "--db", sqlite_url, "worker", "--gpus", "none", "--runs",
         str(tmp_path / "runs"), "--grace", "5"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while queue.get("long").progress_done is None:
        assert time.monotonic() < deadline, "job never started"
        time.sleep(0.1)
    worker.stdout.close()  # `sched worker | tee log`, then Ctrl-C: tee is gone
    worker.stderr.close()
    worker.send_signal(signal.SIGINT)
    assert worker.wait(timeout=60) == 0
    row = queue.get("long")
    assert (row.status, row.failure_kind, row.attempts) == ("queued", "preempted", 0)
    queue.dispose()


def test_log_headers_name_the_job(sqlite_url, tmp_path):
    from scheduler.execute.slots import Slot
    from scheduler.execute.worker import WorkerLoop, WorkerOptions
    from tests.helpers import step_until

    queue = JobQueue(sqlite_url)
    job_id = queue.submit([JobSpec(name="finetune-klue/bert-base", kind="echo")])[0]
    loop = WorkerLoop(queue, [Slot("cpu0", None)], WorkerOptions(runs_root=tmp_path / "runs", poll_s=0.05))
    step_until(loop, lambda: queue.get(job_id).status == "succeeded")
    first = Path(queue.get(job_id).log_path).read_text().splitlines()[0]
    assert first.startswith(f"=== finetune-klue/bert-base #{job_id} echo(")
    queue.dispose()
    assert os.environ.get("SCHED_RUN_TOKEN") is None

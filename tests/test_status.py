"""`sched status` over a database holding a job in every state, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import operator
import time
from datetime import timedelta

import pytest
from click.testing import CliRunner
from rich.console import Console
from sqlalchemy import func, select, update

from scheduler.cli import cli
from scheduler.jobqueue import JobSpec
from scheduler.records import Records
from scheduler.render import status_view
from scheduler.store import busy
from scheduler.store.schema import jobs
from scheduler.views import status_snapshot


def spec(name, **kw):
    return JobSpec(name=name, kind="echo", **kw)


@pytest.fixture
def busy_queue(queue):
    """One job in each state, a worker with a GPU slot and NVML readings, metrics and progress."""
    worker = queue.register_worker("gpu-host", 4242, ["gpu0", "gpu1"])
    queue.worker_heartbeat(worker, gpu_stats=[{"gpu": 0, "util": 87, "mem_used": 30_000, "mem_total": 81_920}])
    queue.submit([spec("done"), spec("bad"), spec("killed-one"), spec("lost-one"), spec("train", gpus=1),
                  spec("cancel-me"), spec("after-bad", after=["bad"]), spec("after-train", after=["train"]),
                  spec("wants-gpu", gpus=1, priority=-1)])
    records = Records(queue)
    for name, ending in (("done", "succeed"), ("bad", "fail"), ("killed-one", "kill"), ("lost-one", "lose")):
        job = queue.claim(worker, "gpu0", 1)
        assert job.name == name
        if ending == "succeed":
            records.log_metric(job.id, "val_accuracy", 0.6125)
            queue.succeed(job.id, worker)
            finished = queue.get(job.id).finished_at
            with queue.write() as conn:  # it ran for the last 30 minutes (written around the API:
                conn.execute(update(jobs).where(jobs.c.id == job.id)  # so the busy buckets are rebuilt)
                             .values(started_at=finished - timedelta(minutes=30)))
                busy.rebuild(conn)
        elif ending == "fail":
            queue.fail(job.id, worker, message="ValueError: label 7 out of range\nmore lines")
        elif ending == "kill":
            queue.fail(job.id, worker, kind="killed", message="timed out after 60s")
        else:
            with queue.write() as conn:
                conn.execute(update(jobs).where(jobs.c.id == job.id)
                             .values(lease_until=jobs.c.started_at - timedelta(hours=1)))
            queue.requeue_stale()
    train = queue.claim(worker, "gpu1", 1)
    records.set_progress(train.id, 30, 120, "epoch 0.75")
    records.log_metric(train.id, "loss", 0.9876, step=30, split="train")
    queue.cancel(queue.resolve("cancel-me"))
    return queue, worker, train


def test_snapshot_has_every_part(busy_queue):
    queue, worker, train = busy_queue
    snap = status_snapshot(queue, all_jobs=False)
    assert snap["counts"] == {"queued": 2, "running": 1, "succeeded": 1, "failed": 1, "killed": 1, "lost": 1,
                              "upstream_failed": 1, "cancelled": 1}
    running = snap["running"][0]
    assert running["name"] == "train" and running["latest_metric"]["key"] == "loss"
    assert running["eta_s"] is not None and running["eta_s"] >= 0
    slots = {s["slot"]: s for s in snap["workers"][0]["slot_use"]}
    assert slots["gpu1"]["job"] == "train" and slots["gpu0"]["job"] is None
    assert slots["gpu0"]["gpu_stats"]["util"] == 87
    why = {j["name"]: j["why"] for j in snap["queue"]}
    assert why == {"after-train": "waiting for train", "wants-gpu": "next free slot"}
    assert [j["name"] for j in snap["queue"]] == ["after-train", "wants-gpu"]  # claim order
    recent = {j["name"]: j for j in snap["recent"]}
    assert recent["done"]["score"] == {"key": "val_accuracy", "value": pytest.approx(0.6125)}
    # what the user cancelled is not a failure (issue 22): it is among the recent endings only
    assert {j["name"] for j in snap["failures"]} == {"bad", "killed-one", "lost-one", "after-bad"}
    assert snap["busy"]["kind"] == "gpu" and snap["busy"]["slots"] == 2
    # 30 of 120 slot-minutes in the last hour (the other jobs ran for milliseconds)
    assert snap["busy"]["last_hour"] == pytest.approx(0.25, abs=0.01)
    assert snap["busy"]["last_day"] == pytest.approx(0.25 / 24, abs=0.001)


def test_rendering_shows_each_section(busy_queue):
    queue, *_ = busy_queue
    console = Console(record=True, width=160)
    console.print(status_view(status_snapshot(queue, all_jobs=False), width=160))
    text = console.export_text()
    for expected in ("gpu-host", "87%", "epoch 0.75", "loss 0.988", "waiting for train", "0.6125",
                     "ValueError: label 7 out of range", "timed out after 60s", "GPU busy", "Failures"):
        assert expected in text, expected
    assert "more lines" not in text  # one line per failure


def test_drained_queue_says_so(busy_queue):
    queue, *_ = busy_queue
    queue.drain()
    snap = status_snapshot(queue, all_jobs=False)
    assert snap["queue"][1]["why"] == "queue drained (sched resume)"


def test_json_shape(busy_queue, db_url):
    result = CliRunner().invoke(cli, ["--db", db_url, "status", "--json"])
    assert result.exit_code == 0, result.output
    snap = json.loads(result.output)
    assert set(snap) >= {"counts", "jobs", "workers", "running", "queue", "recent", "failures", "busy"}
    assert len(snap["jobs"]) == 9
    for job in snap["jobs"]:
        assert set(job) >= {"id", "name", "kind", "status", "priority", "attempts", "progress"}
    limited = json.loads(CliRunner().invoke(cli, ["--db", db_url, "status", "--json", "--limit", "3"]).output)
    assert [j["name"] for j in limited["jobs"]] == ["after-bad", "after-train", "wants-gpu"]


def test_busy_buckets_follow_every_ending_through_the_api(queue):
    """Each ending adds its attempt's time to sched_busy as it happens; the buckets then agree with
    a rebuild from the jobs' rows."""
    worker = queue.register_worker("h", 1, ["gpu0"])
    queue.submit([spec(f"j{i}", gpus=1) for i in range(4)])
    endings = [lambda j: queue.succeed(j.id, worker), lambda j: queue.fail(j.id, worker, message="x"),
               lambda j: (queue.cancel(j.id), queue.finish_cancel(j.id, worker)),
               lambda j: queue.fail(j.id, worker, kind="killed", message="y")]
    for end in endings:
        job = queue.claim(worker, "gpu0", 1)
        time.sleep(0.05)
        end(job)
    with queue.read() as conn:
        now = conn.execute(select(func.max(jobs.c.finished_at))).scalar() + timedelta(seconds=1)
        live = busy.used_seconds(conn, now - timedelta(days=1), now, gpu_only=True)
    with queue.write() as conn:
        busy.rebuild(conn)
        rebuilt = busy.used_seconds(conn, now - timedelta(days=1), now, gpu_only=True)
    assert live == pytest.approx(rebuilt, abs=0.01) and live >= 0.2


def _frozen_snapshots(queue, monkeypatch, **options) -> tuple[dict, dict]:
    """The snapshot through SQLAlchemy and through the SQLite file read directly, at one instant."""
    from scheduler.store.location import sqlite_file
    from scheduler.store.reads import SqlReads
    from scheduler.store.sqlite_reads import SqliteReads, SqliteStatus

    with queue.status_reads() as r:
        instant = r.now()
    monkeypatch.setattr(SqlReads, "now", lambda self: instant)
    monkeypatch.setattr(SqliteReads, "now", lambda self: instant)
    direct = SqliteStatus.open(sqlite_file(queue.url))
    assert direct is not None
    try:
        return status_snapshot(queue, **options), status_snapshot(direct, **options)
    finally:
        direct.dispose()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_sqlite_file_read_directly_gives_the_same_snapshot(busy_queue, monkeypatch):
    """`sched status` reads a SQLite file without SQLAlchemy (store/sqlite_reads.py): every part of
    the snapshot, the JSON job list and the busy windows included, is what the queries of
    store/queries.py give."""
    queue, worker, train = busy_queue
    Records(queue).log_metric(train.id, "loss", 0.5, step=60, split="train")  # a later metric wins
    via_sqlalchemy, direct = _frozen_snapshots(queue, monkeypatch, all_jobs=True, jobs_limit=5)
    assert direct == via_sqlalchemy
    assert direct["recent"] and direct["queue"] and direct["busy"]["last_hour"] > 0 and len(direct["jobs"]) == 5
    queue.drain()
    assert operator.eq(*_frozen_snapshots(queue, monkeypatch, all_jobs=False))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_sqlite_file_to_upgrade_is_not_read_directly(queue):
    """Only a file at the newest revision is read without the queue: an older one goes through
    JobQueue, which upgrades it (with its backup) as every command does."""
    from scheduler.store.location import sqlite_file
    from scheduler.store.sqlite_reads import SqliteStatus

    path = sqlite_file(queue.url)
    with queue.write() as conn:
        conn.exec_driver_sql("UPDATE sched_alembic_version SET version_num = '0007'")
    assert SqliteStatus.open(path) is None
    assert SqliteStatus.open(path.with_name("absent.db")) is None and not path.with_name("absent.db").exists()

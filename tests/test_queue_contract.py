"""The queue's contract, run against SQLite (a file) and a real PostgreSQL database."""

from __future__ import annotations

import multiprocessing
from collections import Counter
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select, text, update

from scheduler.errors import InvalidTransition, PlanError
from scheduler.jobqueue import JobQueue, JobSpec
from scheduler.store.migrate import SchemaVersionError
from scheduler.store.schema import jobs, meta


def spec(name, priority=0, after=(), gpus=0, max_attempts=1, kind="echo"):
    # retry_delay_s=0: a failed attempt is claimable again at once (tests/test_rough_edges.py has the delay)
    return JobSpec(name=name, kind=kind, priority=priority, after=list(after), gpus=gpus,
                   max_attempts=max_attempts, retry_delay_s=0)


def drain_order(queue, worker, slot_gpus=0):
    """Claim and succeed until nothing is runnable; the names in the order they ran."""
    order = []
    while (job := queue.claim(worker, "cpu0", slot_gpus)) is not None:
        order.append(job.name)
        assert queue.succeed(job.id, worker)
    return order


@pytest.fixture
def worker(queue):
    return queue.register_worker("test-host", 1, ["cpu0"])


class HandClock:
    """The queue's clock (by which every lease is judged), moved only by the test: a lease expires
    when the test says so, not when a loaded machine gets round to the next statement."""

    def __init__(self, start: datetime):
        self.time = start

    def now(self, conn=None) -> datetime:
        return self.time

    def advance(self, seconds: float) -> None:
        self.time += timedelta(seconds=seconds)


@pytest.fixture
def clock(queue, monkeypatch):
    from scheduler.store.engine import db_now

    with queue.read() as conn:
        hand = HandClock(db_now(conn))
    monkeypatch.setattr(queue.clock, "now", hand.now)  # the one clock of the queue and its hot path
    monkeypatch.setattr(queue.clock, "stale", lambda: False)
    return hand


def status_of(queue, name):
    return queue.get(name).status


def test_priority_order_and_fifo_among_equals(queue, worker):
    queue.submit([spec("low", 1), spec("high-a", 10), spec("mid", 5), spec("high-b", 10), spec("low-b", 1)])
    assert drain_order(queue, worker) == ["high-a", "high-b", "mid", "low", "low-b"]


def test_dependencies_wait_until_all_succeeded(queue, worker):
    queue.submit([spec("a"), spec("b"), spec("c", priority=100, after=["a", "b"])])
    first = queue.claim(worker, "cpu0", 0)
    assert first.name == "a"  # c has the top priority but waits for a and b
    second = queue.claim(worker, "cpu0", 0)
    assert second.name == "b"
    assert queue.claim(worker, "cpu0", 0) is None  # a and b still running
    queue.succeed(first.id, worker)
    assert queue.claim(worker, "cpu0", 0) is None  # b not done yet
    queue.succeed(second.id, worker)
    assert queue.claim(worker, "cpu0", 0).name == "c"


def test_dependency_on_a_job_already_in_the_queue(queue, worker):
    queue.submit([spec("prep")])
    queue.submit([spec("train", after=["prep"])])
    assert drain_order(queue, worker) == ["prep", "train"]


def test_gpu_jobs_need_a_gpu_slot(queue, worker):
    queue.submit([spec("gpu-job", priority=10, gpus=1), spec("cpu-job")])
    assert queue.claim(worker, "cpu0", 0).name == "cpu-job"
    assert queue.claim(worker, "cpu0", 0) is None
    assert queue.claim(worker, "gpu0", 1).name == "gpu-job"


def test_final_failure_marks_every_downstream_job_upstream_failed(queue, worker):
    queue.submit([spec("tapt"), spec("finetune", after=["tapt"]), spec("ensemble", after=["finetune"]),
                  spec("other")])
    job = queue.claim(worker, "cpu0", 0)
    assert queue.fail(job.id, worker, message="boom") == "failed"
    for name in ("finetune", "ensemble"):
        row = queue.get(name)
        assert row.status == "upstream_failed"
        assert "'tapt'" in row.message and "failed" in row.message
    assert drain_order(queue, worker) == ["other"]


def test_failure_with_attempts_left_goes_back_to_the_queue(queue, worker):
    queue.submit([spec("flaky", max_attempts=2), spec("after-flaky", after=["flaky"])])
    job = queue.claim(worker, "cpu0", 0)
    assert queue.fail(job.id, worker, message="first try") == "queued"
    assert status_of(queue, "after-flaky") == "queued"
    again = queue.claim(worker, "cpu0", 0)
    assert again.id == job.id and again.attempts == 2
    assert queue.fail(again.id, worker, kind="killed", message="second try") == "killed"
    assert status_of(queue, "after-flaky") == "upstream_failed"


def test_finish_is_guarded_by_owner_and_state(queue, worker):
    other = queue.register_worker("other-host", 2, ["cpu0"])
    queue.submit([spec("a")])
    job = queue.claim(worker, "cpu0", 0)
    assert not queue.succeed(job.id, other)  # not its job
    assert queue.succeed(job.id, worker)
    assert not queue.succeed(job.id, worker)  # already succeeded
    assert queue.fail(job.id, worker) is None


def test_cancel_queued_job_at_once_and_running_job_through_its_worker(queue, worker):
    queue.submit([spec("running"), spec("queued"), spec("child", after=["queued"])])
    job = queue.claim(worker, "cpu0", 0)
    assert queue.cancel(queue.resolve("queued")) == "cancelled"
    assert status_of(queue, "child") == "upstream_failed"
    assert queue.cancel(job.id) == "running"
    reply = queue.heartbeat(job.id, worker)
    assert reply.lease_held and reply.cancel_requested
    assert queue.finish_cancel(job.id, worker)
    assert status_of(queue, "running") == "cancelled"
    with pytest.raises(InvalidTransition, match="cancelled"):
        queue.cancel(job.id)


def test_retry_requeues_the_job_and_its_upstream_failed_dependents(queue, worker):
    queue.submit([spec("a"), spec("b", after=["a"]), spec("c", after=["b"])])
    job = queue.claim(worker, "cpu0", 0)
    queue.fail(job.id, worker, message="bad")
    assert sorted(queue.retry(job.id)) == sorted(queue.resolve(n) for n in ("a", "b", "c"))
    assert queue.get("a").attempts == 0
    assert drain_order(queue, worker) == ["a", "b", "c"]
    with pytest.raises(InvalidTransition, match="succeeded"):
        queue.retry(job.id)


def test_reprioritize_changes_claim_order(queue, worker):
    queue.submit([spec("first"), spec("second")])
    queue.reprioritize(queue.resolve("second"), 7)
    assert drain_order(queue, worker) == ["second", "first"]
    with pytest.raises(InvalidTransition):
        queue.reprioritize(queue.resolve("first"), 1)


def test_stale_lease_is_requeued_then_lost_when_no_attempt_is_left(queue, worker, clock):
    queue.submit([spec("once", max_attempts=1), spec("twice", max_attempts=2),
                  spec("needs-once", after=["once"])])
    a = queue.claim(worker, "cpu0", 0, lease_s=60)
    b = queue.claim(worker, "cpu0", 0, lease_s=60)
    clock.advance(59)
    assert queue.requeue_stale() == ([], [])  # leases still valid
    clock.advance(2)
    requeued, lost = queue.requeue_stale()
    assert requeued == [b.id] and lost == [a.id]
    assert status_of(queue, "once") == "lost"
    assert status_of(queue, "needs-once") == "upstream_failed"
    assert queue.get("twice").failure_kind == "lost"
    assert not queue.heartbeat(b.id, worker).lease_held  # the old owner lost it
    assert not queue.succeed(b.id, worker)
    assert drain_order(queue, worker) == ["twice"]


def test_heartbeat_keeps_the_lease_alive(queue, worker, clock):
    queue.submit([spec("long")])
    job = queue.claim(worker, "cpu0", 0, lease_s=60)
    for _ in range(4):  # 160 s in all, each renewal 40 s after the last
        clock.advance(40)
        assert queue.heartbeat(job.id, worker, lease_s=60).lease_held
    clock.advance(59)
    assert queue.requeue_stale() == ([], [])  # 59 s after the last renewal
    clock.advance(2)
    assert queue.requeue_stale() == ([], [job.id])  # 61 s: no attempt left, lost


def test_preempt_requeues_without_spending_an_attempt(queue, worker):
    queue.submit([spec("tune", max_attempts=1)])
    job = queue.claim(worker, "cpu0", 0)
    assert queue.preempt(job.id, worker, message="higher priority waiting")
    row = queue.get("tune")
    assert (row.status, row.attempts, row.failure_kind) == ("queued", 0, "preempted")
    assert drain_order(queue, worker) == ["tune"]


def test_drain_stops_claims_until_resume(queue, worker):
    queue.submit([spec("a"), spec("b")])
    running = queue.claim(worker, "cpu0", 0)
    queue.drain()
    assert queue.is_drained()
    assert queue.claim(worker, "cpu0", 0) is None
    assert queue.succeed(running.id, worker)  # the current job still finishes
    queue.resume()
    assert drain_order(queue, worker) == ["b"]


def test_submit_is_all_or_nothing(queue, worker):
    with pytest.raises(PlanError, match="unknown dependency 'nope'"):
        queue.submit([spec("ok"), spec("bad", after=["nope"])])
    assert queue.status_counts() == {}
    queue.submit([spec("ok")])
    assert queue.submit([spec("new"), spec("ok")])[1] == queue.resolve("ok")  # unchanged: left alone
    assert queue.status_counts() == {"queued": 2}
    drain_order(queue, worker)
    with pytest.raises(PlanError, match=r"1 job\(s\) refused, nothing was submitted: 'ok': changed, and job \d+ "):
        queue.submit([spec("newer"), spec("ok", priority=3, kind="sleep")])
    assert queue.status_counts() == {"succeeded": 2}


def test_dry_run_submits_nothing(queue):
    ids = queue.submit([spec("a"), spec("b", after=["a"])], dry_run=True)
    assert len(ids) == 2
    assert queue.status_counts() == {}


def test_new_job_after_a_failed_job_is_upstream_failed_at_once(queue, worker):
    queue.submit([spec("broken")])
    job = queue.claim(worker, "cpu0", 0)
    queue.fail(job.id, worker, message="x")
    queue.submit([spec("late", after=["broken"])])
    assert status_of(queue, "late") == "upstream_failed"


def test_other_schema_version_is_refused_untouched(db_url):
    queue = JobQueue(db_url)
    queue.submit([spec("keep-me")])
    with queue.write() as conn:
        conn.execute(update(meta).where(meta.c.key == "schema_version").values(value="999"))
        conn.execute(text("DROP TABLE sched_alembic_version"))  # as sched 0.1 would see it
    queue.dispose()
    with pytest.raises(SchemaVersionError, match="schema version 999"):
        JobQueue(db_url)
    from sqlalchemy import create_engine

    engine = create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        assert conn.execute(select(jobs.c.name)).scalars().all() == ["keep-me"]
    engine.dispose()


# ---- many processes draining one queue ---------------------------------------------------------

DRAIN_JOBS = 2000
DRAIN_PROCESSES = 8


def _drainer(url: str, out: multiprocessing.Queue) -> None:
    queue = JobQueue(url)
    worker = queue.register_worker("drainer", 0, ["cpu0"])
    ran, errors = [], []
    try:
        while True:
            job = queue.claim(worker, "cpu0", 0)
            if job is None:
                if not queue.status_counts().get("queued"):
                    break
                continue
            ran.append(job.id)
            queue.succeed(job.id, worker)
    except Exception as exc:  # noqa: BLE001 - reported to the test
        errors.append(repr(exc))
    out.put((ran, errors))


def test_many_processes_run_every_job_exactly_once(db_url):
    queue = JobQueue(db_url)
    queue.submit([spec(f"job-{i}", priority=i % 7) for i in range(DRAIN_JOBS)])
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_drainer, args=(db_url, out)) for _ in range(DRAIN_PROCESSES)]
    for p in procs:
        p.start()
    results = [out.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    errors = [e for _, errs in results for e in errs]
    assert errors == []  # in particular no "database is locked"
    runs = Counter(job_id for ran, _ in results for job_id in ran)
    assert len(runs) == DRAIN_JOBS
    assert max(runs.values()) == 1
    assert sum(1 for ran, _ in results if ran) >= 2  # the work really was shared
    with queue.read() as conn:
        rows = conn.execute(select(jobs.c.status, jobs.c.attempts)).all()
    assert {(st, att) for st, att in rows} == {("succeeded", 1)}
    queue.dispose()


def test_retry_leaves_jobs_blocked_by_another_failure_and_refuses_a_blocked_root(queue, worker):
    queue.submit([spec("a"), spec("b"), spec("d", after=["a", "b"])])
    for _ in range(2):
        job = queue.claim(worker, "cpu0", 0)
        queue.fail(job.id, worker, message="x")
    assert queue.retry(queue.resolve("b")) == [queue.resolve("b")]  # d still waits for failed a
    assert status_of(queue, "d") == "upstream_failed"
    with pytest.raises(InvalidTransition, match="waits for 'a', which is failed"):
        queue.retry(queue.resolve("d"))
    assert sorted(queue.retry(queue.resolve("a"))) == sorted(queue.resolve(n) for n in ("a", "d"))


def test_a_pending_cancel_wins_over_a_retry_a_preemption_or_a_lost_lease(queue, worker, clock):
    queue.submit([spec("crashes", max_attempts=3), spec("preempted"), spec("stale", max_attempts=3),
                  spec("child", after=["crashes"])])
    crashes = queue.claim(worker, "cpu0", 0)
    preempted = queue.claim(worker, "cpu0", 0)
    stale = queue.claim(worker, "cpu0", 0, lease_s=60)
    for job in (crashes, preempted, stale):
        assert queue.cancel(job.id) == "running"
    assert queue.fail(crashes.id, worker, message="boom") == "cancelled"  # not back to the queue
    assert queue.preempt(preempted.id, worker)
    clock.advance(61)
    queue.requeue_stale()
    for name in ("crashes", "preempted", "stale"):
        assert status_of(queue, name) == "cancelled"
    assert status_of(queue, "child") == "upstream_failed"
    assert queue.claim(worker, "cpu0", 0) is None


def test_a_large_submit_leaves_the_claim_on_its_index_not_a_sort_of_every_queued_job(queue, worker):
    """PostgreSQL plans from its statistics: planned from the empty table, every claim after a big
    submit sorted all the queued rows (20-80 ms each) until autovacuum sampled the table."""
    queue.submit([spec(f"bulk-{i}", priority=i % 7) for i in range(1500)])
    if queue.engine.dialect.name == "postgresql":
        with queue.read() as conn:
            sampled = conn.execute(text("SELECT reltuples FROM pg_class WHERE relname = 'sched_jobs'")).scalar()
            plan = "\n".join(conn.execute(text(
                "EXPLAIN SELECT id FROM sched_jobs WHERE status = 'queued' AND held IS NULL "
                "ORDER BY urgent DESC, priority DESC, id LIMIT 1")).scalars())
        assert sampled >= 1500
        assert "ix_sched_jobs_claim" in plan and "Sort" not in plan, plan
    first = queue.claim(worker, "cpu0", 0)
    assert (first.name, first.priority) == ("bulk-6", 6)  # the claim order holds either way

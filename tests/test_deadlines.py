"""Deadlines: duration estimates, the replayed forecast, the policy's decisions, and the worker
acting on them. The pure parts run on a simulated clock (seconds from now) with fake durations;
the worker tests run real jobs (the `sleep` kind) against a deadline a few seconds away."""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta
from types import SimpleNamespace

import pytest

from scheduler.deadline.estimate import (
    EXPECTED,
    HISTORY,
    KIND_HISTORY,
    PROGRESS,
    UNKNOWN,
    Finished,
    RowCounter,
    estimate,
    work_units,
)
from scheduler.deadline.policy import Campaign, decide
from scheduler.deadline.replay import SimJob, WorkerShape, replay
from scheduler.errors import PlanError
from scheduler.plan import build_plan
from scheduler.store.schema import campaigns
from tests.helpers import step_until

# ---- estimates -------------------------------------------------------------------------------


@pytest.fixture
def csvs(tmp_path):
    """Two training files: 100 and 300 data rows."""
    paths = {}
    for rows in (100, 300):
        path = tmp_path / f"train{rows}.csv"
        path.write_text("review,label\n" + "".join(f"text {i},{i % 4}\n" for i in range(rows)))
        paths[rows] = str(path)
    return paths


def test_history_is_scaled_by_rows_and_epochs(csvs):
    rows_of = RowCounter()
    done = {"model": "m", "train": csvs[100], "epochs": 2, "val_fraction": 0.1}
    units = work_units("finetune", done, rows_of)
    assert units == pytest.approx(100 * 0.9 * 2)
    history = [Finished("finetune", "m", units, 60.0)]
    # Three times the rows and twice the epochs: six times the work, six times as long.
    bigger = estimate("finetune", {"model": "m", "train": csvs[300], "epochs": 4, "val_fraction": 0.1},
                      history=history, rows_of=rows_of)
    assert (bigger.seconds, bigger.source) == (pytest.approx(360.0), HISTORY)
    # Another model of the same kind: the kind's history, still scaled.
    other = estimate("finetune", {"model": "x", "train": csvs[100], "epochs": 2}, history=history, rows_of=rows_of)
    assert (other.seconds, other.source) == (pytest.approx(60.0), KIND_HISTORY)


def test_a_full_data_retrain_counts_its_validation_rows(csvs):
    rows_of = RowCounter()
    held_out = work_units("finetune", {"train": csvs[100], "epochs": 1, "val_fraction": 0.2}, rows_of)
    full = work_units("finetune", {"train": csvs[100], "epochs": 1, "val_fraction": 0.2, "full_data": True}, rows_of)
    assert (held_out, full) == (pytest.approx(80.0), pytest.approx(100.0))


def test_a_tune_counts_trials_and_the_middle_of_its_space(csvs):
    params = {"n_trials": 10, "finetune": {"model": "m", "train": csvs[100], "val_fraction": 0.1},
              "space": {"epochs": {"type": "int", "low": 2, "high": 4}}}
    assert work_units("tune", params, RowCounter()) == pytest.approx(90 * 3 * 10)
    assert work_units("tune", params, RowCounter(), group_size=2) == pytest.approx(90 * 3 * 10 / 2)


def test_sources_in_order_progress_history_expected_unknown(csvs):
    params = {"model": "m", "train": csvs[100], "epochs": 1}
    history = [Finished("finetune", "m", 90.0, 30.0)]
    running = estimate("finetune", params, history=history, expected_s=999, elapsed=40.0, progress=(1, 4))
    assert (running.seconds, running.source) == (pytest.approx(160.0), PROGRESS)  # a quarter in 40 s
    # Too little done to judge: history instead.
    assert estimate("finetune", params, history=history, elapsed=40.0, progress=(0.001, 1)).source == HISTORY
    assert estimate("finetune", params, history=[], expected_s=120).source == EXPECTED
    unknown = estimate("finetune", params, history=[])
    assert (unknown.seconds, unknown.source) == (None, UNKNOWN)


def test_row_counts_follow_the_file(csvs):
    rows_of = RowCounter()
    assert rows_of(csvs[100]) == 100
    with open(csvs[100], "a") as fh:
        fh.write("one more,1\n")
    assert rows_of(csvs[100]) == 101
    assert rows_of(csvs[100] + ".missing") is None


# ---- the replay ------------------------------------------------------------------------------


def test_replay_matches_a_hand_computed_schedule_on_two_gpus():
    # gpu jobs a (10 s) and b (4 s) start at once; c (CPU) waits for b; the gang g (2 GPUs) waits
    # for a, and for both GPUs: it starts when a ends at 10; d (1 GPU, priority below g) must not
    # slip in at 4 on b's free GPU ahead of g's reservation, so it starts after g.
    jobs = [SimJob(1, "a", priority=5, gpus=1, duration=10), SimJob(2, "b", priority=5, gpus=1, duration=4),
            SimJob(3, "c", gpus=0, duration=3, deps=(2,)), SimJob(4, "g", priority=3, gpus=2, duration=6, deps=(1,)),
            SimJob(5, "d", priority=1, gpus=1, duration=2)]
    schedule = replay(jobs, [WorkerShape(gpus=[None, None], cpu_slots=1)])
    got = {j.name: (schedule.slots[j.id].start, schedule.slots[j.id].end) for j in jobs}
    assert got == {"a": (0, 10), "b": (0, 4), "c": (4, 7), "d": (4, 6), "g": (10, 16)}


def test_a_reserved_gang_keeps_its_gpus_from_lower_priority_jobs():
    jobs = [SimJob(1, "long", priority=9, gpus=1, duration=10), SimJob(2, "gang", priority=8, gpus=2, duration=5),
            SimJob(3, "small", priority=1, gpus=1, duration=3)]
    schedule = replay(jobs, [WorkerShape(gpus=[None, None])])
    assert schedule.slots[2].start == 10  # waits for both GPUs
    assert schedule.slots[3].start == 15  # not on the kept GPU at 0 (the worker's reservation)


def test_running_jobs_end_from_their_remaining_time_and_unrunnable_jobs_say_why():
    jobs = [SimJob(1, "now", gpus=1, duration=100, running=True, elapsed=70, worker=0, gpu_indices=(0,)),
            SimJob(2, "next", gpus=1, duration=5), SimJob(3, "wide", gpus=4, duration=1)]
    schedule = replay(jobs, [WorkerShape(gpus=[None])])
    assert (schedule.slots[1].end, schedule.slots[2].start) == (30, 30)
    assert schedule.never[3].startswith("needs 4 GPU(s)")


def test_a_preemptible_job_yields_to_a_higher_ranked_one_and_resumes():
    jobs = [SimJob(1, "backfill", priority=0, gpus=1, duration=50, preemptible=True, running=True, elapsed=10,
                   worker=0, gpu_indices=(0,)),
            SimJob(2, "urgent", priority=-5, urgent=True, gpus=1, duration=5)]
    schedule = replay(jobs, [WorkerShape(gpus=[None])])
    assert (schedule.slots[2].start, schedule.slots[2].end) == (0, 5)
    assert (schedule.slots[1].start, schedule.slots[1].end, schedule.slots[1].yielded) == (5, 45, 1)


# ---- the policy ------------------------------------------------------------------------------


def _campaign_jobs():
    """One GPU: `other` (priority 80, 50 s) would run before the path a -> deliver (20 s in all)."""
    return [SimJob(1, "a", priority=100, gpus=1, duration=10, campaign="c"),
            SimJob(2, "other", priority=80, gpus=1, duration=50, campaign="c"),
            SimJob(3, "deliver", priority=50, gpus=1, duration=10, deps=(1,), campaign="c", deliverable=True)]


def test_the_policy_puts_the_path_first_when_plain_priorities_miss():
    decisions = decide(_campaign_jobs(), [WorkerShape(gpus=[None])], [Campaign("c", deadline=40)])
    assert decisions.plain["c"].done_by == 70 and decisions.plain["c"].misses
    assert decisions.urgent == {1, 3}
    assert decisions.verdicts["c"].done_by == 20 and not decisions.verdicts["c"].misses
    assert decisions.verdicts["c"].acting and "urgent" in decisions.notes[3]


def test_warn_decides_nothing_but_reports_the_miss():
    decisions = decide(_campaign_jobs(), [WorkerShape(gpus=[None])], [Campaign("c", deadline=40, policy="warn")])
    assert (decisions.urgent, decisions.held, decisions.finish_by) == (set(), {}, {})
    assert decisions.verdicts["c"].misses and decisions.verdicts["c"].done_by == 70
    assert [name for name, _ in decisions.verdicts["c"].chain] == ["deliver"]


def test_a_comfortable_forecast_changes_nothing_but_a_thin_margin_does():
    jobs = _campaign_jobs()
    assert not decide(jobs, [WorkerShape(gpus=[None])], [Campaign("c", deadline=200)]).urgent
    # Done at 70 of 75: inside the deadline, but less than 10% of the time left to spare.
    assert decide(jobs, [WorkerShape(gpus=[None])], [Campaign("c", deadline=75)]).urgent == {1, 3}


def test_off_path_jobs_ending_after_the_deadline_are_held_while_the_path_runs():
    jobs = [SimJob(1, "path", priority=1, duration=30, campaign="c", deliverable=True),
            SimJob(2, "late", priority=5, duration=100, campaign="c"),
            SimJob(3, "quick", priority=4, duration=5, campaign="c")]
    decisions = decide(jobs, [WorkerShape(cpu_slots=2)], [Campaign("c", deadline=32)])
    assert set(decisions.held) == {2} and "after the deadline" in decisions.held[2]
    assert decisions.schedule.slots[2].start == 30  # once the deliverable is done
    assert decisions.schedule.slots[3].start < 30  # ends in time: runs beside the path


def test_a_tune_on_the_path_is_cut_short_so_the_deliverable_makes_it():
    jobs = [SimJob(1, "tune", priority=-10, gpus=1, duration=100, campaign="c", ends_early=True, preemptible=True),
            SimJob(2, "retrain", priority=40, gpus=1, duration=20, deps=(1,), campaign="c", deliverable=True)]
    decisions = decide(jobs, [WorkerShape(gpus=[None])], [Campaign("c", deadline=100, margin=0.1)])
    # 100 + 20 = 120 would miss 100 - 10% margin = 90: the tune ends by 70.
    assert decisions.finish_by == {1: pytest.approx(70.0)}
    assert decisions.verdicts["c"].done_by == pytest.approx(90.0) and not decisions.verdicts["c"].misses
    assert "starts no trial" in decisions.notes[1]


def test_the_tune_starts_no_trial_that_would_end_after_finish_by(monkeypatch):
    from jobs.tune.tuner import _Tuner as Tuner

    now = 1_000_000.0
    monkeypatch.setattr("jobs.tune.tuner.time.time", lambda: now)
    def tuner(trials, study=(), expected=None, finish_by=now + 50):
        fake = SimpleNamespace(ctx=SimpleNamespace(finish_by=lambda: finish_by, expected_seconds=lambda: expected),
                               trial_seconds=trials, params=SimpleNamespace(n_trials=10),
                               study=SimpleNamespace(get_trials=lambda **_: list(study)))
        fake.typical_trial_s = lambda: Tuner.typical_trial_s(fake)
        return fake

    assert Tuner.cut_short(tuner([40.0, 60.0, 45.0])) is None  # a 45 s trial ends before the cut
    assert "deadline policy" in Tuner.cut_short(tuner([70.0]))
    assert Tuner.cut_short(tuner([70.0], finish_by=None)) is None
    # Before its first trial: the study's finished trials (another job's) say how long one takes ...
    done = SimpleNamespace(datetime_start=datetime(2026, 1, 1, 0, 0), datetime_complete=datetime(2026, 1, 1, 0, 2))
    assert "deadline policy" in Tuner.cut_short(tuner([], study=[done]))
    # ... else the forecast's estimate of the job over its trials (10 x 60 s), not 0.
    assert "deadline policy" in Tuner.cut_short(tuner([], expected=600.0))
    assert Tuner.cut_short(tuner([], expected=300.0)) is None


# ---- queue files and the database ------------------------------------------------------------


def _plan(deadline="2h", **top):
    raw = {"campaign": "c", "deadline": deadline, **top, "jobs": [
        {"name": "a", "kind": "sleep", "params": {"seconds": 0.2}, "expected": "10m"},
        {"name": "deliver", "kind": "sleep", "params": {"seconds": 0.2}, "after": ["a"], "deliverable": True}]}
    return build_plan(raw, "campaign.yaml")


@pytest.mark.parametrize("deadline, message", [
    ("2026-12-10 09:00", "no time zone"), ("soon", "neither an ISO time"), ("0s", "more than 0"),
    (date(2026, 12, 10), "a date"), ("2026-12-10", "no time zone"), ([1], "not a time")])
def test_a_bad_deadline_is_refused_naming_it(deadline, message):
    with pytest.raises(PlanError, match=message) as err:
        _plan(deadline)
    assert "campaign.yaml: deadline:" in str(err.value)


def test_a_deadline_needs_a_deliverable_and_expected_a_duration():
    with pytest.raises(PlanError, match="no job has `deliverable: true`"):
        build_plan({"deadline": "2h", "jobs": [{"name": "a", "kind": "sleep"}]}, "q.yaml")
    with pytest.raises(PlanError, match="expected"):
        build_plan({"jobs": [{"name": "a", "kind": "sleep", "expected": "soon"}]}, "q.yaml")


def test_a_deadline_changed_by_resubmitting_keeps_counting_from_the_first_submit(queue):
    queue.submit(_plan("2h"))
    with queue.read() as conn:
        first = conn.execute(campaigns.select()).one()
    assert first.deadline - first.first_submit_at == timedelta(hours=2)
    queue.submit(_plan("1h", deadline_policy="warn"))
    with queue.read() as conn:
        again = conn.execute(campaigns.select()).one()
        rows = {r.name: r for r in queue.find()}
    assert again.first_submit_at == first.first_submit_at
    assert again.deadline - first.first_submit_at == timedelta(hours=1) and again.policy == "warn"
    assert rows["deliver"].deliverable and rows["a"].expected_s == 600 and rows["a"].campaign == "c"
    queue.submit(_plan("2026-12-10T09:00:00+09:00"))
    with queue.read() as conn:
        assert str(conn.execute(campaigns.select()).one().deadline) == "2026-12-10 00:00:00"  # UTC


def test_the_pass_writes_decisions_the_claim_follows_and_lifts_them_when_done(queue):
    from scheduler.deadline.planner import plan_pass

    raw = {"campaign": "c", "deadline": "60s", "jobs": [
        {"name": "other", "kind": "sleep", "priority": 100, "expected": "10m"},
        {"name": "late", "kind": "sleep", "priority": 90, "expected": "10m"},
        {"name": "deliver", "kind": "sleep", "priority": 1, "expected": "20s", "deliverable": True}]}
    queue.submit(build_plan(raw, "c.yaml"))
    worker = queue.register_worker("host", 1, ["cpu0", "cpu1"])
    with queue.write() as conn:
        lines = plan_pass(conn, queue.clock.now(conn))
    text = "\n".join(lines)
    assert "campaign c acts" in text and "deliver" in text and "held" in text
    job = queue.claim(worker, "cpu0", 0)
    assert job.name == "deliver" and job.urgent  # priority 1, claimed first
    # `other` would run beside the path on the second slot and end after the deadline: held.
    # `late` starts only once the deliverable is done (one slot, claim order): not held.
    assert "after the deadline" in queue.get("other").held and queue.get("late").held is None
    late = queue.claim(worker, "cpu1", 0)
    assert late.name == "late"  # priority 90 before the held priority 100
    assert queue.urgent_jobs([job.id, late.id]) == {job.id}  # what a worker's preemption reads
    assert queue.top_waiting_rank(0) is not None  # a --until-empty worker waits for a held job
    queue.succeed(job.id, worker)
    with queue.write() as conn:
        lines = plan_pass(conn, queue.clock.now(conn))
    assert any("deliverables done" in line for line in lines)
    assert queue.get("other").held is None and not queue.get("other").urgent
    queue.succeed(late.id, worker)
    assert queue.claim(worker, "cpu1", 0).name == "other"


# ---- the worker ------------------------------------------------------------------------------


def _worker(queue, tmp_path):
    from scheduler.execute.slots import Slot
    from scheduler.execute.worker import WorkerLoop, WorkerOptions

    return WorkerLoop(queue, [Slot("cpu0", None)], WorkerOptions(
        runs_root=tmp_path / "runs", heartbeat_s=0.2, lease_s=10, stop_grace_s=2, poll_s=0.05))


def _deadline_campaign(policy: str):
    # One CPU slot. Plain priorities run `other` (30 s) first: the deliverable would end after
    # about 31 s, far past a 15 s deadline; path first, it is done in a few seconds.
    return build_plan({"campaign": "c", "deadline": "15s", "deadline_policy": policy, "jobs": [
        {"name": "other", "kind": "sleep", "priority": 100, "params": {"seconds": 30}, "expected": "30s"},
        {"name": "a", "kind": "sleep", "priority": 10, "params": {"seconds": 0.3}, "expected": "1s"},
        {"name": "deliver", "kind": "sleep", "priority": 5, "params": {"seconds": 0.3}, "expected": "1s",
         "after": ["a"], "deliverable": True}]}, "c.yaml")


def test_a_deliverable_that_would_miss_under_priorities_is_done_in_time(sqlite_url, tmp_path, caplog):
    from scheduler.deadline.planner import estimate_errors
    from scheduler.jobqueue import JobQueue

    queue = JobQueue(sqlite_url)
    queue.submit(_deadline_campaign("act"))
    loop = _worker(queue, tmp_path)
    caplog.set_level(logging.INFO, logger="sched")
    try:
        step_until(loop, lambda: queue.get("deliver").status == "succeeded", timeout=60)
        with queue.read() as conn:
            deadline = conn.execute(campaigns.select()).one().deadline
        assert queue.get("deliver").finished_at < deadline
        assert queue.get("a").started_at < queue.get("deliver").started_at
        other = queue.get("other")  # it waited for the path
        assert other.status == "queued" or other.started_at >= queue.get("deliver").finished_at
        log = caplog.text
        assert "campaign c acts" in log and "deliver #" in log and "urgent" in log
        assert "urgent: on the path of deliver" in queue.get("a").deadline_note
        step_until(loop, lambda: queue.get("other").status == "running", timeout=30)
        assert "deliverables done" in caplog.text  # the rest runs by priority again
        with queue.read() as conn:
            errors = {e["name"]: e for e in estimate_errors(conn)}
        assert errors["a"]["estimate_s"] == 1.0 and errors["a"]["source"] == "expected"
    finally:
        loop.request_stop()
        loop.close()
        queue.dispose()


def test_warn_keeps_priorities_and_status_reports_the_miss(sqlite_url, tmp_path):
    from scheduler.jobqueue import JobQueue
    from scheduler.views import status_snapshot

    queue = JobQueue(sqlite_url)
    queue.submit(_deadline_campaign("warn"))
    loop = _worker(queue, tmp_path)
    try:
        step_until(loop, lambda: queue.get("other").status == "running", timeout=30)
        assert queue.get("a").status == "queued" and not queue.get("a").urgent
        outlook = status_snapshot(queue, all_jobs=False)["deadlines"][0]
        assert outlook["misses"] and not outlook["acting"] and outlook["policy"] == "warn"
        assert "misses the deadline by" in outlook["line"] and "nothing changed" in outlook["line"]
        assert [step["name"] for step in outlook["critical_path"]][-1] == "deliver"
    finally:
        loop.request_stop()
        loop.close()
        queue.dispose()


def test_an_urgent_job_makes_a_preemptible_one_yield(sqlite_url, tmp_path, caplog):
    from scheduler.jobqueue import JobQueue

    queue = JobQueue(sqlite_url)
    queue.submit(build_plan({"campaign": "c", "jobs": [
        {"name": "backfill", "kind": "sleep", "priority": 0, "preemptible": True, "params": {"seconds": 60},
         "expected": "60s"}]}, "c.yaml"))
    loop = _worker(queue, tmp_path)
    caplog.set_level(logging.INFO, logger="sched")
    try:
        step_until(loop, lambda: queue.get("backfill").status == "running", timeout=30)
        # Priority -5 would never preempt priority 0; on a deliverable's path it does.
        queue.submit(build_plan({"campaign": "c", "deadline": "20s", "jobs": [
            {"name": "backfill", "kind": "sleep", "priority": 0, "preemptible": True, "params": {"seconds": 60},
             "expected": "60s"},
            {"name": "deliver", "kind": "sleep", "priority": -5, "params": {"seconds": 0.3}, "expected": "1s",
             "deliverable": True}]}, "c.yaml"))
        loop.last_deadline_pass = float("-inf")  # the next step runs the pass
        step_until(loop, lambda: queue.get("deliver").status == "succeeded", timeout=60)
        assert "asking it to yield" in caplog.text and "urgent (deadline)" in caplog.text
        assert queue.get("backfill").attempts >= 1
    finally:
        loop.request_stop()
        loop.close()
        queue.dispose()


def test_dry_run_and_forecast_print_the_outlook(sqlite_url, tmp_path):
    from click.testing import CliRunner

    from scheduler.cli import cli

    queue_file = tmp_path / "c.yaml"
    queue_file.write_text("campaign: c\ndeadline: 1h\njobs:\n"
                          "  - {name: a, kind: sleep, expected: 20m}\n"
                          "  - {name: deliver, kind: sleep, after: [a], deliverable: true, expected: 50m}\n")
    runner = CliRunner()
    dry = runner.invoke(cli, ["--db", sqlite_url, "submit", str(queue_file), "--dry-run"], catch_exceptions=False)
    assert dry.exit_code == 0 and "Forecast: c: deadline" in dry.output
    assert "misses the deadline by 10m" in dry.output.replace("\n", " ")
    runner.invoke(cli, ["--db", sqlite_url, "submit", str(queue_file)], catch_exceptions=False)
    shown = runner.invoke(cli, ["--db", sqlite_url, "forecast", "c", "--json"], catch_exceptions=False)
    import json

    data = json.loads(shown.output)
    by_name = {j["name"]: j for j in data["jobs"]}
    assert by_name["a"]["end_s"] == pytest.approx(1200, abs=5) and by_name["a"]["on_path"]
    assert by_name["deliver"]["source"] == "expected" and by_name["deliver"]["deliverable"]
    assert data["campaigns"][0]["misses"]
    table = runner.invoke(cli, ["--db", sqlite_url, "forecast"], catch_exceptions=False)
    assert "deliverable" in table.output and "misses the deadline" in table.output
    unknown = runner.invoke(cli, ["--db", sqlite_url, "forecast", "nope"])
    assert unknown.exit_code == 1 and "no unfinished job of campaign 'nope'" in unknown.output


def test_the_pass_cuts_a_tune_on_the_path_short_and_logs_it(queue, tmp_path):
    from scheduler.deadline.planner import plan_pass

    train = tmp_path / "train.csv"
    train.write_text("review,label\n" + "".join(f"text {i},{i % 4}\n" for i in range(40)))
    raw = {"campaign": "c", "deadline": "1h", "jobs": [
        {"name": "tune", "kind": "tune", "gpus": 0, "expected": "2h", "preemptible": True, "params": {
            "n_trials": 10, "finetune": {"model": "tiny", "train": str(train)},
            "space": {"lr": {"type": "float", "low": 1e-4, "high": 1e-3}}}},
        {"name": "retrain", "kind": "sleep", "after": ["tune"], "expected": "10m", "deliverable": True}]}
    queue.submit(build_plan(raw, "c.yaml"))
    queue.register_worker("host", 1, ["cpu0"])
    with queue.write() as conn:
        now = queue.clock.now(conn)
        lines = plan_pass(conn, now)
    tune = queue.get("tune")
    # 2h of tune + 10m would miss 1h - 6m of margin: the tune must end by 44m from now.
    assert tune.finish_by is not None
    assert abs((tune.finish_by - now).total_seconds() - 44 * 60) < 60
    assert any("tune #" in line and "starts no trial that would end after" in line for line in lines)
    assert "starts no trial" in tune.deadline_note


def test_a_tunes_until_caps_its_forecast():
    tune = SimJob(1, "tune", gpus=1, duration=144000, running=True, elapsed=72000, worker=0, gpu_indices=(0,),
                  time_limit=("after", 86400))
    after = SimJob(2, "retrain", gpus=1, duration=600, deps=(1,))
    schedule = replay([tune, after], [WorkerShape(gpus=[None])])
    assert schedule.slots[1].end == 14400 and schedule.slots[2].start == 14400  # 24 h from its start
    at = replay([SimJob(1, "tune", gpus=1, duration=5000, time_limit=("at", 1000.0))], [WorkerShape(gpus=[None])])
    assert at.slots[1].end == 1000

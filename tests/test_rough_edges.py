"""Rough edges of issue 22 (item 3), one test or more each: job ids never reused, retries that
wait, the watch view at 80x24, params in `sched show`, `sched logs -f` on a queued job, names at
80 columns, what changed in a resubmitted campaign, a shell job's failure line, `sched kinds KIND`,
`sched diff`, the Failures table and the report's wording."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, select, text, update

from scheduler.cli import cli
from scheduler.execute.placement import ClaimPass, Gpu
from scheduler.jobqueue import DELAYED, JobQueue, JobSpec, retry_delay
from scheduler.store import migrate
from scheduler.store import queries as q
from scheduler.store.engine import db_now, make_engine, normalize_url
from scheduler.store.schema import jobs, meta
from tests.helpers import submit

GIB = 1024


def sched(url: str, *args: str, ok: bool = True, input: str | None = None):
    result = CliRunner().invoke(cli, ["--db", url, *args], input=input, catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def _finish(queue: JobQueue, job_id: int, worker: int, slot: str = "cpu0") -> None:
    claimed = queue.claim(worker, slot, 0)
    assert claimed is not None and claimed.id == job_id
    assert queue.succeed(job_id, worker)


# ---- job ids are never given twice ---------------------------------------------------------------


def test_the_id_of_a_removed_job_is_never_given_again(queue):
    worker = queue.register_worker("h", 1, ["cpu0"])
    first = submit(queue, "first", "echo")
    second = submit(queue, "second", "echo")
    _finish(queue, first, worker)
    _finish(queue, second, worker)
    queue.remove([second])  # the newest job: SQLite's max(id) + 1 would hand its id out again
    third = submit(queue, "third", "echo")
    assert third > second
    queue.cancel(third)
    queue.remove([first, third])  # an empty table: still no id comes back
    (fourth, fifth) = queue.submit([JobSpec(name="fourth", kind="echo"), JobSpec(name="fifth", kind="echo")])
    assert third < fourth < fifth
    queue.cancel(fifth)
    _finish(queue, fourth, worker)
    (reused,) = queue.submit([JobSpec(name="fourth-again", kind="echo")], reuse=True)  # the other insert path
    assert queue.get(reused).reused_from == fourth and reused > fifth


def test_a_database_at_revision_0007_upgrades_and_keeps_its_ids(db_url):
    from alembic import command

    engine = make_engine(db_url)
    with engine.begin() as conn:
        command.upgrade(migrate._alembic_config(conn), "0007")
    engine.dispose()
    raw = create_engine(normalize_url(db_url))
    with raw.begin() as conn:  # rows as revision 0007 wrote them
        for name in ("a", "b", "c"):
            conn.execute(text("INSERT INTO sched_jobs (name, kind, params, priority, status, gpus, tags, attempts, "
                              "max_attempts, preemptible, cancel_requested, created_at) VALUES (:n, 'echo', '{}', 0, "
                              "'succeeded', 0, '[]', 1, 1, false, false, '2026-11-01 10:00:00')"), {"n": name})
    raw.dispose()
    queue = JobQueue(db_url)  # opening upgrades
    with queue.read() as conn:
        assert conn.execute(text("SELECT version_num FROM sched_alembic_version")).scalar() == migrate.head() >= "0008"
        assert conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).scalar() == str(int(migrate.head()))
        assert conn.execute(select(meta.c.value).where(meta.c.key == "job_id_high")).scalar() == "3"
        assert conn.execute(select(jobs.c.not_before, jobs.c.retry_delay_s)).all() == [(None, None)] * 3
    queue.remove([queue.resolve("c")])
    assert submit(queue, "d", "echo") == 4
    queue.dispose()


# ---- a failed job waits before its retry ---------------------------------------------------------


def test_retry_delays_double_with_jitter():
    assert retry_delay(None, 1, jitter=0) == 30
    assert [retry_delay(30, n, jitter=0) for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert retry_delay(30, 20, jitter=0) == 3600  # the doubling stops at an hour
    assert retry_delay(7200, 3, jitter=0) == 7200  # ... or at a longer delay asked for
    assert retry_delay(30, 1, jitter=1) == pytest.approx(33) and retry_delay(30, 1, jitter=-1) == pytest.approx(27)
    assert retry_delay(0, 5) == 0
    assert len({retry_delay(30, 1) for _ in range(20)}) > 1  # spread out


def test_a_retry_waits_by_the_database_clock_and_the_claim_skips_it(queue):
    worker = queue.register_worker("h", 1, ["cpu0"])
    job_id = submit(queue, "flaky", "echo", max_attempts=3, retry_delay_s=30)
    claimed = queue.claim(worker, "cpu0", 0)
    assert queue.fail(claimed.id, worker, message="boom") == "queued"
    with queue.read() as conn:
        now = db_now(conn)
    row = queue.get(job_id)
    assert timedelta(seconds=26) < row.not_before - now < timedelta(seconds=34)
    assert queue.claim(worker, "cpu0", 0) is None  # not yet, by the database's clock
    assert queue.top_waiting_rank(0) == DELAYED  # a --until-empty worker waits; nothing is preempted
    snap_why = _why(queue, "flaky")
    assert snap_why.startswith("retry at ") and snap_why.endswith(" UTC")
    # other jobs still run meanwhile
    other = submit(queue, "other", "echo")
    assert queue.claim(worker, "cpu0", 0).id == other
    with queue.write() as conn:  # the delay passes
        conn.execute(update(jobs).where(jobs.c.id == job_id).values(not_before=db_now(conn) - timedelta(seconds=1)))
    again = queue.claim(worker, "cpu0", 0)
    assert again.id == job_id and again.attempts == 2
    assert queue.fail(job_id, worker, message="boom again") == "queued"
    second = queue.get(job_id).not_before - now
    assert timedelta(seconds=52) < second < timedelta(seconds=68)  # doubled
    # a retry_delay of 0 retries at once
    zero = submit(queue, "at-once", "echo", max_attempts=2, retry_delay_s=0)
    queue.cancel(job_id)
    assert queue.fail(queue.claim(worker, "cpu0", 0).id, worker, message="x") == "queued"
    assert queue.get(zero).not_before is None and queue.claim(worker, "cpu0", 0).id == zero


def test_a_user_retry_runs_at_once(queue):
    worker = queue.register_worker("h", 1, ["cpu0"])
    job_id = submit(queue, "late", "echo", max_attempts=2, retry_delay_s=600)
    queue.fail(queue.claim(worker, "cpu0", 0).id, worker, message="boom")
    queue.cancel(job_id)
    assert queue.retry(job_id) == [job_id]
    assert queue.get(job_id).not_before is None and queue.claim(worker, "cpu0", 0).id == job_id


def test_not_before_in_a_queue_file_holds_a_job_back_on_cpu_and_gpu_claims(queue, tmp_path):
    from scheduler.plan import build_plan

    specs = build_plan({"defaults": {"retry_delay": "5m"},
                        "jobs": [{"name": "tonight", "kind": "echo", "not_before": "2h"},
                                 {"name": "gpu-later", "kind": "echo", "gpus": 1, "not_before": "2999-01-01 00:00"},
                                 {"name": "gpu-past", "kind": "echo", "gpus": 1,
                                  "not_before": "2001-01-01T00:00:00+09:00"}]})
    assert [s.retry_delay_s for s in specs] == [300.0] * 3
    assert str(specs[2].not_before) == "2000-12-31 15:00:00"  # UTC
    queue.submit(specs)
    worker = queue.register_worker("h", 1, ["cpu0", "gpu0"])
    assert queue.claim(worker, "cpu0", 0) is None
    claimed = queue.claim_on_gpus(worker, ClaimPass([Gpu(0, 80 * GIB, 80 * GIB)]))
    assert [job.name for job, _ in claimed] == ["gpu-past"]
    with queue.read() as conn:  # the SQLAlchemy path (other databases) agrees with the hot path
        assert q.claim_candidate(conn, 1, db_now(conn)) is None
    assert _why(queue, "tonight").startswith("not before ")
    assert "2999-01-01 00:00 UTC" in _why(queue, "gpu-later")


def test_a_bad_retry_delay_or_not_before_names_the_field(sqlite_url, tmp_path):
    path = tmp_path / "q.yaml"
    path.write_text("jobs:\n  - {name: a, kind: echo, retry_delay: -5}\n")
    assert "retry_delay" in sched(sqlite_url, "submit", str(path), ok=False).output
    path.write_text("jobs:\n  - {name: a, kind: echo, not_before: soon}\n")
    out = sched(sqlite_url, "submit", str(path), ok=False).output.replace("\n", "")
    assert "not_before" in out and "is not a time" in out
    added = sched(sqlite_url, "add", "echo", "--name", "b", "--not-before", "1h", "--retry-delay", "0")
    assert "added job" in added.output


def _why(queue, name: str) -> str:
    from scheduler.views import status_snapshot

    return {j["name"]: j["why"] for j in status_snapshot(queue, all_jobs=False)["queue"]}[name]


# ---- sched status --watch fits the terminal, the head of the queue always shown -----------------

MODELS = ["klue/roberta-base", "klue/bert-base", "kykim/bert-kor-base", "beomi/kcbert-base",
          "monologg/koelectra-base-v3"]


def _render(renderable, width: int) -> list[str]:
    from rich.console import Console

    console = Console(width=width, record=True, force_terminal=False, color_system=None)
    console.print(renderable)
    return console.export_text().splitlines()


@pytest.fixture
def busy_campaign(sqlite_url):
    from scheduler.records import Records

    queue = JobQueue(sqlite_url)
    queue.submit([JobSpec(name=f"finetune-{m}-seed{s}", kind="finetune", params={"model": m})
                  for m in MODELS for s in range(1, 6)] + [JobSpec(name="tapt-klue/roberta-base", kind="tapt")])
    worker = queue.register_worker("gpu-host", 1, ["gpu0", "gpu1"])
    records = Records(queue)
    done = queue.claim(worker, "gpu0", 1)
    queue.succeed(done.id, worker)
    for slot in ("gpu0", "gpu1"):
        job = queue.claim(worker, slot, 1)
        records.set_progress(job.id, 120, 400, "steps · epoch 1.2/3")
    assert queue.status_counts()["queued"] == 23
    yield queue
    queue.dispose()


def test_watch_at_80x24_shows_the_head_of_the_queue_and_the_running_jobs_kind_try_and_eta(busy_campaign):
    from scheduler.render import status_view
    from scheduler.views import status_snapshot

    lines = _render(status_view(status_snapshot(busy_campaign, all_jobs=False), width=80, height=24), 80)
    text = "\n".join(lines)
    assert len(lines) <= 24 and all(len(line) <= 80 for line in lines)
    assert re.search(r"Queue, in claim order \(first (\d+) of 23; (\d+) more wait\)", text)
    first, more = map(int, re.search(r"first (\d+) of 23; (\d+) more", text).groups())
    assert first >= 3 and first + more == 23
    assert "finetune-klue/roberta-base-seed4" in text  # the next job, its name whole
    running_header = next(line for line in lines if "progress" in line)
    for column in ("kind", "try", "ETA"):
        assert column in running_header
    assert "Workers" in text


@pytest.mark.parametrize("width, height", [(80, 24), (80, 14), (80, 8), (80, 3), (60, 20), (200, 60), (120, 40)])
def test_watch_at_any_size_shows_the_next_job_and_how_many_more_wait(busy_campaign, width, height):
    from scheduler.render import status_view
    from scheduler.views import status_snapshot

    lines = _render(status_view(status_snapshot(busy_campaign, all_jobs=False), width=width, height=height), width)
    text = "\n".join(lines)
    assert len(lines) <= max(height, 2)  # two lines (counts, the queue) is the least it can be
    assert "#4 finetune-klue/roberta-base-seed4" in text or re.search(r"│ +4 │ finetune", text)
    assert re.search(r"(\d+) more wait", text) or "tapt-klue/roberta-base " in text  # or the whole queue


# ---- sched show: params as JSON on several lines, control characters escaped inside values --------


def test_show_prints_params_as_json_lines_with_control_characters_escaped_in_values(sqlite_url):
    import json

    params = {"argv": ["sh", "-c", "echo a\nb\x1b[2J"], "env": {"K": "v\u202e"}}
    queue = JobQueue(sqlite_url)
    submit(queue, "shown", "shell", params=params)
    queue.dispose()
    out = sched(sqlite_url, "show", "shown").output  # CliRunner: a pipe
    assert "\\x0a" not in out
    assert "\u202e" not in out and "\x1b" not in out  # nothing reaches the terminal raw
    lines = [line.strip() for line in out.splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith("params"))
    block = [lines[start].removeprefix("params").strip(), *lines[start + 1:]]
    assert block[:3] == ["{", '"argv": [', '"sh",']  # the JSON's own layout, one value a line
    assert '"echo a\\nb\\u001b[2J"' in block and '"K": "v\\u202e"' in block  # escapes inside values
    assert json.loads("\n".join(block)) == params  # ... which read back as the params


# ---- sched logs -f on a queued job waits for it to start ------------------------------------------


def test_logs_follow_waits_for_a_queued_job_to_start_then_follows_it(sqlite_url, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from scheduler.execute.slots import Slot
    from scheduler.execute.worker import WorkerLoop, WorkerOptions
    from tests.helpers import step_until

    queue = JobQueue(sqlite_url)
    job_id = submit(queue, "later", "shell", params={"argv": ["sh", "-c", "echo first-line; sleep 1; echo last-line"]})
    follower = subprocess.Popen([sys.executable, "-m", "scheduler.cli", "--db", sqlite_url, "logs", str(job_id), "-f"],
                                cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    try:
        waiting = follower.stderr.readline()  # said once, before the job starts
        assert f"job {job_id} ('later') has not started yet" in waiting and "waiting for it to start" in waiting
        assert follower.poll() is None
        loop = WorkerLoop(queue, [Slot("cpu0", None)], WorkerOptions(runs_root=tmp_path / "runs", poll_s=0.05))
        step_until(loop, lambda: queue.get(job_id).status == "succeeded", timeout=120)
        loop.close()
        out, err = follower.communicate(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 0, err
    assert "first-line" in out and "last-line" in out and "waiting" not in err
    queue.dispose()


def test_logs_follow_of_a_job_cancelled_before_it_started_says_so(sqlite_url):
    import threading
    import time

    queue = JobQueue(sqlite_url)
    job_id = submit(queue, "never", "echo")
    timer = threading.Timer(1.0, lambda: queue.cancel(job_id))
    timer.start()
    started = time.monotonic()
    result = sched(sqlite_url, "logs", str(job_id), "-f", ok=False)
    timer.join()
    assert result.exit_code == 1 and time.monotonic() - started >= 1.0
    assert "ended cancelled without starting" in result.output
    plain = sched(sqlite_url, "logs", str(job_id), ok=False)  # without -f: at once
    assert "has not started yet: no log" in plain.output
    queue.dispose()


# ---- the shipped queue.yaml's plan and sched cron list at 80 columns: one line per job -----------


def _table_rows(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("│")]


def test_the_shipped_plan_at_80_columns_has_one_line_per_job_names_cut_in_the_middle(sqlite_url):
    from pathlib import Path

    from scheduler.plan import load_plan
    from scheduler.render import plan_table

    specs = load_plan(Path(__file__).resolve().parents[1] / "queue.yaml")
    queue = JobQueue(sqlite_url)
    plan = queue.plan(specs, dry_run=True)
    queue.dispose()
    for width in (80, 100, 160):
        lines = _render(plan_table(specs, title="Plan", width=width, plan=plan), width)
        rows = _table_rows(lines)
        assert len(rows) == len(specs), width  # nothing wrapped
        assert all(len(line) <= width for line in lines)
        for spec in specs:  # each name whole, or its start and distinguishing end around an ellipsis
            row = next(r for r in rows if spec.name in r or ("…" in r and spec.name[-12:] in r))
            assert row
        assert "retrain-" in "\n".join(rows) and "retrain- " not in "\n".join(rows)
    narrow = "\n".join(_render(plan_table(specs, title="Plan", width=80, plan=plan), 80))
    assert "finetune-m…ogg/koelectra-base-v3" in narrow or "finetune-monologg/koelectra-base-v3" in narrow


def test_cron_list_at_80_columns_keeps_the_file_name_and_ls_is_an_alias(sqlite_url, tmp_path):
    folder = tmp_path / "a-rather-long-folder-name-for-campaigns" / "nightly-runs-of-the-review-models"
    folder.mkdir(parents=True)
    nightly = folder / "nightly-retrain-beomi-kcbert-base.yaml"
    nightly.write_text("jobs:\n  - {name: 'n-{date}', kind: echo}\n")
    sched(sqlite_url, "cron", "add", "0 2 * * *", str(nightly), "--name", "nightly-retrain-beomi/kcbert-base")
    runner = CliRunner()
    for command in ("list", "ls"):
        result = runner.invoke(cli, ["--db", sqlite_url, "cron", command], env={"COLUMNS": "80"},
                               catch_exceptions=False)
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        rows = _table_rows(lines)
        assert len(rows) == 1 and all(len(line) <= 80 for line in lines), result.output
        assert "base.yaml │" in rows[0] and "…" in rows[0]  # the path's end kept, its start cut
        assert "0 2 * * *" in rows[0] and re.search(r"\d{4}-\d\d-\d\d 02:00", rows[0])  # and the next run


# ---- a resubmitted campaign says what changed, and what was taken out wherever the file now is ---

CAMPAIGN = """
jobs:
  - {{name: prep, kind: echo, params: {{message: "{prep}"}}}}
  - {{name: train, kind: echo, after: [prep], params: {{message: "{train}", metric: {metric}}}}}
{extra}"""


def _campaign(folder, prep="p", train="t", metric=0.5, extra=""):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "campaign.yaml"
    path.write_text(CAMPAIGN.format(prep=prep, train=train, metric=metric, extra=extra))
    return path


def test_a_resubmitted_campaign_shows_the_changed_params_old_to_new(sqlite_url, tmp_path):
    sched(sqlite_url, "submit", str(_campaign(tmp_path)))
    queue = JobQueue(sqlite_url)
    worker = queue.register_worker("h", 1, ["cpu0"])
    _finish(queue, queue.resolve("prep"), worker)
    edited = _campaign(tmp_path, prep="p2", train="t", metric=0.75)
    plan = sched(sqlite_url, "submit", str(edited), "--dry-run", ok=False)
    out = " ".join(plan.output.split())
    assert "replace 'train' (#2): params.metric 0.5 -> 0.75" in out
    assert "refused: 'prep': changed" in out and "what changed: params.message p -> p2" in out
    refused = sched(sqlite_url, "submit", str(edited), ok=False)
    assert "what changed: params.message p -> p2" in " ".join(refused.output.split())
    rerun = " ".join(sched(sqlite_url, "submit", str(edited), "--rerun-changed").output.split())
    assert "rerun 'prep' (#1): params.message p -> p2" in rerun
    queue.dispose()


def test_describe_changes_names_added_removed_and_other_fields():
    from types import SimpleNamespace

    from scheduler.submission import describe_changes

    old = SimpleNamespace(kind="finetune", params={"lr": 2e-5, "epochs": 3, "swa": {"epochs": 2}}, gpus=1,
                          group_name=None)
    new = JobSpec(name="x", kind="finetune", params={"lr": 3e-5, "swa": {"epochs": 3}, "seed": 1}, gpus=2)
    assert describe_changes(old, new) == ("params.lr 2e-05 -> 3e-05, params.epochs 3 -> (unset), "
                                          "params.swa.epochs 2 -> 3, params.seed (unset) -> 1, gpus 1 -> 2")
    same = JobSpec(name="x", kind="finetune", params=dict(old.params), gpus=1)
    assert "same params" in describe_changes(old, same)


def test_a_job_taken_out_is_removed_whatever_path_the_campaign_has_now(sqlite_url, tmp_path):
    first = _campaign(tmp_path / "checkout-a", extra="  - {name: gone, kind: echo}\n")
    sched(sqlite_url, "submit", str(first))
    moved = _campaign(tmp_path / "checkout-b")  # the same campaign (file name, job names) elsewhere
    out = sched(sqlite_url, "submit", str(moved), "--dry-run").output
    assert "1 removed" in out and any("removed" in line and "gone" in line for line in out.splitlines())
    other = tmp_path / "elsewhere" / "other.yaml"  # another campaign: nothing of the first is "removed"
    other.parent.mkdir()
    other.write_text("jobs:\n  - {name: prep, kind: echo, params: {message: p}}\n")
    assert "removed" not in sched(sqlite_url, "submit", str(other), "--dry-run").output
    unrelated = _campaign(tmp_path / "checkout-c").parent / "campaign.yaml"
    unrelated.write_text("jobs:\n  - {name: fresh-start, kind: echo}\n")  # same file name, no shared job
    assert "removed" not in sched(sqlite_url, "submit", str(unrelated), "--dry-run").output


# ---- a shell job that exits non-zero: one line in its log, no traceback of sched's -------------


def test_a_failing_shell_job_writes_one_line_not_a_traceback(sqlite_url, tmp_path):
    from pathlib import Path

    from scheduler.execute.slots import Slot
    from scheduler.execute.worker import WorkerLoop, WorkerOptions
    from tests.helpers import step_until

    queue = JobQueue(sqlite_url)
    failing = submit(queue, "exits-3", "shell", params={"argv": ["sh", "-c", "echo before; exit 3"]})
    raising = submit(queue, "raises", "fail", params={"message": "a bug in a Python kind"})
    loop = WorkerLoop(queue, [Slot("cpu0", None)], WorkerOptions(runs_root=tmp_path / "runs", poll_s=0.05))
    step_until(loop, lambda: {queue.get(j).status for j in (failing, raising)} == {"failed"}, timeout=120)
    loop.close()
    log = Path(queue.get(failing).log_path).read_text()
    assert "before\nsh exited with code 3\n" in log and "Traceback" not in log
    assert queue.get(failing).message.endswith("sh exited with code 3")
    assert "Traceback" in Path(queue.get(raising).log_path).read_text()  # a Python kind keeps its traceback
    queue.dispose()


# ---- sched kinds KIND, "did you mean", sched cron ls ----------------------------------------------


def test_kinds_kind_shows_each_param_with_type_default_and_help(sqlite_url):
    import json

    out = CliRunner().invoke(cli, ["kinds", "echo"], env={"COLUMNS": "160"}, catch_exceptions=False).output
    row = next(line for line in out.splitlines() if "│ message" in line)
    assert "str" in row and "'hello'" in row and "printed to the job's log" in row
    data = json.loads(CliRunner().invoke(cli, ["kinds", "finetune", "--json"], catch_exceptions=False).output)
    params = {p["name"]: p for p in data["params"]}
    assert params["lr"]["type"] == "float" and params["lr"]["default"] == 2e-5 and not params["lr"]["required"]
    assert params["train"]["help"] == "labelled CSV; validation rows are split off it"  # the kind's own comment
    assert params["batch_size"]["help"] == "per device"  # the pipeline config's comment
    assert params["model"]["default"] == "tiny" and "model.from_" in params
    tune = {p["name"]: p for p in json.loads(CliRunner().invoke(cli, ["kinds", "tune", "--json"]).output)["params"]}
    assert tune["space"]["required"] and tune["finetune.lr"]["default"] == 2e-5
    assert tune["finetune.batch_size"]["help"] == "per device" and tune["finetune.seed"]["help"] != tune["seed"]["help"]
    unknown = CliRunner().invoke(cli, ["kinds", "finetun"])
    assert unknown.exit_code == 1 and "did you mean finetune?" in unknown.output


def test_an_unknown_param_suggests_the_closest_known_one(sqlite_url, tmp_path):
    path = tmp_path / "q.yaml"
    path.write_text("jobs:\n  - {name: a, kind: finetune, gpus: 0, params: {lrr: 0.1}}\n")
    out = " ".join(sched(sqlite_url, "submit", str(path), "--no-check", ok=False).output.split())
    assert "params.lrr: unknown key (did you mean lr?)" in out
    added = sched(sqlite_url, "add", "echo", "--name", "x", "-p", "mesage=hi", ok=False)
    assert "params.mesage: unknown key (did you mean message?)" in " ".join(added.output.split())
    nested = tmp_path / "tune.yaml"
    nested.write_text("jobs:\n  - {name: t, kind: tune, gpus: 0, params: {space: {lr: {type: float, low: 1.0e-5, "
                      "high: 1.0e-4}}, finetune: {epoch: 2}}}\n")
    out = " ".join(sched(sqlite_url, "submit", str(nested), "--no-check", ok=False).output.split())
    assert "params.finetune.epoch: unknown key (did you mean epochs?)" in out
    far = tmp_path / "far.yaml"
    far.write_text("jobs:\n  - {name: a, kind: echo, params: {zzzzzz: 1}}\n")
    out = " ".join(sched(sqlite_url, "submit", str(far), ok=False).output.split())
    assert "params.zzzzzz: unknown key (sched kinds echo lists the known ones)" in out


# ---- sched diff A B ------------------------------------------------------------------------------


def test_diff_shows_two_jobs_side_by_side_what_differs_first(sqlite_url):
    import json

    from scheduler.records import Records

    queue = JobQueue(sqlite_url)
    worker = queue.register_worker("h", 1, ["cpu0"])
    records = Records(queue)
    for name, lr, acc in (("ft-a", 2e-5, 0.61), ("ft-b", 3e-5, 0.64)):
        job_id = submit(queue, name, "echo", params={"message": "same", "metric": lr}, tags=["round1"])
        _finish(queue, job_id, worker)
        records.log_metric(job_id, "val_accuracy", acc - 0.1, step=1)
        records.log_metric(job_id, "val_accuracy", acc, step=2)  # the last value counts
        records.log_metric(job_id, "epochs_run", 3)
    out = CliRunner().invoke(cli, ["--db", sqlite_url, "diff", "ft-a", "ft-b"], env={"COLUMNS": "120"},
                             catch_exceptions=False).output
    rows = [line for line in out.splitlines() if line.startswith("│")]
    marks = [row.split("│")[1].strip() for row in rows]
    assert marks == sorted(marks, key=lambda m: m != "≠")  # what differs comes first
    differing = "\n".join(r for r in rows if "≠" in r)
    assert "params.metric" in differing and "2e-05" in differing and "3e-05" in differing
    assert "metrics.val_accuracy" in differing and "0.61" in differing and "0.64" in differing
    same = "\n".join(r for r in rows if "=" in r.split("│")[1])
    assert "params.message" in same and "metrics.epochs_run" in same
    data = json.loads(CliRunner().invoke(cli, ["--db", sqlite_url, "diff", "1", "2", "--json"]).output)
    assert (data["a"]["name"], data["b"]["name"]) == ("ft-a", "ft-b") and data["differ"] >= 2
    missing = CliRunner().invoke(cli, ["--db", sqlite_url, "diff", "ft-a", "nope"])
    assert missing.exit_code == 1 and "no job named or numbered 'nope'" in missing.output
    queue.dispose()


# ---- Failures lists failures (not cancels); the report's busy card, trial ticks, left-out models --


def test_the_failures_table_leaves_out_what_the_user_cancelled(queue):
    from scheduler.render import status_view
    from scheduler.views import status_snapshot

    worker = queue.register_worker("h", 1, ["cpu0"])
    submit(queue, "broke", "echo")
    submit(queue, "after-broke", "echo", after=["broke"])
    cancelled = submit(queue, "not-wanted", "echo")
    queue.cancel(cancelled)
    assert queue.fail(queue.claim(worker, "cpu0", 0).id, worker, message="boom") == "failed"
    snap = status_snapshot(queue, all_jobs=False)
    assert {j["name"] for j in snap["failures"]} == {"broke", "after-broke"}
    failures = "\n".join(_render(status_view(snap, width=120), 120)).split("Failures", 1)[1]
    assert "not-wanted" not in failures.split("Recently finished")[0]
    assert "not-wanted" in "\n".join(_render(status_view(snap, width=120), 120))  # still among recent endings


def test_the_report_says_cpu_slots_busy_marks_left_out_models_and_ticks_whole_trials(sqlite_url, tmp_path):
    from scheduler.records import Records
    from scheduler.report import write_report
    from scheduler.report.charts import study_axes

    queue = JobQueue(sqlite_url)
    worker = queue.register_worker("cpu-host", 1, ["cpu0", "cpu1"])
    records = Records(queue)
    dead = submit(queue, "ft-dead", "finetune", gpus=0, params={"model": "tiny"})
    ens = submit(queue, "ens", "ensemble", params={"members": ["ft-dead"]})
    _finish(queue, dead, worker)
    records.log_metric(dead, "val_accuracy", 0.25)
    _finish(queue, ens, worker)
    records.log_metric(ens, "left_out", 1.0, step=dead)  # the ensemble left ft-dead out
    cancelled = submit(queue, "not-wanted", "echo")
    queue.cancel(cancelled)
    page = (tmp_path / "r.html")
    write_report(queue, page)
    html = page.read_text()
    assert "CPU slots busy, last hour / day" in html and "SLOT busy" not in html
    board = html.split('id="leaderboard"', 1)[1].split('id="curves"', 1)[0]
    assert "ft-dead" in board and "(left out of ens)" in board
    failures = html.split('id="failures"', 1)[1].split('id="leaderboard"', 1)[0]
    assert "not-wanted" not in failures and "No failures." in failures
    study = {"name": "s", "directions": ["maximize"], "trials": [{"number": n, "value": 0.5 + n / 10, "state": "complete"}
                                                                for n in range(3)],
             "best_so_far": [{"number": n, "value": 0.5 + n / 10} for n in range(3)]}
    _fig, ax = study_axes(study)
    assert all(float(tick).is_integer() for tick in ax.get_xticks())
    queue.dispose()

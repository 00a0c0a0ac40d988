"""`sched report`: one self-contained HTML file, on SQLite and PostgreSQL.

The database is built directly (submit, claim, succeed, fail, log_metric) plus a small Optuna study
in the same database; nothing trains.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from click.testing import CliRunner
from sqlalchemy import event, update

from scheduler.jobqueue import JobQueue, JobSpec
from scheduler.records import Records
from scheduler.report import curves_data, gather, study_data, timeline_data, write_report
from scheduler.store.engine import db_now
from scheduler.store.schema import jobs

EPOCH_STEPS = 50  # steps per epoch in the fake fine-tunes


def _run(queue: JobQueue, worker: int, slot: str, spec: JobSpec, ending: str, minutes: tuple[float, float | None]):
    """Submit one job, claim it on `slot`, end it, and move its times to `minutes` ago (start, end)."""
    queue.submit([spec])
    job = queue.claim(worker, slot, 1)
    assert job is not None and job.name == spec.name
    if ending == "succeed":
        queue.succeed(job.id, worker)
    elif ending == "fail":
        queue.fail(job.id, worker, message="CUDA out of memory")
    with queue.write() as conn:
        now = db_now(conn)
        start, end = minutes
        values = {"started_at": now - timedelta(minutes=start)}
        if end is not None:
            values["finished_at"] = now - timedelta(minutes=end)
        conn.execute(update(jobs).where(jobs.c.id == job.id).values(**values))
    return job.id


def _log_finetune(records: Records, job_id: int, accuracies: list[float]) -> None:
    for epoch, acc in enumerate(accuracies, 1):
        for step in range((epoch - 1) * EPOCH_STEPS + 25, epoch * EPOCH_STEPS + 1, 25):
            records.log_metric(job_id, "loss", 1.2 / (1 + step / 40), step=step, split="train")
        step = epoch * EPOCH_STEPS
        records.log_metric(job_id, "accuracy", acc, step=step, split="val")
        records.log_metric(job_id, "f1", acc - 0.05, step=step, split="val")
        records.log_metric(job_id, "loss", 1.0 - acc / 2, step=step, split="val")
    records.log_metric(job_id, "val_accuracy", max(accuracies))
    records.log_metric(job_id, "val_f1", max(accuracies) - 0.05)


def build_campaign(queue: JobQueue, study: bool = True) -> dict:
    """Two hosts, three GPU slots: TAPT, fine-tunes (one failed, one running, a resumed one),
    an ensemble, a job that never ran, another tag's job, and an Optuna study."""
    records = Records(queue)
    a = queue.register_worker("gpu-a", 101, ["gpu0", "gpu1"])
    b = queue.register_worker("gpu-b", 102, ["gpu0"])
    ids = {}
    r1 = ["round1"]
    ids["tapt"] = _run(queue, a, "gpu0", JobSpec("tapt", "tapt", {"model": "klue/bert-base"}, tags=r1),
                       "succeed", (180, 150))
    for step, loss in ((0, 7.6), (100, 5.1), (200, 4.2)):
        records.log_metric(ids["tapt"], "mlm_loss", loss, step=step, split="val")
    records.log_metric(ids["tapt"], "mlm_loss", 6.0, step=100, split="train")
    ids["ft-bert"] = _run(queue, a, "gpu0", JobSpec("ft-bert", "finetune", {"model": {"from": "tapt"}}, tags=r1),
                          "succeed", (145, 100))
    _log_finetune(records, ids["ft-bert"], [0.81, 0.86, 0.87])
    ids["ft-roberta"] = _run(queue, a, "gpu1", JobSpec("ft-roberta", "finetune", {"model": "klue/roberta-base"},
                                                       tags=r1), "succeed", (140, 90))
    _log_finetune(records, ids["ft-roberta"], [0.83, 0.88, 0.885])
    # Resumed after a preemption: epoch 2 logged twice, the later value counts.
    records.log_metric(ids["ft-roberta"], "accuracy", 0.89, step=2 * EPOCH_STEPS, split="val")
    ids["ft-electra"] = _run(queue, b, "gpu0", JobSpec("ft-electra", "finetune", {"model": "electra"}, tags=r1),
                             "fail", (170, 160))
    _log_finetune(records, ids["ft-electra"], [0.5])
    ens = JobSpec("ens", "ensemble", {"members": ["ft-bert", "ft-roberta"]}, tags=r1)
    ids["ens"] = _run(queue, b, "gpu0", ens, "succeed", (85, 84))
    records.log_metric(ids["ens"], "val_accuracy", 0.9)
    ids["ft-long"] = _run(queue, a, "gpu1", JobSpec("ft-long", "finetune", {"model": "klue/bert-base"}, tags=r1),
                          "running", (60, None))
    _log_finetune(records, ids["ft-long"], [0.7])
    ids["ft-r2"] = _run(queue, b, "gpu0", JobSpec("ft-r2", "finetune", {"model": "klue/bert-base"},
                                                  tags=["round2"]), "succeed", (50, 20))
    _log_finetune(records, ids["ft-r2"], [0.8, 0.82])
    ids["tune-lr-0"] = _run(queue, b, "gpu0", JobSpec("tune-lr-0", "tune", {}, tags=r1, group_name="tune-lr"),
                            "succeed", (15, 5))
    queue.submit([JobSpec("ft-later", "finetune", {"model": "klue/bert-base"}, tags=r1)])  # never ran
    if study:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        st = optuna.create_study(storage=queue.url, study_name="tune-lr", direction="maximize")
        st.optimize(lambda t: 1 - (t.suggest_float("lr", -2, 2) - 0.5) ** 2, n_trials=6)
        optuna.create_study(storage=queue.url, study_name="other-study").optimize(
            lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    return ids


@pytest.fixture
def campaign(queue):
    return queue, build_campaign(queue)


def _page_data(page: str) -> dict:
    block = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S)
    assert block, "no report-data block"
    return json.loads(block.group(1))


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _assert_self_contained(page: str, strict: bool = True) -> None:
    """Nothing the browser would fetch: every image a PNG data URI, links only to anchors in the page,
    no stylesheet or script from elsewhere. `strict`: not even a URL in the text."""
    parser = _Tags()
    parser.feed(page)
    for tag, attrs in parser.tags:
        assert tag not in ("link", "iframe", "object", "embed", "base"), tag
        if tag == "script":
            assert attrs == {"type": "application/json", "id": "report-data"}, attrs
        if "href" in attrs:
            assert attrs["href"].startswith("#"), attrs
        if "src" in attrs:
            assert tag == "img" and attrs["src"].startswith("data:image/png;base64,"), (tag, attrs["src"][:80])
            assert base64.b64decode(attrs["src"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "@import" not in page and "url(" not in page
    if strict:
        assert "http://" not in page and "https://" not in page


def test_report_holds_timeline_curves_leaderboard_and_studies(campaign, tmp_path):
    queue, ids = campaign
    summary = write_report(queue, tmp_path / "out" / "report.html")
    page = summary.path.read_text()
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    _assert_self_contained(page)
    # One PNG each: timeline, leaderboard, overview, 6 curve jobs (tapt + 5 fine-tunes), 2 studies.
    assert page.count("data:image/png;base64,") == 11

    data = _page_data(page)
    lanes = {r["job"]: r["lane"] for r in data["timeline"]}
    assert lanes == {"tapt": "gpu-a/gpu0", "ft-bert": "gpu-a/gpu0", "ft-roberta": "gpu-a/gpu1",
                     "ft-electra": "gpu-b/gpu0", "ens": "gpu-b/gpu0", "ft-long": "gpu-a/gpu1",
                     "ft-r2": "gpu-b/gpu0", "tune-lr-0": "gpu-b/gpu0"}  # not ft-later: it never ran
    assert [r["job"] for r in data["timeline"]][0] == "tapt"  # oldest first
    assert data["lanes"] == ["gpu-a/gpu0", "gpu-a/gpu1", "gpu-b/gpu0"]
    rows = {r["job"]: r for r in data["timeline"]}
    assert rows["ft-long"]["running"] and rows["ft-long"]["status"] == "running"
    assert rows["ft-electra"]["status"] == "failed" and rows["ft-electra"]["slot"] == "gpu0"
    assert summary.timeline_rows == data["timeline"]

    assert {"ft-bert:val/accuracy", "ft-bert:val/f1", "ft-bert:val/loss", "ft-bert:train/loss",
            "tapt:val/mlm_loss", "tapt:train/mlm_loss", "ft-long:val/accuracy"} <= set(data["series"])
    assert summary.series == data["series"]
    assert data["studies"] == summary.studies == ["tune-lr", "other-study"]
    assert data["counts"]["succeeded"] == 6 and data["counts"]["queued"] == 1
    assert [r["job"] for r in data["leaderboard"][:3]] == ["ens", "ft-roberta", "ft-bert"]
    assert "ft-roberta" in page and "klue/roberta-base" in page  # the HTML table


def test_data_curves_studies_and_tag(campaign, tmp_path):
    """The plain data behind the charts (one campaign for three checks: building it is the slow part)."""
    queue, _ = campaign
    # Curves: per epoch, and a step logged twice keeps its last value.
    jobs = {j["job"]: j for j in curves_data(queue)["jobs"]}
    roberta = {sr["name"]: sr for sr in jobs["ft-roberta"]["series"]}
    acc = roberta["ft-roberta:val/accuracy"]
    assert acc["steps"] == [50, 100, 150] and acc["epochs"] == [1.0, 2.0, 3.0]
    assert acc["values"] == pytest.approx([0.83, 0.89, 0.885])
    train = roberta["ft-roberta:train/loss"]
    assert train["epochs"][:2] == [0.5, 1.0] and len(train["steps"]) == 6
    assert jobs["ft-roberta"]["x_label"] == "epoch" and jobs["ft-roberta"]["model"] == "klue/roberta-base"
    assert jobs["ft-bert"]["model"] == "from:tapt"
    tapt = {sr["name"]: sr for sr in jobs["tapt"]["series"]}
    assert tapt["tapt:val/mlm_loss"]["epochs"] == [0.0, 1.0, 2.0]  # step 0: the evaluation before training
    assert "ft-later" not in jobs and "ens" not in jobs

    # Studies: trial values and the best so far, in the study's direction.
    studies = {st["name"]: st for st in study_data(queue)["studies"]}
    tune = studies["tune-lr"]
    assert tune["jobs"] == ["tune-lr-0"] and tune["directions"] == ["maximize"]
    values = [t["value"] for t in tune["trials"]]
    assert len(values) == 6 and [b["value"] for b in tune["best_so_far"]] == [
        max(values[: i + 1]) for i in range(6)]
    assert tune["best"]["value"] == max(values) and "lr" in tune["best"]["params"]
    best = [b["value"] for b in studies["other-study"]["best_so_far"]]  # minimize by default
    assert best == sorted(best, reverse=True)

    # A tag keeps only the tagged jobs, and the studies of tagged jobs.
    summary = write_report(queue, tmp_path / "r2.html", tag="round2")
    data = _page_data(summary.path.read_text())
    assert [r["job"] for r in data["timeline"]] == ["ft-r2"]
    assert {s.split(":")[0] for s in data["series"]} == {"ft-r2"}
    assert data["studies"] == [] and sum(data["counts"].values()) == 1
    assert summary.jobs == 1 and summary.leaderboard_rows == 1
    r1 = write_report(queue, tmp_path / "r1.html", tag="round1")
    assert r1.studies == ["tune-lr"]  # tune-lr-0 carries round1; other-study belongs to no job


def test_empty_database_gives_a_valid_report_that_says_so(queue, tmp_path):
    summary = write_report(queue, tmp_path / "empty.html")
    page = summary.path.read_text()
    _assert_self_contained(page)
    assert "No jobs in this queue yet" in page and "No job has run yet" in page
    assert "data:image/png" not in page
    data = _page_data(page)
    assert data["timeline"] == [] and data["series"] == [] and data["studies"] == []
    assert summary.jobs == 0 and summary.timeline_rows == [] and summary.studies == []
    assert any("Optuna" in note for note in summary.notes)
    assert "studies" not in _table_names(queue)  # reading created no Optuna table


def _table_names(queue: JobQueue) -> set[str]:
    from sqlalchemy import inspect

    return set(inspect(queue.engine).get_table_names())


def test_names_cannot_break_out_of_the_page(queue, tmp_path):
    worker = queue.register_worker("host", 1, ["gpu0"])
    nasty = "ft-</script><img src=https://evil.example/x.png>"
    _run(queue, worker, "gpu0", JobSpec(nasty, "finetune", {"model": "m"}), "succeed", (10, 5))
    page = write_report(queue, tmp_path / "r.html").path.read_text()
    _assert_self_contained(page, strict=False)  # the name is in the text, escaped, and in no attribute
    assert _page_data(page)["timeline"][0]["job"] == nasty


def test_queries_do_not_grow_with_the_number_of_jobs(sqlite_url, tmp_path):
    def statements(n_jobs: int) -> int:
        queue = JobQueue(f"sqlite:///{tmp_path / f'q{n_jobs}.db'}")
        worker = queue.register_worker("host", 1, ["gpu0"])
        records = Records(queue)
        for i in range(n_jobs):
            job_id = _run(queue, worker, "gpu0", JobSpec(f"ft-{i}", "finetune", {"model": "m"}), "succeed",
                          (100 - i, 99 - i))
            _log_finetune(records, job_id, [0.7, 0.8])
        count = 0

        def counter(*_):
            nonlocal count
            count += 1

        event.listen(queue.engine, "before_cursor_execute", counter)
        gather(queue)
        queue.dispose()
        return count

    assert statements(2) == statements(8)


def test_running_job_ends_at_now(queue):
    worker = queue.register_worker("host", 1, ["gpu0"])
    _run(queue, worker, "gpu0", JobSpec("long", "finetune", {}), "running", (30, None))
    timeline = timeline_data(queue)
    (row,) = timeline["rows"]
    assert row["end"] == timeline["now"] and 29 * 60 < row["duration_s"] < 31 * 60
    assert timeline["span"]["busy_share"] == pytest.approx(1.0, abs=0.01)


def test_cli_writes_the_file_and_prints_its_path(sqlite_url, tmp_path, monkeypatch):
    from scheduler.cli import cli  # `report` as the group loads it (scheduler/cli/app.py COMMANDS)

    monkeypatch.chdir(tmp_path)
    queue = JobQueue(sqlite_url)
    build_campaign(queue, study=False)
    queue.dispose()
    runner = CliRunner()
    result = runner.invoke(cli, ["--db", sqlite_url, "report", "--out", "reports/r.html"], catch_exceptions=False)
    assert result.exit_code == 1  # a mistyped --out makes no folders (docs/report.md)
    assert "no folder reports (sched report creates none)" in result.output
    (tmp_path / "reports").mkdir()
    result = runner.invoke(cli, ["--db", sqlite_url, "report", "--out", "reports/r.html"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = tmp_path / "reports" / "r.html"
    assert out.is_file() and str(out) in result.output
    assert "timeline 8 job(s) on 3 slot(s)" in result.output
    result = runner.invoke(cli, ["--db", sqlite_url, "report"], catch_exceptions=False)
    assert result.exit_code == 0 and (tmp_path / "report.html").is_file()
    assert "Example" in runner.invoke(cli, ["report", "--help"]).output


def test_cli_reports_an_unwritable_path_in_one_line(sqlite_url, tmp_path):
    from scheduler.cli import cli

    (tmp_path / "file").write_text("x")
    CliRunner().invoke(cli, ["--db", sqlite_url, "init"])
    result = CliRunner().invoke(cli, ["--db", sqlite_url, "report", "--out", str(tmp_path / "file" / "r.html")])
    assert result.exit_code == 1
    assert "cannot write the report" in result.output and "Traceback" not in result.output


def test_report_imports_neither_torch_nor_optuna_without_studies(sqlite_url, tmp_path):
    queue = JobQueue(sqlite_url)
    build_campaign(queue, study=False)
    queue.dispose()
    code = ("import sys; from scheduler.jobqueue import JobQueue; from scheduler.report import write_report; "
            f"write_report(JobQueue({sqlite_url!r}), {str(tmp_path / 'r.html')!r}); "
            "print(sorted(m for m in ('torch', 'transformers', 'optuna', 'matplotlib.pyplot') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

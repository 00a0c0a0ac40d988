"""`sched report` for campaigns with a deadline: the outlook line and a chart of the forecast (a bar
per unfinished job from its expected start to its expected end) against the deadline.

The queue is built with queue files (`build_plan`) and a worker registered by hand; nothing runs.
The chart is checked on its axes (`deadline_axes`), the page on its HTML.
"""

from __future__ import annotations

import re
from datetime import datetime

import pytest
from matplotlib import dates as mdates
from matplotlib.colors import same_color

from scheduler.jobqueue import JobQueue
from scheduler.plan import build_plan
from scheduler.report import deadline_data, write_report
from scheduler.report.charts import (
    DEADLINE_MET,
    DEADLINE_MISSED,
    HELD_COLOUR,
    ROLE_COLOURS,
    deadline_axes,
)
from scheduler.report.live import LiveReport
from tests.test_report import _assert_self_contained, _page_data

HOSTILE = "x<script>alert(1)</script>"


def _submit(queue: JobQueue, jobs: list[dict], **top) -> None:
    queue.submit(build_plan({"campaign": "c", **top, "jobs": jobs}, "c.yaml"))


def _campaign(deadline: str | None = "1h") -> list[dict]:
    """On a worker with two CPU slots, `side` already running: `prep` then `deliver` take 70 min on
    the other slot, 10 min past a 1 h deadline. `late` would run beside them and end after the
    deadline: held. `mystery` has no estimate; `big` needs two GPUs that no worker has."""
    jobs = [
        {"name": "side", "kind": "sleep", "priority": 90, "expected": "30m"},
        {"name": "prep", "kind": "sleep", "priority": 10, "expected": "20m"},
        {"name": "deliver", "kind": "sleep", "priority": 10, "after": ["prep"], "expected": "50m",
         **({"deliverable": True} if deadline else {})},
        {"name": HOSTILE, "kind": "sleep", "priority": 40, "expected": "5m"},
        {"name": "mystery", "kind": "sleep", "priority": 30},
        {"name": "late", "kind": "sleep", "priority": 20, "expected": "40m"},
        {"name": "big", "kind": "shell", "params": {"argv": ["true"]}, "gpus": 2, "expected": "10m"},
    ]
    return jobs


def _start(queue: JobQueue, jobs: list[dict], **top) -> dict[str, int]:
    _submit(queue, jobs, **top)
    worker = queue.register_worker("host", 1, ["cpu0", "cpu1"])
    running = queue.claim(worker, "cpu0", 0)
    assert running.name == "side"
    return {j.name: j.id for j in queue.find()}


def _bars(ax) -> dict[int, object]:
    return {int(p.get_gid().split("-")[1]): p for p in ax.patches if (p.get_gid() or "").startswith("job-")}


def _labels(ax) -> dict[str, object]:
    return {t.get_text(): t for t in ax.get_yticklabels()}


def _line(ax, gid: str):
    (line,) = [ln for ln in ax.get_lines() if ln.get_gid() == gid]
    return line


def test_the_report_draws_every_unfinished_job_against_the_deadline(queue, tmp_path):
    ids = _start(queue, _campaign(), deadline="1h")
    summary = write_report(queue, tmp_path / "r.html")
    page = summary.path.read_text()
    _assert_self_contained(page, strict=False)
    assert summary.deadlines == ["c"]
    assert '<a href="#deadline">Deadline</a>' in page and '<h2 id="deadline">Deadline</h2>' in page
    assert page.count("data:image/png;base64,") == 2  # the GPU timeline (side runs) and the forecast

    # The outlook line, marked late: the deliverable ends 10 minutes after the deadline.
    outlook = re.search(r'<p class="outlook late">(.*?)</p>', page).group(1)
    assert outlook.startswith("c: deadline ") and "misses the deadline by 10m" in outlook

    (section,) = deadline_data(queue)
    fig, ax = deadline_axes(section)
    bars = _bars(ax)
    # A bar per unfinished job that can run; `big` cannot, and is listed instead.
    assert set(bars) == {ids[n] for n in ("side", "prep", "deliver", HOSTILE, "mystery", "late")}
    assert ids["big"] not in bars
    assert f"big #{ids['big']}: needs 2 GPU(s)" in page

    # Deliverable dark with a bold label, its path light, the rest blue, the held job white.
    assert same_color(bars[ids["deliver"]].get_facecolor(), ROLE_COLOURS["deliverable"])
    assert same_color(bars[ids["prep"]].get_facecolor(), ROLE_COLOURS["path"])
    assert same_color(bars[ids[HOSTILE]].get_facecolor(), ROLE_COLOURS["other"])
    assert same_color(bars[ids["late"]].get_facecolor(), HELD_COLOUR)
    labels = _labels(ax)
    assert labels[f"deliver #{ids['deliver']}"].get_fontweight() == "bold"
    assert labels[f"prep #{ids['prep']}"].get_fontweight() == "normal"
    assert f"late #{ids['late']}  (held)" in labels
    assert f"{HOSTILE} #{ids[HOSTILE]}" in labels  # the chart's text is no markup: shown as written

    # Bars from the expected start to the expected end, in time order; the running job from its
    # real start (hatched); the held one after the deliverable.
    deliver = bars[ids["deliver"]]
    assert deliver.get_x() == pytest.approx(bars[ids["prep"]].get_x() + bars[ids["prep"]].get_width(), abs=1e-6)
    assert deliver.get_width() == pytest.approx(50 / 1440, rel=1e-3)
    started = queue.get("side").started_at
    assert bars[ids["side"]].get_x() == pytest.approx(mdates.date2num(started), abs=1 / 86400)
    assert bars[ids["side"]].get_hatch() == "//" and not bars[ids["prep"]].get_hatch()
    assert bars[ids["late"]].get_x() >= deliver.get_x() + deliver.get_width() - 1e-6
    assert any(t.get_text().strip() == "? no estimate" for t in ax.texts)
    assert "No duration estimate" in page and "mystery" in page

    # Now, and the deadline in red (the deliverable ends after it).
    deadline = mdates.date2num(datetime.fromisoformat(section["deadline"]))
    line = _line(ax, "deadline")
    assert line.get_xdata()[0] == pytest.approx(deadline) and same_color(line.get_color(), DEADLINE_MISSED)
    assert deliver.get_x() + deliver.get_width() > deadline
    assert _line(ax, "now").get_xdata()[0] == pytest.approx(mdates.date2num(datetime.fromisoformat(section["now"])))

    # The table: every unfinished job, the deliverable's row bold, the hostile name escaped.
    rows = re.findall(r'<tr class="(\w+)"><td class="n">(\d+)</td>', page)
    assert {int(i) for _, i in rows} == set(ids.values())
    assert ("deliverable", str(ids["deliver"])) in rows and ("path", str(ids["prep"])) in rows
    assert HOSTILE not in page
    assert "x&lt;script&gt;alert(1)&lt;/script&gt;" in page
    jobs = {j["name"]: j for j in _page_data(page)["deadlines"][0]["jobs"]}
    assert jobs[HOSTILE]["drawn"] and jobs["deliver"]["deliverable"] and jobs["late"]["held"]


def test_a_deadline_the_deliverables_meet_is_drawn_green(sqlite_url, tmp_path):
    queue = JobQueue(sqlite_url)
    _start(queue, _campaign(), deadline="3h")
    page = write_report(queue, tmp_path / "r.html").path.read_text()
    outlook = re.search(r'<p class="outlook">(.*?)</p>', page).group(1)
    assert "to spare" in outlook and "late" not in re.search(r'<p class="outlook[^"]*"', page).group(0)
    (section,) = deadline_data(queue)
    _, ax = deadline_axes(section)
    assert same_color(_line(ax, "deadline").get_color(), DEADLINE_MET)
    queue.dispose()


def test_a_queue_without_deadlines_gets_no_deadline_section(sqlite_url, tmp_path):
    queue = JobQueue(sqlite_url)
    _start(queue, _campaign(deadline=None))  # a campaign, but no deadline
    summary = write_report(queue, tmp_path / "r.html")
    page = summary.path.read_text()
    assert deadline_data(queue) == [] and summary.deadlines == []
    assert 'id="deadline"' not in page and "#deadline" not in page and 'class="outlook' not in page
    assert "deadlines" not in _page_data(page)
    assert page.count("data:image/png;base64,") == 1  # the GPU timeline only
    queue.dispose()


def test_bars_are_capped_with_the_deliverables_path_first(sqlite_url, tmp_path):
    queue = JobQueue(sqlite_url)
    # Plain priorities (policy warn): 70 fillers go first, the path last.
    jobs = [{"name": f"filler-{i}", "kind": "sleep", "priority": 50, "expected": "5m"} for i in range(70)]
    jobs += [{"name": "prep", "kind": "sleep", "priority": 1, "expected": "5m"},
             {"name": "deliver", "kind": "sleep", "priority": 1, "after": ["prep"], "deliverable": True,
              "expected": "5m"}]
    _submit(queue, jobs, deadline="1h", deadline_policy="warn")
    summary = write_report(queue, tmp_path / "r.html")
    page = summary.path.read_text()
    (section,) = deadline_data(queue)
    _, ax = deadline_axes(section)
    bars = _bars(ax)
    names = {j["id"]: j["name"] for j in section["jobs"]}
    assert len(bars) == 60 and section["not_drawn"] == 12
    drawn = {names[i] for i in bars}
    assert {"prep", "deliver"} <= drawn  # the last to start, drawn all the same
    assert {f"filler-{i}" for i in range(58)} <= drawn  # then the earliest
    assert "12 more job(s) not drawn" in page
    assert any("12 job(s) not drawn" in note for note in summary.notes)
    assert len(re.findall(r'<tr class="\w+"><td class="n">', page)) == 72  # the table lists every job
    assert "(deadline_policy: warn, nothing changed)" in page
    queue.dispose()


def test_the_live_page_follows_the_clock_while_it_shows_a_deadline(sqlite_url, tmp_path):
    from sqlalchemy import update

    from scheduler.store.engine import db_now
    from scheduler.store.schema import campaigns

    queue = JobQueue(sqlite_url)
    _submit(queue, _campaign(deadline=None))
    live = LiveReport(queue, every_s=0.1)
    assert live.refresh() and not live.refresh()  # nothing changed, no render
    # A deadline set on the campaign changes no job; the page follows all the same.
    with queue.write() as conn:
        conn.execute(update(campaigns).where(campaigns.c.name == "c").values(deadline=db_now(conn)))
    assert live.refresh() and b'id="deadline"' in live.current.page
    version = live.current.version
    assert live.refresh() and live.current.version == version + 1  # the forecast moves with the clock
    queue.dispose()

"""`sched report`: one self-contained HTML file about a campaign, to open in any browser offline.

Three layers, so tests can check what goes in without reading pictures:

- `gather`: plain dicts and lists from a fixed number of bounded queries (plus `results.leaderboard`
  and, for campaigns with a deadline, the forecast `sched forecast` prints);
- `charts`: one PNG (bytes) per chart, matplotlib's Agg canvas, no pyplot state;
- `page`: the HTML, images as data URIs, inline CSS and a JSON block for scripts and tests.

`write_report` runs the three and writes the file atomically. matplotlib and optuna are imported
only where a chart is drawn or a study is read, and nothing here imports torch.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.util import atomic_write

from ..errors import SchedError
from ..jobqueue import JobQueue
from .gather import (
    CURVE_JOB_LIMIT,
    TIMELINE_LIMIT,
    curves_data,
    deadline_data,
    gather,
    study_data,
    summary_data,
    timeline_data,
)
from .page import machine_data, render_html

__all__ = ["ReportSummary", "write_report", "gather", "curves_data", "deadline_data", "study_data", "summary_data",
           "timeline_data", "render_html", "machine_data", "check_out_path"]


@dataclass
class ReportSummary:
    """What a report holds: enough for the CLI's one-line answer and for tests."""

    path: Path
    jobs: int  # jobs counted in the header (all of them, or those with the tag)
    timeline_rows: list[dict] = field(default_factory=list)  # {job, id, status, lane, slot, ...}
    series: list[str] = field(default_factory=list)  # "job:split/key", e.g. "ft-a:val/accuracy"
    studies: list[str] = field(default_factory=list)
    leaderboard_rows: int = 0
    notes: list[str] = field(default_factory=list)  # sections left out, and why
    deadlines: list[str] = field(default_factory=list)  # campaigns with a deadline section


def check_out_path(path: Path) -> None:
    """Refuse a report path that is not a regular file or absent.

    The report replaces its file by renaming a new one over it: over `/dev/full` that turns the
    device into a plain file, over a symlink it replaces the link (not what it points to)."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise SchedError(f"cannot write the report to {path}: {exc.strerror or exc}") from None
    if mode is not None and not stat.S_ISREG(mode):
        what = ("a symlink" if stat.S_ISLNK(mode) else "a folder" if stat.S_ISDIR(mode) else
                "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
        raise SchedError(f"cannot write the report to {path}: {what}; give the path of a file (new or "
                         "one to replace)")


def write_report(queue: JobQueue, out_path: str | Path, tag: str | None = None) -> ReportSummary:
    """Gather, plot and write the report to `out_path`, a regular file or none yet (parents
    created; replaced atomically: a reader sees the old report or the new one)."""
    from .charts import make_charts

    path = Path(out_path)
    check_out_path(path)  # before the minutes of gathering and plotting
    data = gather(queue, tag)
    page = render_html(data, make_charts(data))
    check_out_path(path)  # it may have changed meanwhile
    try:
        atomic_write(path, page)
    except OSError as exc:
        raise SchedError(f"cannot write the report to {path}: {exc.strerror or exc}") from None
    notes = [n for n in (data["studies"]["note"],) if n]
    if data["timeline"]["truncated"]:
        notes.append(f"timeline: only the {TIMELINE_LIMIT} most recent jobs")
    if data["curves"]["truncated"]:
        notes.append(f"curves: only the {CURVE_JOB_LIMIT} most recent training jobs")
    for section in data["deadlines"]:
        if section["not_drawn"]:
            notes.append(f"deadline of {section['campaign']}: {section['not_drawn']} job(s) not drawn (the table "
                         "lists them)")
    machine = machine_data(data)
    return ReportSummary(path=path, jobs=data["summary"]["jobs"], timeline_rows=machine["timeline"],
                         series=machine["series"], studies=machine["studies"],
                         leaderboard_rows=len(data["leaderboard"]), notes=notes,
                         deadlines=[s["campaign"] for s in data["deadlines"]])

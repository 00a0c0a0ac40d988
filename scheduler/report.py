"""`sched report`: one self-contained HTML file about a campaign, to open in any browser offline.

Four layers, so tests can check what goes in without reading pictures:

- gather (`summary_data`, `timeline_data`, `curves_data`, `study_data`, plus `results.leaderboard`):
  plain dicts and lists from a fixed number of bounded queries, whatever the number of jobs;
- plot (`plot_*`): one PNG (bytes) per chart, drawn with matplotlib's Agg canvas directly, so no
  pyplot state and no GUI backend is touched;
- assemble (`render_html`): the page, with every image a base64 data URI, inline CSS only and a
  JSON block (`<script type="application/json" id="report-data">`) for scripts and tests;
- `write_report`: the three together, written atomically.

matplotlib and optuna are imported inside the functions that need them, and nothing here imports
torch, so the CLI stays fast (see `scheduler.cli`).
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import and_, inspect, or_, select

from .db import db_now
from .errors import SchedError
from .jobqueue import JobQueue
from .models import ALL_STATES, Job, Metric, Worker
from .render import _duration
from .results import KEY_PARAMS, _effective_params, _model, leaderboard
from .views import status_snapshot

# Bounds that keep every query an index range with a LIMIT (or an IN over such a list).
TIMELINE_LIMIT = 2000  # most recent jobs that ran
CURVE_JOB_LIMIT = 40  # most recent jobs with training curves
STUDY_LIMIT = 20  # most recent Optuna studies
LEADERBOARD_CHART_LIMIT = 30  # bars in the leaderboard chart (the table has every row)

CURVE_KINDS = ("finetune", "tapt")
# (key, split) pairs a training run logs with a step (pipeline/callbacks.py: step = the Trainer's
# global step; evaluation runs at each epoch's end), in the order the legend lists them.
# TAPT's perplexity is exp(val mlm_loss): the same curve again, so it is left out.
CURVE_SERIES = (("accuracy", "val"), ("f1", "val"), ("loss", "val"), ("loss", "train"),
                ("mlm_loss", "val"), ("mlm_loss", "train"))
SCORE_KEYS = {"accuracy", "f1"}  # on the left axis (0..1); losses on the right

STATUS_COLOURS = {
    "succeeded": "#4c9f50", "running": "#e6a817", "failed": "#d64541", "killed": "#8e2a2b",
    "lost": "#a05195", "cancelled": "#9e9e9e", "upstream_failed": "#e8a0a0", "queued": "#5fa8d3",
}
KIND_COLOURS = {"finetune": "#3b75af", "ensemble": "#ef8636"}
DPI = 100


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


# ---- gather: plain data ----------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


def _iso_ms(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds")


def _has_tag(tags, tag: str | None) -> bool:
    return tag is None or tag in (tags or [])


def summary_data(queue: JobQueue, tag: str | None = None) -> dict:
    """Counts by state, the database, and the GPU busy share of `sched status`.

    With a tag the counts are the tagged jobs'; the busy share is the machines', whatever the tag.
    """
    snap = status_snapshot(queue, all_jobs=False)
    counts = dict(snap["counts"])
    if tag is not None:
        # Tags are a JSON list, filtered here as `sched results` does (portable across backends).
        with queue.read_session() as s:
            counts = {state: 0 for state in ALL_STATES}
            for status, tags in s.execute(select(Job.status, Job.tags)):
                if _has_tag(tags, tag):
                    counts[status] = counts.get(status, 0) + 1
    return {"now": snap["now"], "tag": tag, "counts": counts, "jobs": sum(counts.values()),
            "busy": snap["busy"], "workers": len(snap["workers"]),
            "database": queue.engine.url.render_as_string(hide_password=True)}


def _natural(text: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def timeline_data(queue: JobQueue, tag: str | None = None, limit: int = TIMELINE_LIMIT) -> dict:
    """Every job that ran (its last attempt), as a bar on its worker's host/slot lane.

    A running job ends at the database's now. A job back in the queue (retry, preemption) is left
    out: its row no longer says when its earlier attempt ended.
    """
    with queue.read_session() as s:
        now = db_now(s)
        ran = or_(Job.status == "running", and_(Job.finished_at.is_not(None), Job.worker_id.is_not(None)))
        rows = s.execute(
            select(Job.id, Job.name, Job.kind, Job.status, Job.slot, Job.worker_id, Job.started_at,
                   Job.finished_at, Job.tags, Worker.host)
            .outerjoin(Worker, Worker.id == Job.worker_id)
            .where(Job.started_at.is_not(None), ran)
            .order_by(Job.started_at.desc(), Job.id.desc()).limit(limit)).all()
    truncated = len(rows) == limit
    bars, lanes, first, last = [], {}, None, None
    for r in reversed(rows):
        if not _has_tag(r.tags, tag):
            continue
        running = r.status == "running"
        end = max(now if running else r.finished_at, r.started_at)
        host = r.host or f"worker{r.worker_id}"
        lane = f"{host}/{r.slot or '?'}"
        duration = (end - r.started_at).total_seconds()
        bars.append({"id": r.id, "job": r.name, "kind": r.kind, "status": r.status, "lane": lane,
                     "host": host, "slot": r.slot, "worker_id": r.worker_id, "start": _iso_ms(r.started_at),
                     "end": _iso_ms(end), "duration_s": duration, "running": running})
        lanes[lane] = lanes.get(lane, 0.0) + duration
        first = r.started_at if first is None else min(first, r.started_at)
        last = end if last is None else max(last, end)
    span = None
    if bars:
        seconds = max((last - first).total_seconds(), 1.0)
        span = {"start": _iso(first), "end": _iso(last), "seconds": seconds,
                # Busy share of the lanes shown, over the span shown (not only the last day).
                "busy_share": round(sum(lanes.values()) / (seconds * len(lanes)), 4)}
    ordered = sorted(lanes, key=_natural)
    return {"now": _iso_ms(now), "rows": bars, "truncated": truncated, "span": span,
            "lanes": [{"lane": lane, "busy_s": lanes[lane]} for lane in ordered]}


def curves_data(queue: JobQueue, tag: str | None = None, limit: int = CURVE_JOB_LIMIT) -> dict:
    """Training curves per job: {"jobs": [...], "truncated": bool}, three queries in all.

    Each job: {job, id, kind, model, status, x_label, series: [{name, key, split, steps, epochs,
    values}]}. A point logged twice for the same step (a resumed run) keeps its last value. Epoch =
    step / the first evaluation's step: evaluation runs once per epoch, so its first step is the
    number of steps in an epoch. With no evaluation (full-data runs) the x axis stays in steps.
    """
    with queue.read_session() as s:
        # The tag is filtered in Python (as `sched results` does), over ids and tags only.
        query = (select(Job.id, Job.tags).where(Job.kind.in_(CURVE_KINDS), Job.started_at.is_not(None))
                 .order_by(Job.id.desc()))
        candidates = s.execute(query if tag else query.limit(limit + 1)).all()
        ids = [c.id for c in candidates if _has_tag(c.tags, tag)]
        truncated = len(ids) > limit
        ids = ids[:limit]
        chosen = s.execute(select(Job.id, Job.name, Job.kind, Job.status, Job.params)
                           .where(Job.id.in_(ids)).order_by(Job.id)).all() if ids else []
        keys = {key for key, _ in CURVE_SERIES}
        points = s.execute(select(Metric.job_id, Metric.key, Metric.split, Metric.step, Metric.value)
                           .where(Metric.job_id.in_(ids), Metric.key.in_(keys), Metric.step.is_not(None))
                           .order_by(Metric.id)).all() if ids else []
    by_job: dict[int, dict[tuple[str, str], dict[int, float]]] = {}
    for p in points:
        by_job.setdefault(p.job_id, {}).setdefault((p.key, p.split), {})[p.step] = p.value
    jobs = []
    for c in chosen:
        logged = by_job.get(c.id)
        if not logged:
            continue
        val_steps = [step for (key, split), pts in logged.items() if split == "val" for step in pts if step > 0]
        per_epoch = min(val_steps) if val_steps else None
        series = []
        for key, split in CURVE_SERIES:
            pts = logged.get((key, split))
            if not pts:
                continue
            steps = sorted(pts)
            series.append({"name": f"{c.name}:{split}/{key}", "key": key, "split": split, "steps": steps,
                           "epochs": [round(st / per_epoch, 3) for st in steps] if per_epoch else None,
                           "values": [pts[st] for st in steps]})
        if series:
            jobs.append({"job": c.name, "id": c.id, "kind": c.kind, "status": c.status,
                         "model": _model(_effective_params(c.kind, c.params or {}).get("model")),
                         "x_label": "epoch" if per_epoch else "step", "series": series})
    return {"jobs": jobs, "truncated": truncated}


def _optuna_tables_present(queue: JobQueue) -> bool:
    names = set(inspect(queue.engine).get_table_names())
    return {"studies", "trials", "version_info"} <= names


def study_data(queue: JobQueue, tag: str | None = None, limit: int = STUDY_LIMIT) -> dict:
    """Each Optuna study in the queue's database: trial values and the best so far.

    {"studies": [...], "note": str | None}. A study belongs to the jobs named like it (a tune job's
    study is named after its group or its name); with a tag, only studies of tagged jobs count.
    Reads nothing (and creates no table) when Optuna's tables are absent.
    """
    if not _optuna_tables_present(queue):
        return {"studies": [], "note": "no Optuna tables in this database (no tuning study yet)"}
    import optuna  # only here: importing optuna costs about a second

    try:
        storage = optuna.storages.RDBStorage(queue.url, skip_table_creation=True)
    except Exception as exc:  # noqa: BLE001 - e.g. tables from another Optuna version
        return {"studies": [], "note": f"cannot read the Optuna studies: {str(exc).splitlines()[0]}"}
    try:
        summaries = optuna.study.get_all_study_summaries(storage, include_best_trial=False)
        summaries.sort(key=lambda sm: (sm.datetime_start or datetime.min, sm.study_name), reverse=True)
        names = [sm.study_name for sm in summaries]
        owners = _study_jobs(queue, names)
        if tag is not None:
            summaries = [sm for sm in summaries
                         if any(_has_tag(tags, tag) for _, tags in owners.get(sm.study_name, []))]
        truncated = len(summaries) > limit
        studies = [_study(optuna.load_study(study_name=sm.study_name, storage=storage),
                          [job for job, _ in owners.get(sm.study_name, [])])
                   for sm in summaries[:limit]]
    finally:
        storage.engine.dispose()
    note = f"only the {limit} most recent studies are shown" if truncated else None
    return {"studies": studies[::-1], "note": note}


def _study_jobs(queue: JobQueue, names: list[str]) -> dict[str, list[tuple[str, list]]]:
    """{study name: [(job name, tags)]} for the jobs named or grouped like a study (one query)."""
    if not names:
        return {}
    with queue.read_session() as s:
        rows = s.execute(select(Job.name, Job.group_name, Job.tags).where(
            or_(Job.name.in_(names), Job.group_name.in_(names))).order_by(Job.id)).all()
    owners: dict[str, list[tuple[str, list]]] = {}
    for name, group, tags in rows:
        for study in {name, group} & set(names):
            owners.setdefault(study, []).append((name, tags or []))
    return owners


def _study(study, jobs: list[str]) -> dict:
    from optuna.trial import TrialState

    directions = [d.name.lower() for d in study.directions]
    maximize = directions[0] == "maximize"
    trials, best_so_far, states = [], [], {}
    best = None
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
        # Multi-objective studies: the first objective is plotted (the note says so).
        value = t.values[0] if t.state == TrialState.COMPLETE and t.values else None
        trials.append({"number": t.number, "state": t.state.name.lower(), "value": value})
        if value is not None and (best is None or (value > best["value"] if maximize else value < best["value"])):
            best = {"number": t.number, "value": value, "params": t.params}
        if best is not None:
            best_so_far.append({"number": t.number, "value": best["value"]})
    return {"name": study.study_name, "directions": directions, "jobs": jobs, "trials": trials,
            "states": states, "best_so_far": best_so_far, "best": best}


def gather(queue: JobQueue, tag: str | None = None) -> dict:
    """Everything the report shows, as plain data."""
    return {"summary": summary_data(queue, tag), "timeline": timeline_data(queue, tag),
            "leaderboard": leaderboard(queue, tag=tag), "curves": curves_data(queue, tag),
            "studies": study_data(queue, tag)}


# ---- plot: PNG bytes -------------------------------------------------------------------------


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _clip(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: max(chars - 1, 1)] + "…"


def plot_timeline(timeline: dict) -> bytes | None:
    """Lanes (host/slot) top to bottom, a bar per job coloured by state; grey is idle time."""
    rows = timeline["rows"]
    if not rows:
        return None
    from matplotlib import dates as mdates
    from matplotlib.patches import Patch

    lanes = [lane["lane"] for lane in timeline["lanes"]]
    y_of = {lane: len(lanes) - 1 - i for i, lane in enumerate(lanes)}
    start = mdates.date2num(datetime.fromisoformat(timeline["span"]["start"]))
    end = mdates.date2num(datetime.fromisoformat(timeline["span"]["end"]))
    width_days = max(end - start, 1 / 86400)
    label_in = min(3.0, 0.3 + 0.075 * max(len(lane) for lane in lanes))
    fig_w, fig_h = 11.0, 1.3 + 0.45 * len(lanes)
    fig = _figure(fig_w, fig_h)
    left, right = label_in / fig_w, 0.98
    fig.subplots_adjust(left=left, right=right, top=1 - 0.45 / fig_h, bottom=0.75 / fig_h)
    ax = fig.add_subplot()
    pad = width_days * 0.01
    ax.set_xlim(start - pad, end + pad)
    ax.set_ylim(-0.6, len(lanes) - 0.4)
    ax.barh(list(y_of.values()), width_days, left=start, height=0.7, color="#eeeeee", zorder=0)
    px_per_day = (right - left) * fig_w * DPI / (width_days + 2 * pad)
    min_w = width_days / 600  # a 2-second job in a 10-hour span still shows as a sliver
    groups: dict[tuple[int, str, bool], list[tuple[float, float]]] = {}
    for r in rows:
        x0 = mdates.date2num(datetime.fromisoformat(r["start"]))
        w = max(mdates.date2num(datetime.fromisoformat(r["end"])) - x0, min_w)
        y = y_of[r["lane"]]
        groups.setdefault((y, r["status"], r["running"]), []).append((x0, w))
        fits = int((w * px_per_day - 6) / 5.6)  # about 5.6 px per character at 7.5 pt
        if fits >= 6 or fits >= len(r["job"]):
            ax.text(x0 + w / 2, y, _clip(r["job"], fits), ha="center", va="center", fontsize=7.5,
                    color="white" if r["status"] in ("succeeded", "failed", "killed", "lost") else "black",
                    clip_on=True, zorder=3)
    # One artist per lane and state, not one per job: thousands of bars draw in a fraction of a second.
    for (y, status, running), spans in groups.items():
        ax.broken_barh(spans, (y - 0.35, 0.7), facecolors=STATUS_COLOURS.get(status, "#777777"),
                       edgecolor="white", linewidth=0.6, hatch="//" if running else None, zorder=2)
    if any(r["running"] for r in rows):
        now = mdates.date2num(datetime.fromisoformat(timeline["now"]))
        ax.axvline(now, color="#444444", linestyle="--", linewidth=0.8, zorder=4)
    ax.set_yticks(list(y_of.values()), lanes, fontsize=8.5)
    locator = mdates.AutoDateLocator(minticks=4, maxticks=10)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_xlabel("time (UTC)", fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    states = [st for st in STATUS_COLOURS if any(r["status"] == st for r in rows)]
    ax.legend(handles=[Patch(color=STATUS_COLOURS[st], label=st) for st in states], ncols=len(states),
              loc="lower right", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8, borderaxespad=0.2)
    return _png(fig)


def leaderboard_chart_rows(rows: list[dict], limit: int = LEADERBOARD_CHART_LIMIT) -> list[dict]:
    """The rows the chart shows: scored ones, best first."""
    scored = sorted((r for r in rows if r["val_accuracy"] is not None), key=lambda r: -r["val_accuracy"])
    return scored[:limit]


def plot_leaderboard(rows: list[dict]) -> bytes | None:
    """Horizontal bars of val accuracy, best on top, coloured by kind."""
    shown = leaderboard_chart_rows(rows)
    if not shown:
        return None
    from matplotlib.patches import Patch

    labels = [_clip(r["job"] + (f"  ({r['model']})" if r["model"] and r["kind"] != "ensemble" else ""), 48)
              for r in shown]
    values = [r["val_accuracy"] for r in shown]
    fig_w, fig_h = 11.0, 1.0 + 0.3 * len(shown)
    fig = _figure(fig_w, fig_h)
    label_in = min(4.0, 0.3 + 0.068 * max(len(label) for label in labels))
    fig.subplots_adjust(left=label_in / fig_w, right=0.93, top=1 - 0.3 / fig_h, bottom=0.6 / fig_h)
    ax = fig.add_subplot()
    ys = list(range(len(shown)))[::-1]
    ax.barh(ys, values, height=0.7, color=[KIND_COLOURS.get(r["kind"], "#8c8c8c") for r in shown])
    lo, hi = min(values), max(values)
    # Scores of one campaign sit close together: start the axis below the lowest, and say so.
    floor = max(0.0, int((lo - max(0.02, (hi - lo) * 0.5)) * 50) / 50) if len(values) > 1 else 0.0
    ax.set_xlim(floor, min(1.0, hi + max(0.01, (hi - floor) * 0.12)) if hi <= 1 else hi * 1.05)
    for y, v in zip(ys, values):
        ax.text(v, y, f" {v:.4f}", va="center", fontsize=8)
    ax.set_yticks(ys, labels, fontsize=8)
    ax.set_ylim(-0.6, len(shown) - 0.4)
    ax.set_xlabel("val accuracy" + (f" (axis starts at {floor:g})" if floor > 0 else ""), fontsize=9)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    kinds = list(dict.fromkeys(r["kind"] for r in shown))
    ax.legend(handles=[Patch(color=KIND_COLOURS.get(k, "#8c8c8c"), label=k) for k in kinds],
              loc="lower right", fontsize=8, frameon=False)
    return _png(fig)


_SERIES_STYLE = {  # (colour, linestyle, marker)
    ("accuracy", "val"): ("#3b75af", "-", "o"), ("f1", "val"): ("#519e3e", "-", "s"),
    ("loss", "val"): ("#c53a32", "-", "o"), ("loss", "train"): ("#ef8636", "-", None),
    ("mlm_loss", "val"): ("#c53a32", "-", "o"), ("mlm_loss", "train"): ("#ef8636", "-", None),
}


def plot_curves(job: dict) -> bytes | None:
    """One job's curves: scores on the left axis and losses on the right (TAPT: losses only)."""
    series = job["series"]
    if not series:
        return None
    x_key = "epochs" if job["x_label"] == "epoch" else "steps"
    has_scores = any(sr["key"] in SCORE_KEYS for sr in series)
    left = [sr for sr in series if (sr["key"] in SCORE_KEYS) == has_scores]
    right = [sr for sr in series if sr not in left]
    fig = _figure(5.4, 3.5)
    fig.subplots_adjust(left=0.13, right=0.86 if right else 0.96, top=0.9, bottom=0.25)
    ax = fig.add_subplot()
    handles = []
    for axis, group in ((ax, left), (ax.twinx() if right else None, right)):
        for sr in group:
            colour, style, marker = _SERIES_STYLE.get((sr["key"], sr["split"]), ("#555555", "-", None))
            many = len(sr["steps"]) > 30
            handles += axis.plot(sr[x_key], sr["values"], color=colour, linestyle=style,
                                 marker="o" if len(sr["steps"]) == 1 else None if many else marker,
                                 markersize=3.5,
                                 linewidth=1.0 if sr["split"] == "train" else 1.6,
                                 alpha=0.75 if sr["split"] == "train" else 1.0,
                                 label=f"{sr['split']} {sr['key']}")
        if group:
            axis.set_ylabel(" / ".join(dict.fromkeys(sr["key"] for sr in group)), fontsize=8)
            axis.tick_params(labelsize=7.5)
    ax.set_xlabel(job["x_label"], fontsize=8)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs, or whole steps
    ax.grid(alpha=0.25)
    title = job["job"] + (f"  ·  {job['model']}" if job["model"] else "")
    ax.set_title(_clip(title, 60) + ("" if job["status"] == "succeeded" else f"  [{job['status']}]"),
                 fontsize=9, loc="left")
    # Below the axes: with two y axes no spot inside is sure to stay clear of every line.
    fig.legend(handles=handles, fontsize=7, loc="lower center", ncols=min(len(handles), 4), frameon=False)
    return _png(fig)


def plot_curves_overview(jobs: list[dict], highlight: int = 10) -> bytes | None:
    """Val accuracy per epoch of every fine-tune on one axis (only with two or more to compare);
    the `highlight` best (by their best epoch) in colour with a legend, the others thin and grey."""
    lines = [(j, sr) for j in jobs for sr in j["series"]
             if sr["key"] == "accuracy" and sr["split"] == "val" and sr["epochs"]]
    if len(lines) < 2:
        return None
    from matplotlib.ticker import MaxNLocator

    ranked = sorted(lines, key=lambda line: -max(line[1]["values"]))
    best, rest = ranked[:highlight], ranked[highlight:]
    fig = _figure(11.0, 4.0)
    fig.subplots_adjust(left=0.07, right=0.76, top=0.92, bottom=0.13)
    ax = fig.add_subplot()
    for _, sr in rest:
        ax.plot(sr["epochs"], sr["values"], color="#bbbbbb", linewidth=0.8, zorder=1)
    for (job, sr), colour in zip(best, _palette(len(best))):
        ax.plot(sr["epochs"], sr["values"], marker="o", markersize=3, linewidth=1.5, color=colour, zorder=2,
                label=f"{_clip(job['job'], 30)}  {max(sr['values']):.4f}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch", fontsize=9)
    ax.set_ylabel("val accuracy", fontsize=9)
    ax.grid(alpha=0.25)
    title = "validation accuracy per epoch, every fine-tune"
    if rest:
        title += f" (the best {len(best)} in colour, {len(rest)} more in grey)"
    ax.set_title(title, fontsize=10, loc="left")
    ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
              title="best val accuracy", title_fontsize=7.5)
    return _png(fig)


def _palette(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def plot_study(study: dict) -> bytes | None:
    """Trial values by trial number (dots) and the best so far (a step line)."""
    done = [t for t in study["trials"] if t["value"] is not None]
    if not done:
        return None
    fig = _figure(5.4, 3.3)
    fig.subplots_adjust(left=0.15, right=0.96, top=0.86, bottom=0.15)
    ax = fig.add_subplot()
    ax.scatter([t["number"] for t in done], [t["value"] for t in done], s=16, color="#3b75af",
               alpha=0.7, label="trial value", zorder=2)
    best = study["best_so_far"]
    ax.step([b["number"] for b in best], [b["value"] for b in best], where="post", color="#c53a32",
            linewidth=1.6, label="best so far", zorder=3)
    ax.set_xlabel("trial", fontsize=8)
    ax.set_ylabel(f"objective ({study['directions'][0]})", fontsize=8)
    ax.tick_params(labelsize=7.5)
    ax.grid(alpha=0.25)
    ax.set_title(_clip(study["name"], 60), fontsize=9, loc="left")
    ax.legend(fontsize=7, loc="best")
    return _png(fig)


# ---- assemble: one HTML page -----------------------------------------------------------------

CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#222;
background:#fafafa}
main{max-width:1160px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:22px;margin:8px 0 4px}
h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:14px;margin:14px 0 6px}.meta{color:#666;font-size:13px}
.note{color:#777;font-size:13px;font-style:italic}
nav a{margin-right:14px;font-size:14px;color:#3b75af;text-decoration:none}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}
.card{background:#fff;border:1px solid #e2e2e2;border-radius:6px;padding:8px 12px;min-width:110px}
.card b{display:block;font-size:20px}.card span{font-size:12px;color:#666}
.chip{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px;vertical-align:middle}
img{max-width:100%;height:auto;background:#fff;border:1px solid #e6e6e6;border-radius:4px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:12px}
table{border-collapse:collapse;font-size:12.5px;background:#fff;width:100%}
th,td{border-bottom:1px solid #eee;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0;position:sticky;top:0}td.n{text-align:right;font-variant-numeric:tabular-nums}
.scroll{max-height:520px;overflow:auto;border:1px solid #e2e2e2}
"""


def _img(png: bytes | None, alt: str) -> str:
    if png is None:
        return ""
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _json_for_html(data) -> str:
    # Inside <script> a literal "</script>" (or "<!--") in a job name would end the block early.
    return (json.dumps(data, ensure_ascii=False, default=str)
            .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def _share(value) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _score(value) -> str:
    return "" if value is None else f"{value:.4f}"


def _number(value) -> str:
    if value is None:
        return ""
    return f"{value:g}" if isinstance(value, float) else str(value)


def machine_data(data: dict) -> dict:
    """The JSON block embedded in the page: what is in it, without the pictures."""
    timeline = data["timeline"]
    return {
        "generated_at": data["summary"]["now"], "tag": data["summary"]["tag"],
        "counts": data["summary"]["counts"], "busy": data["summary"]["busy"],
        "span": timeline["span"], "lanes": [lane["lane"] for lane in timeline["lanes"]],
        "timeline": [{k: r[k] for k in ("id", "job", "kind", "status", "lane", "host", "slot", "start", "end",
                                        "running")} for r in timeline["rows"]],
        "series": [sr["name"] for job in data["curves"]["jobs"] for sr in job["series"]],
        "studies": [st["name"] for st in data["studies"]["studies"]],
        "leaderboard": [{"job": r["job"], "kind": r["kind"], "model": r["model"],
                         "val_accuracy": r["val_accuracy"], "val_f1": r["val_f1"]} for r in data["leaderboard"]],
    }


def render_html(data: dict, charts: dict) -> str:
    """The whole page. `charts`: {"timeline", "leaderboard", "overview": PNG bytes or None,
    "curves": {job name: PNG}, "studies": {study name: PNG}}."""
    e = html.escape
    summary, timeline, rows = data["summary"], data["timeline"], data["leaderboard"]
    curves, studies = data["curves"], data["studies"]
    out = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>sched report{e(' · ' + summary['tag']) if summary['tag'] else ''}</title>",
           f"<style>{CSS}</style></head><body><main>"]

    # -- header
    out.append(f"<h1>sched report{e(' · tag ' + summary['tag']) if summary['tag'] else ''}</h1>")
    out.append(f'<p class="meta">generated {e(summary["now"] or "")} UTC · database <code>'
               f'{e(summary["database"])}</code></p>')
    out.append('<nav><a href="#timeline">GPU timeline</a><a href="#leaderboard">Leaderboard</a>'
               '<a href="#curves">Training curves</a><a href="#studies">Tuning studies</a></nav>')
    if summary["jobs"] == 0:
        out.append('<p class="note">No jobs in this queue' + (f" with tag {e(summary['tag'])}" if summary["tag"]
                   else "") + " yet: submit some (sched submit queue.yaml) and run a worker; "
                   "this report then shows their timeline, scores, curves and studies.</p>")
    cards = [f'<div class="card"><b>{summary["jobs"]}</b><span>jobs</span></div>']
    for state, n in summary["counts"].items():
        if n:
            cards.append(f'<div class="card"><b>{n}</b><span><i class="chip" style="background:'
                         f'{STATUS_COLOURS.get(state, "#777")}"></i>{e(state)}</span></div>')
    span = timeline["span"]
    if span:
        cards.append(f'<div class="card"><b>{e(_duration(span["seconds"]))}</b><span>from {e(span["start"])}'
                     f"<br>to {e(span['end'])}</span></div>")
        cards.append(f'<div class="card"><b>{_share(span["busy_share"])}</b><span>slots busy over that span'
                     f'<br>({len(timeline["lanes"])} slot(s) used)</span></div>')
    busy = summary["busy"]
    cards.append(f'<div class="card"><b>{_share(busy.get("last_hour"))} / {_share(busy.get("last_day"))}</b>'
                 f'<span>{e(busy["kind"].upper())} busy, last hour / day<br>({busy["slots"]} slot(s), '
                 f'{summary["workers"]} live worker(s))</span></div>')
    out.append(f'<div class="cards">{"".join(cards)}</div>')

    # -- timeline
    out.append('<h2 id="timeline">GPU timeline</h2>')
    if timeline["rows"]:
        out.append(f'<p class="meta">{len(timeline["rows"])} job(s) on {len(timeline["lanes"])} slot(s); '
                   "each bar is a job's last attempt, coloured by state; grey is idle; hatched bars are "
                   "still running (to the dashed line, now).</p>")
        out.append(_img(charts.get("timeline"), "timeline of jobs per worker slot"))
        if timeline["truncated"]:
            out.append(f'<p class="note">only the {TIMELINE_LIMIT} most recent jobs are drawn</p>')
    else:
        out.append('<p class="note">No job has run yet.</p>')

    # -- leaderboard
    out.append('<h2 id="leaderboard">Leaderboard</h2>')
    if rows:
        chart_rows = leaderboard_chart_rows(rows)
        if chart_rows:
            out.append(_img(charts.get("leaderboard"), "validation accuracy per model"))
            if len(chart_rows) < sum(r["val_accuracy"] is not None for r in rows):
                out.append(f'<p class="note">chart: the best {len(chart_rows)}; the table has every row</p>')
        out.append(_leaderboard_table(rows))
    else:
        out.append('<p class="note">No models yet (finetune or ensemble jobs, or jobs that log val_accuracy).</p>')

    # -- curves
    out.append('<h2 id="curves">Training curves</h2>')
    if curves["jobs"]:
        out.append(_img(charts.get("overview"), "validation accuracy per epoch, every fine-tune"))
        out.append('<div class="grid">')
        for job in curves["jobs"]:
            out.append(f"<div>{_img(charts['curves'].get(job['job']), 'training curves of ' + job['job'])}</div>")
        out.append("</div>")
        if curves["truncated"]:
            out.append(f'<p class="note">only the {CURVE_JOB_LIMIT} most recent training jobs are drawn</p>')
    else:
        out.append('<p class="note">No training curves yet (finetune and tapt jobs log them per '
                   "evaluation and logging step).</p>")

    # -- studies
    out.append('<h2 id="studies">Tuning studies</h2>')
    if studies["studies"]:
        out.append('<div class="grid">')
        for st in studies["studies"]:
            out.append(f"<div><h3>{e(st['name'])}</h3>{_study_caption(st)}"
                       f"{_img(charts['studies'].get(st['name']), 'trials of study ' + st['name'])}</div>")
        out.append("</div>")
    if studies["note"] or not studies["studies"]:
        out.append(f'<p class="note">{e(studies["note"] or "No tuning studies.")}</p>')

    out.append(f'<script type="application/json" id="report-data">{_json_for_html(machine_data(data))}</script>')
    out.append("</main></body></html>")
    return "\n".join(out) + "\n"


def _study_caption(st: dict) -> str:
    e = html.escape
    states = ", ".join(f"{n} {s}" for s, n in sorted(st["states"].items()))
    parts = [f"{len(st['trials'])} trial(s): {states}" if st["trials"] else "no trials yet",
             " / ".join(st["directions"])]
    if len(st["directions"]) > 1:
        parts.append("first objective plotted")
    if st["jobs"]:
        parts.append("jobs " + ", ".join(st["jobs"][:5]) + (" …" if len(st["jobs"]) > 5 else ""))
    text = f'<p class="meta">{e(" · ".join(parts))}'
    if st["best"]:
        params = ", ".join(f"{k}={_number(v)}" for k, v in st["best"]["params"].items())
        text += f"<br>best: trial {st['best']['number']}, value {st['best']['value']:.6g}" + (
            f" ({e(params)})" if params else "")
    return text + "</p>"


SHORT = {"batch_size": "bs", "max_length": "len", "focal_gamma": "focal", "label_smoothing": "smooth",
         "swa_epochs": "swa"}


def _leaderboard_table(rows: list[dict]) -> str:
    e = html.escape
    # As in `sched results`: only the params that differ between rows explain the ranking.
    varying = [k for k in KEY_PARAMS if len({_number(r[k]) for r in rows if r[k] is not None}) > 1]
    head = ("<tr><th>#</th><th>job</th><th>kind</th><th>model</th><th>val acc</th><th>val F1</th>"
            "<th>epochs</th><th>time</th><th>params</th><th>status</th></tr>")
    body = []
    for i, r in enumerate(rows, 1):
        params = " ".join(f"{SHORT.get(k, k)}={_number(r[k])}" for k in varying if r[k] is not None)
        colour = STATUS_COLOURS.get(r["status"], "#777")
        body.append(
            f'<tr><td class="n">{i}</td><td>{e(r["job"])}</td><td>{e(r["kind"])}</td>'
            f'<td>{e(r["model"] or "")}</td>'
            f'<td class="n">{_score(r["val_accuracy"])}</td><td class="n">{_score(r["val_f1"])}</td>'
            f'<td class="n">{e(_number(r["epochs"]))}</td><td class="n">{e(_duration(r["duration_s"]))}</td>'
            f'<td>{e(params)}</td><td><i class="chip" style="background:{colour}"></i>{e(r["status"])}</td></tr>')
    return f'<div class="scroll"><table>{head}{"".join(body)}</table></div>'


# ---- write -----------------------------------------------------------------------------------


def make_charts(data: dict) -> dict:
    """Every chart of the report as PNG bytes (None where there is nothing to draw)."""
    return {"timeline": plot_timeline(data["timeline"]), "leaderboard": plot_leaderboard(data["leaderboard"]),
            "overview": plot_curves_overview(data["curves"]["jobs"]),
            "curves": {job["job"]: plot_curves(job) for job in data["curves"]["jobs"]},
            "studies": {st["name"]: plot_study(st) for st in data["studies"]["studies"]}}


def write_report(queue: JobQueue, out_path: str | Path, tag: str | None = None) -> ReportSummary:
    """Gather, plot and write the report to `out_path` (parents created; replaced atomically)."""
    data = gather(queue, tag)
    page = render_html(data, make_charts(data))
    path = Path(out_path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise SchedError(f"cannot write the report to {path}: {exc.strerror or exc}") from None
    notes = [n for n in (data["studies"]["note"],) if n]
    if data["timeline"]["truncated"]:
        notes.append(f"timeline: only the {TIMELINE_LIMIT} most recent jobs")
    if data["curves"]["truncated"]:
        notes.append(f"curves: only the {CURVE_JOB_LIMIT} most recent training jobs")
    machine = machine_data(data)
    return ReportSummary(path=path, jobs=data["summary"]["jobs"], timeline_rows=machine["timeline"],
                         series=machine["series"], studies=machine["studies"],
                         leaderboard_rows=len(data["leaderboard"]), notes=notes)

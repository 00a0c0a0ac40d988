"""The report's charts: one PNG (bytes) per chart, drawn with matplotlib's Agg canvas directly,
so no pyplot state and no GUI backend is touched. matplotlib is imported only in here (and only
when a chart is drawn); what a chart shows comes from the gathered data and the kinds' displays.
"""

from __future__ import annotations

import io
from datetime import datetime

from ..fmt import clip, duration, visible
from ..kinds import kind_colour

DPI = 100
LEADERBOARD_CHART_LIMIT = 30  # bars in the leaderboard chart (the table has every row)
STATUS_COLOURS = {
    "succeeded": "#4c9f50", "running": "#e6a817", "failed": "#d64541", "killed": "#8e2a2b",
    "lost": "#a05195", "cancelled": "#9e9e9e", "upstream_failed": "#e8a0a0", "queued": "#5fa8d3",
}
OTHER_KIND_COLOUR = "#8c8c8c"
# The deadline chart: what a bar is to the campaign's deliverables, and the deadline's line.
ROLE_COLOURS = {"deliverable": "#7b4fa0", "path": "#c3a6e0", "other": "#a9cce3"}
HELD_COLOUR = "#f2f2f2"
DEADLINE_MET, DEADLINE_MISSED = "#4c9f50", "#d64541"
# Curves: scores (left axis) in cool colours, losses (right axis) in warm ones, by their order.
SCORE_COLOURS = ("#3b75af", "#519e3e", "#7b4fa0", "#2a9d8f")
LOSS_COLOURS = ("#c53a32", "#ef8636", "#b5651d", "#d4a017")


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
        # Every bar says which job it is: its name where that fits, else its id (the page lists
        # every bar's id and name under the chart); a sliver too thin even for an id is in that list.
        if fits >= 6 or fits >= len(r["job"]):
            text, size = clip(r["job"], fits), 7.5
        elif w * px_per_day >= 4.5 * len(str(r["id"])) + 3:
            text, size = str(r["id"]), 6
        else:
            text = None
        if text:
            ax.text(x0 + w / 2, y, text, ha="center", va="center", fontsize=size,
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


def leaderboard_chart_rows(rows: list[dict], score: str, limit: int = LEADERBOARD_CHART_LIMIT) -> list[dict]:
    """The rows the chart shows: those with a `score`, best first."""
    scored = sorted((r for r in rows if r[score] is not None), key=lambda r: -r[score])
    return scored[:limit]


def _kind_colour(kind: str) -> str:
    return kind_colour(kind) or OTHER_KIND_COLOUR


def plot_leaderboard(rows: list[dict], score: str) -> bytes | None:
    """Horizontal bars of the leaderboard's first score, best on top, coloured by kind."""
    shown = leaderboard_chart_rows(rows, score)
    if not shown:
        return None
    from matplotlib.patches import Patch

    labels = [clip(r["job"] + (f"  ({r['model']})" if r["model"] else ""), 48) for r in shown]
    values = [r[score] for r in shown]
    fig_w, fig_h = 11.0, 1.0 + 0.3 * len(shown)
    fig = _figure(fig_w, fig_h)
    label_in = min(4.0, 0.3 + 0.068 * max(len(label) for label in labels))
    fig.subplots_adjust(left=label_in / fig_w, right=0.93, top=1 - 0.3 / fig_h, bottom=0.6 / fig_h)
    ax = fig.add_subplot()
    ys = list(range(len(shown)))[::-1]
    ax.barh(ys, values, height=0.7, color=[_kind_colour(r["kind"]) for r in shown])
    lo, hi = min(values), max(values)
    # Scores of one campaign sit close together: start the axis below the lowest, and say so.
    floor = max(0.0, int((lo - max(0.02, (hi - lo) * 0.5)) * 50) / 50) if len(values) > 1 else 0.0
    ax.set_xlim(floor, min(1.0, hi + max(0.01, (hi - floor) * 0.12)) if hi <= 1 else hi * 1.05)
    for y, v in zip(ys, values):
        ax.text(v, y, f" {v:.4f}", va="center", fontsize=8)
    ax.set_yticks(ys, labels, fontsize=8)
    ax.set_ylim(-0.6, len(shown) - 0.4)
    ax.set_xlabel(score.replace("_", " ") + (f" (axis starts at {floor:g})" if floor > 0 else ""), fontsize=9)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    kinds = list(dict.fromkeys(r["kind"] for r in shown))
    ax.legend(handles=[Patch(color=_kind_colour(k), label=k) for k in kinds],
              loc="lower right", fontsize=8, frameon=False)
    return _png(fig)


def _styles(series: list[dict]) -> dict[str, tuple[str, str | None]]:
    """{series name: (colour, marker)}: per axis, a kind's curves take the axis' colours in order."""
    styles, used = {}, {"score": 0, "loss": 0}
    for sr in series:
        palette = SCORE_COLOURS if sr["axis"] == "score" else LOSS_COLOURS
        styles[sr["name"]] = (palette[used[sr["axis"]] % len(palette)], "o" if sr["split"] != "train" else None)
        used[sr["axis"]] += 1
    return styles


def plot_curves(job: dict) -> bytes | None:
    """One job's curves: scores on the left axis and losses on the right (only losses: on the left)."""
    series = job["series"]
    if not series:
        return None
    x_key = "epochs" if job["x_label"] == "epoch" else "steps"
    has_scores = any(sr["axis"] == "score" for sr in series)
    left = [sr for sr in series if (sr["axis"] == "score") == has_scores]
    right = [sr for sr in series if sr not in left]
    styles = _styles(series)
    fig = _figure(5.4, 3.5)
    fig.subplots_adjust(left=0.13, right=0.86 if right else 0.96, top=0.9, bottom=0.25)
    ax = fig.add_subplot()
    handles = []
    for axis, group in ((ax, left), (ax.twinx() if right else None, right)):
        for sr in group:
            colour, marker = styles[sr["name"]]
            many = len(sr["steps"]) > 30
            handles += axis.plot(sr[x_key], sr["values"], color=colour, linestyle="-",
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
    ax.set_title(clip(title, 60) + ("" if job["status"] == "succeeded" else f"  [{job['status']}]"),
                 fontsize=9, loc="left")
    # Below the axes: with two y axes no spot inside is sure to stay clear of every line.
    fig.legend(handles=handles, fontsize=7, loc="lower center", ncols=min(len(handles), 4), frameon=False)
    return _png(fig)


def overview_lines(jobs: list[dict]) -> list[tuple[dict, dict]]:
    """(job, series) of each job's headline curve: its first score curve, per epoch."""
    lines = []
    for job in jobs:
        first = next((sr for sr in job["series"] if sr["axis"] == "score"), None)
        if first is not None and first["epochs"]:
            lines.append((job, first))
    return lines


def plot_curves_overview(jobs: list[dict], highlight: int = 10) -> bytes | None:
    """Each job's headline score per epoch on one axis (only with two or more to compare, of one
    metric); the `highlight` best (by their best epoch) in colour with a legend, the others grey."""
    lines = overview_lines(jobs)
    metrics = {(sr["split"], sr["key"]) for _, sr in lines}
    if len(lines) < 2 or len(metrics) != 1:
        return None
    split, key = metrics.pop()
    label = f"{split} {key}"
    kinds = ", ".join(dict.fromkeys(job["kind"] for job, _ in lines))
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
                label=f"{clip(job['job'], 30)}  {max(sr['values']):.4f}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch", fontsize=9)
    ax.set_ylabel(label, fontsize=9)
    ax.grid(alpha=0.25)
    title = f"{label} per epoch, every {kinds} job"
    if rest:
        title += f" (the best {len(best)} in colour, {len(rest)} more in grey)"
    ax.set_title(title, fontsize=10, loc="left")
    ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
              title=f"best {label}", title_fontsize=7.5)
    return _png(fig)


def _palette(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def plot_study(study: dict) -> bytes | None:
    """Trial values by trial number (dots) and the best so far (a step line)."""
    drawn = study_axes(study)
    return None if drawn is None else _png(drawn[0])


def study_axes(study: dict):
    """(figure, axes) of `plot_study`, before it becomes a PNG (tests read its ticks); None when no
    trial has a value."""
    from matplotlib.ticker import MaxNLocator

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
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # trial numbers are whole: no "trial 0.5"
    ax.set_ylabel(f"objective ({study['directions'][0]})", fontsize=8)
    ax.tick_params(labelsize=7.5)
    ax.grid(alpha=0.25)
    ax.set_title(clip(study["name"], 60), fontsize=9, loc="left")
    ax.legend(fontsize=7, loc="best")
    return fig, ax


def _role(job: dict) -> str:
    return "deliverable" if job["deliverable"] else "path" if job["on_path"] else "other"


def _bar_label(job: dict) -> str:
    return f"{clip(visible(job['name']), 36)} #{job['id']}" + ("  (held)" if job["held"] else "")


def plot_deadline(section: dict) -> bytes | None:
    """A campaign's forecast against its deadline (`deadline_axes`)."""
    drawn = deadline_axes(section)
    return None if drawn is None else _png(drawn[0])


def deadline_axes(section: dict):
    """(figure, axes) of one campaign's forecast, before it becomes a PNG (tests read its bars,
    labels and lines); None when no job is drawn.

    A row per drawn job, the first to start on top: a bar from its expected start to its expected
    end (a running one from its real start, hatched), deliverables dark with bold labels, their
    path light, other jobs blue, held jobs white with a dashed edge; a job of unknown duration
    (counted as 0) says so at its start. A dashed line at now, and the deadline's line, red when
    the deliverables are expected to end after it."""
    jobs = [j for j in section["jobs"] if j["drawn"]]
    if not jobs:
        return None
    from matplotlib import dates as mdates
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    jobs.sort(key=lambda j: (j["start_s"], j["id"]))
    when = lambda text: mdates.date2num(datetime.fromisoformat(text))  # noqa: E731
    now, deadline = when(section["now"]), when(section["deadline"])
    starts, ends = [when(j["bar_start"]) for j in jobs], [when(j["bar_end"]) for j in jobs]
    lo, hi = min(starts + [now, deadline]), max(ends + [now, deadline])
    span = max(hi - lo, 60 / 86400)
    labels = [_bar_label(j) for j in jobs]
    label_in = min(3.6, 0.3 + 0.068 * max(len(label) for label in labels))
    fig_w, fig_h = 11.0, 1.4 + 0.27 * len(jobs)
    fig = _figure(fig_w, fig_h)
    fig.subplots_adjust(left=label_in / fig_w, right=1 - 1.75 / fig_w, top=1 - 0.55 / fig_h, bottom=0.7 / fig_h)
    ax = fig.add_subplot()
    ax.set_xlim(lo - span * 0.02, hi + span * 0.08)  # room for the last bar's duration
    ax.set_ylim(len(jobs) - 0.4, -0.6)  # the first to start on top
    min_w = span / 400  # a short job in a long forecast still shows as a sliver
    for y, (job, x0, x1) in enumerate(zip(jobs, starts, ends)):
        role, held = _role(job), bool(job["held"])
        (bar,) = ax.barh(y, max(x1 - x0, min_w), left=x0, height=0.66, zorder=2,
                         color=HELD_COLOUR if held else ROLE_COLOURS[role],
                         edgecolor="#777777" if held else "white", linestyle="--" if held else "-",
                         linewidth=0.9 if held else 0.6, hatch="//" if job["status"] == "running" else None)
        bar.set_gid(f"job-{job['id']}")
        if job["unknown"]:
            ax.text(x0 + max(x1 - x0, min_w), y, " ? no estimate", va="center", fontsize=7, color="#a66a00",
                    parse_math=False, clip_on=True, zorder=3)
        elif job["estimate_s"] is not None:
            ax.text(x1, y, " " + duration(job["estimate_s"]), va="center", fontsize=6.5, color="#666666",
                    parse_math=False, clip_on=True, zorder=3)
    ax.set_yticks(range(len(jobs)), labels, fontsize=8, parse_math=False)
    for tick, job in zip(ax.get_yticklabels(), jobs):
        role = _role(job)
        tick.set_fontweight("bold" if role == "deliverable" else "normal")
        tick.set_color(ROLE_COLOURS["deliverable"] if role != "other" else "#333333")
    ax.axvline(now, color="#444444", linestyle="--", linewidth=0.9, zorder=4, gid="now")
    late = section["misses"]
    ax.axvline(deadline, color=DEADLINE_MISSED if late else DEADLINE_MET, linewidth=1.8, zorder=4, gid="deadline")
    top = ax.get_xaxis_transform()
    ax.text(now, 1.0, "now", transform=top, ha="center", va="bottom", fontsize=8, color="#444444")
    ax.text(deadline, 1.0, "deadline", transform=top, ha="center", va="bottom", fontsize=8, fontweight="bold",
            color=DEADLINE_MISSED if late else DEADLINE_MET)
    locator = mdates.AutoDateLocator(minticks=4, maxticks=10)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_xlabel("time (UTC)", fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", alpha=0.25)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    handles = [Patch(color=ROLE_COLOURS[r], label=text) for r, text in
               (("deliverable", "deliverable"), ("path", "on a deliverable's path"), ("other", "other job"))
               if any(_role(j) == r for j in jobs)]
    if any(j["held"] for j in jobs):
        handles.append(Patch(facecolor=HELD_COLOUR, edgecolor="#777777", linestyle="--", label="held"))
    if any(j["status"] == "running" for j in jobs):
        handles.append(Patch(facecolor="white", edgecolor="#777777", hatch="//", label="running"))
    handles.append(Line2D([], [], color=DEADLINE_MISSED if late else DEADLINE_MET, linewidth=1.8,
                          label="deadline (missed)" if late else "deadline"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=7.5)
    return fig, ax


def make_charts(data: dict) -> dict:
    """Every chart of the report as PNG bytes (None where there is nothing to draw)."""
    return {"timeline": plot_timeline(data["timeline"]),
            "deadlines": {s["campaign"]: plot_deadline(s) for s in data.get("deadlines", [])},
            "leaderboard": plot_leaderboard(data["leaderboard"], data["score"]),
            "overview": plot_curves_overview(data["curves"]["jobs"]),
            "curves": {job["job"]: plot_curves(job) for job in data["curves"]["jobs"]},
            "studies": {st["name"]: plot_study(st) for st in data["studies"]["studies"]}}

"""The report's page: one HTML file with every chart a base64 data URI, inline CSS only, and a JSON
block (`<script type="application/json" id="report-data">`) for scripts and tests. Every string
from the database is escaped.
"""

from __future__ import annotations

import base64
import html
import json

from ..fmt import duration, number, score, visible
from ..kinds import leaderboard_layout
from ..results import param_summary
from .charts import STATUS_COLOURS, leaderboard_chart_rows
from .gather import CURVE_JOB_LIMIT, TIMELINE_LIMIT

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
.left-out{color:#a66a00}
.outlook{font-size:14px;margin:6px 0;padding:6px 10px;background:#fff;border-left:4px solid #4c9f50}
.outlook.late{border-left-color:#d64541}
tr.deliverable td{font-weight:bold}tr.path td:nth-child(2){color:#7b4fa0}
.mark{font-size:11px;padding:0 4px;border-radius:3px;background:#eee;margin-left:4px}
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


def machine_data(data: dict) -> dict:
    """The JSON block embedded in the page: what is in it, without the pictures."""
    timeline = data["timeline"]
    extra = {}
    if data.get("deadlines"):  # only then: a report without deadlines stays as it was
        extra["deadlines"] = [{**{k: s[k] for k in ("campaign", "deadline", "line", "misses", "done_by",
                                                     "not_drawn")},
                               "jobs": [{k: j[k] for k in ("id", "name", "status", "start", "end", "bar_start",
                                                            "estimate_s", "source", "deliverable", "on_path",
                                                            "held", "unknown", "cannot_run", "drawn")}
                                        for j in s["jobs"]]} for s in data["deadlines"]]
    return {
        "generated_at": data["summary"]["now"], "tag": data["summary"]["tag"],
        "counts": data["summary"]["counts"], "busy": data["summary"]["busy"],
        "span": timeline["span"], "lanes": [lane["lane"] for lane in timeline["lanes"]],
        "timeline": [{k: r[k] for k in ("id", "job", "kind", "status", "lane", "host", "slot", "start", "end",
                                        "running")} for r in timeline["rows"]],
        "series": [sr["name"] for job in data["curves"]["jobs"] for sr in job["series"]],
        "studies": [st["name"] for st in data["studies"]["studies"]],
        "leaderboard": [{"job": r["job"], "kind": r["kind"], "model": r["model"],
                         **{column: r[column] for column in leaderboard_layout().scores}}
                        for r in data["leaderboard"]],
        **extra,
    }


# The live page (`sched report --serve`) asks the server which render is current and reloads when a
# newer one exists: no reload (and no image decoding) while nothing changes.
LIVE_SCRIPT = """<script>(function(){var v=%d;setInterval(function(){fetch("version",{cache:"no-store"})
.then(function(r){return r.text()}).then(function(t){if(+t>v)location.reload()}).catch(function(){})},%d)})()
</script>"""


def render_html(data: dict, charts: dict, live: dict | None = None) -> str:
    """The whole page. `charts`: {"timeline", "leaderboard", "overview": PNG bytes or None,
    "curves": {job name: PNG}, "studies": {study name: PNG}}. `live` (`sched report --serve`):
    {rendered_at, every_s, version}: the page says when it was rendered and reloads itself."""
    e = html.escape
    summary, timeline, rows = data["summary"], data["timeline"], data["leaderboard"]
    curves, studies = data["curves"], data["studies"]
    out = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">']
    if live is not None:
        check_s = max(2, min(10, round(live["every_s"])))
        out.append(f'<noscript><meta http-equiv="refresh" content="{max(2, round(live["every_s"]))}"></noscript>')
        out.append(LIVE_SCRIPT % (live["version"], check_s * 1000))
    out += [f"<title>sched report{e(' · ' + summary['tag']) if summary['tag'] else ''}</title>",
            f"<style>{CSS}</style></head><body><main>"]

    # -- header
    out.append(f"<h1>sched report{e(' · tag ' + summary['tag']) if summary['tag'] else ''}</h1>")
    out.append(f'<p class="meta">generated {e(summary["now"] or "")} UTC · database <code>'
               f'{e(summary["database"])}</code></p>')
    if live is not None:
        out.append(f'<p class="meta" id="live">live: rendered at {e(live["rendered_at"])} UTC; rendered again when '
                   f'the queue changes (at most every {live["every_s"]:g}s), and this page reloads itself</p>')
    out.append('<nav>' + ('<a href="#deadline">Deadline</a>' if data.get("deadlines") else "") +
               '<a href="#timeline">GPU timeline</a><a href="#failures">Failures</a>'
               '<a href="#leaderboard">Leaderboard</a><a href="#curves">Training curves</a>'
               '<a href="#studies">Tuning studies</a></nav>')
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
        cards.append(f'<div class="card"><b>{e(duration(span["seconds"]))}</b><span>from {e(span["start"])}'
                     f"<br>to {e(span['end'])}</span></div>")
        cards.append(f'<div class="card"><b>{_share(span["busy_share"])}</b><span>slots busy over that span'
                     f'<br>({len(timeline["lanes"])} slot(s) used)</span></div>')
    busy = summary["busy"]
    what = "GPUs" if busy["kind"] == "gpu" else "CPU slots"  # as `sched status` counts them
    cards.append(f'<div class="card"><b>{_share(busy.get("last_hour"))} / {_share(busy.get("last_day"))}</b>'
                 f'<span>{what} busy, last hour / day<br>({busy["slots"]} {"GPU" if busy["kind"] == "gpu" else "slot"}'
                 f'(s), {summary["workers"]} live worker(s))</span></div>')
    out.append(f'<div class="cards">{"".join(cards)}</div>')

    # -- deadlines (only for campaigns that have one)
    if data.get("deadlines"):
        out.append('<h2 id="deadline">Deadline</h2>')
        for section in data["deadlines"]:
            out.append(_deadline_section(section, charts.get("deadlines", {}).get(section["campaign"])))

    # -- timeline
    out.append('<h2 id="timeline">GPU timeline</h2>')
    if timeline["rows"]:
        out.append(f'<p class="meta">{len(timeline["rows"])} job(s) on {len(timeline["lanes"])} slot(s); '
                   "each bar is a job's last attempt, coloured by state; grey is idle; hatched bars are "
                   "still running (to the dashed line, now).</p>")
        out.append(_img(charts.get("timeline"), "timeline of jobs per worker slot"))
        if timeline["truncated"]:
            out.append(f'<p class="note">only the {TIMELINE_LIMIT} most recent jobs are drawn</p>')
        out.append(_timeline_table(timeline["rows"]))
    else:
        out.append('<p class="note">No job has run yet.</p>')

    # -- failures
    out.append('<h2 id="failures">Failures</h2>')
    out.append(_failures_table(data["failures"]) if data["failures"] else '<p class="note">No failures.</p>')

    # -- leaderboard
    out.append('<h2 id="leaderboard">Leaderboard</h2>')
    if rows:
        chart_rows = leaderboard_chart_rows(rows, data["score"])
        if chart_rows:
            out.append(_img(charts.get("leaderboard"), f"{data['score']} per model"))
            if len(chart_rows) < sum(r[data["score"]] is not None for r in rows):
                out.append(f'<p class="note">chart: the best {len(chart_rows)}; the table has every row</p>')
        out.append(_leaderboard_table(rows))
    else:
        layout = leaderboard_layout()
        out.append(f'<p class="note">No models yet ({e(", ".join(layout.model_kinds))} jobs, or jobs that log '
                   f'{e(" or ".join(layout.scores.values()))}).</p>')

    # -- curves
    out.append('<h2 id="curves">Training curves</h2>')
    if curves["jobs"]:
        out.append(_img(charts.get("overview"), "headline score per epoch, every training job"))
        out.append('<div class="grid">')
        for job in curves["jobs"]:
            out.append(f"<div>{_img(charts['curves'].get(job['job']), 'training curves of ' + job['job'])}</div>")
        out.append("</div>")
        if curves["truncated"]:
            out.append(f'<p class="note">only the {CURVE_JOB_LIMIT} most recent training jobs are drawn</p>')
    else:
        out.append('<p class="note">No training curves yet (training jobs log them per evaluation and '
                   "logging step).</p>")

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


def _deadline_section(section: dict, png: bytes | None) -> str:
    """One campaign: its outlook line, the chart of its forecast, what the chart cannot show, and
    every unfinished job in a table."""
    e = html.escape
    out = [f"<h3>Campaign {e(section['campaign'])}</h3>",
           f'<p class="outlook{" late" if section["misses"] else ""}">{e(section["line"])}</p>']
    jobs = section["jobs"]
    if not jobs:
        out.append('<p class="note">No unfinished job in this campaign.</p>')
        return "\n".join(out)
    if section["workers_note"]:
        out.append(f'<p class="meta">{e(section["workers_note"])}</p>')
    if png is not None:
        out.append('<p class="meta">Each bar is an unfinished job from its expected start to its expected end '
                   "(a running job from its real start, hatched); deliverables dark and bold, the jobs on their "
                   "path light purple, other jobs blue, held jobs white with a dashed edge; the dashed line is "
                   "now, the solid one the deadline (red: the deliverables are expected to end after it).</p>")
        out.append(_img(png, f"forecast of campaign {section['campaign']} against its deadline"))
    if section["not_drawn"]:
        out.append(f'<p class="note">{section["not_drawn"]} more job(s) not drawn: the chart shows {section["limit"]}, '
                   "the deliverables and their path first, then the earliest to start; the table lists every "
                   "job.</p>")
    if section["cannot_run"]:
        items = "".join(f"<li>{e(_job_name(c))}: {e(c['why'])}</li>" for c in section["cannot_run"])
        out.append(f'<p class="meta">Cannot run on the workers up (not drawn):</p><ul class="meta">{items}</ul>')
    if section["no_estimate"]:
        names = ", ".join(visible(n) for n in section["no_estimate"][:10])
        more = f" and {len(section['no_estimate']) - 10} more" if len(section["no_estimate"]) > 10 else ""
        out.append(f'<p class="note">No duration estimate (counted as taking no time; add <code>expected:</code>): '
                   f"{e(names + more)}</p>")
    if section["held_elsewhere"]:
        items = "".join(f"<li>{e(_job_name(h))} (campaign {e(visible(h['campaign'] or '-'))}): {e(h['held'])}</li>"
                        for h in section["held_elsewhere"])
        out.append(f'<p class="meta">Held jobs of other campaigns:</p><ul class="meta">{items}</ul>')
    out.append(_deadline_table(jobs))
    return "\n".join(out)


def _job_name(job: dict) -> str:
    return f"{visible(job['name'])} #{job['id']}"


def _deadline_table(jobs: list[dict]) -> str:
    e = html.escape
    body = []
    for j in jobs:
        role = "deliverable" if j["deliverable"] else "path" if j["on_path"] else "other"
        marks = "".join(f'<span class="mark">{m}</span>' for m, on in (
            ("deliverable", j["deliverable"]), ("on path", j["on_path"] and not j["deliverable"]),
            ("held", j["held"]), ("no estimate", j["unknown"]), ("cannot run", j["cannot_run"]),
            ("not drawn", not j["drawn"] and j["start_s"] is not None)) if on)
        start = "running" if j["status"] == "running" else (j["start"] or "never")
        estimate = "?" if j["estimate_s"] is None else duration(j["estimate_s"])
        note = j["cannot_run"] or j["held"] or j["note"] or ""
        body.append(f'<tr class="{role}"><td class="n">{j["id"]}</td><td>{e(visible(j["name"]))}{marks}</td>'
                    f'<td>{e(j["status"])}</td><td>{e(start)}</td><td>{e(j["end"] or "never")}</td>'
                    f'<td class="n">{e(estimate)}</td><td>{e(j["source"] or "")}</td><td>{e(note)}</td></tr>')
    return ('<details><summary class="meta">every unfinished job: id, job, state, expected start and end, '
            'estimate and its source, the policy\'s note</summary><div class="scroll"><table><tr><th>id</th>'
            "<th>job</th><th>state</th><th>start (UTC)</th><th>end (UTC)</th><th>estimate</th><th>from</th>"
            f"<th>note</th></tr>{''.join(body)}</table></div></details>")


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
        params = ", ".join(f"{k}={number(v)}" for k, v in st["best"]["params"].items())
        text += f"<br>best: trial {st['best']['number']}, value {st['best']['value']:.6g}" + (
            f" ({e(params)})" if params else "")
    return text + "</p>"


def _timeline_table(rows: list[dict]) -> str:
    """Every bar of the timeline by id (bars too narrow for a name show their id)."""
    e = html.escape
    body = "".join(
        f'<tr><td class="n">{r["id"]}</td><td>{e(r["job"])}</td><td>{e(r["lane"])}</td><td>{e(r["start"])}</td>'
        f'<td class="n">{e(duration(r["duration_s"]))}</td><td>{e(r["status"])}</td></tr>' for r in rows[::-1])
    return ('<details><summary class="meta">every bar: id, job, slot, start, duration, state</summary>'
            '<div class="scroll"><table><tr><th>id</th><th>job</th><th>slot</th><th>start (UTC)</th>'
            f"<th>duration</th><th>state</th></tr>{body}</table></div></details>")


def _failures_table(failures: list[dict]) -> str:
    e = html.escape
    body = "".join(
        f'<tr><td class="n">{f["id"]}</td><td>{e(f["name"])}</td><td>{e(f["kind"])}</td><td>{e(f["status"])}</td>'
        f'<td>{e(f["finished_at"] or "")}</td><td>{f["attempts"]}/{f["max_attempts"]}</td>'
        f'<td>{e(f["message"] or "")}</td></tr>' for f in failures)
    return ('<div class="scroll"><table><tr><th>id</th><th>job</th><th>kind</th><th>state</th><th>ended (UTC)</th>'
            f"<th>tries</th><th>reason</th></tr>{body}</table></div>")


def _left_out(row: dict) -> str:
    """A model an ensemble left out (it learned nothing), marked as `sched results` marks it."""
    if not row.get("left_out_by"):
        return ""
    return f' <span class="left-out">(left out of {html.escape(", ".join(row["left_out_by"]))})</span>'


def _leaderboard_table(rows: list[dict]) -> str:
    e = html.escape
    layout = leaderboard_layout()
    shown_scores = [c for c in layout.scores if any(r[c] is not None for r in rows)] or [layout.default_sort]
    details = [c for c in layout.details if any(r[c] is not None for r in rows)]
    head = ("<tr><th>#</th><th>job</th><th>kind</th><th>model</th>"
            + "".join(f"<th>{e(c.replace('_', ' '))}</th>" for c in shown_scores)
            + "".join(f"<th>{e(c.replace('_', ' '))}</th>" for c in details)
            + "<th>time</th><th>params</th><th>status</th></tr>")
    params = param_summary(rows)
    body = []
    for i, r in enumerate(rows, 1):
        colour = STATUS_COLOURS.get(r["status"], "#777")
        body.append(
            f'<tr><td class="n">{i}</td><td>{e(r["job"])}</td><td>{e(r["kind"])}</td>'
            f'<td>{e(r["model"] or "")}</td>'
            + "".join(f'<td class="n">{score(r[c])}</td>' for c in shown_scores)
            + "".join(f'<td class="n">{e(number(r[c]))}</td>' for c in details)
            + f'<td class="n">{e(duration(r["duration_s"]))}</td>'
            f'<td>{e(params.row(r))}</td>'
            f'<td><i class="chip" style="background:{colour}"></i>{e(r["status"])}{_left_out(r)}</td></tr>')
    return f'<div class="scroll"><table>{head}{"".join(body)}</table></div>'

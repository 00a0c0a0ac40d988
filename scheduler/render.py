"""Rich rendering of snapshots and plans. Pure functions from dicts to renderables."""

from __future__ import annotations

import json

from rich.console import Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from .fmt import duration, number, score
from .jobqueue import JobSpec

STATE_STYLE = {
    "queued": "cyan", "running": "bold yellow", "succeeded": "green", "failed": "bold red",
    "killed": "red", "lost": "magenta", "upstream_failed": "dim red", "cancelled": "dim",
}


def _state(status: str) -> Text:
    return Text(status, style=STATE_STYLE.get(status, ""))


def _board_state(row: dict) -> Text:
    """A leaderboard row's status, marked when an ensemble left the model out (it learned nothing)."""
    text = _state(row["status"])
    if row.get("left_out_by"):
        text.append(" (left out of " + ", ".join(row["left_out_by"]) + ")", style="yellow")
    return text


def _progress(job: dict):
    p = job.get("progress")
    if not p or not p.get("total"):
        return Text(p["message"] or "" if p else "")
    bar = ProgressBar(total=p["total"], completed=p["done"], width=20)
    label = f" {p['done']:g}/{p['total']:g}" + (f" {p['message']}" if p.get("message") else "")
    table = Table.grid()
    table.add_row(bar, Text(label))
    return table


def status_view(snap: dict) -> Group:
    counts = Text("  ".join(f"{state} {n}" for state, n in snap["counts"].items() if n) or "no jobs")
    parts = [Text.assemble(("Jobs: ", "bold"), counts, ("   ", ""), _busy_text(snap["busy"]))]
    if snap["drained"]:
        parts.append(Text("Queue is drained: workers take no new job (sched resume)", style="bold yellow"))
    parts.append(_workers_table(snap["workers"]))
    if snap["running"]:
        parts.append(_running_table(snap["running"]))
    if snap["queue"]:
        parts.append(_queue_table(snap["queue"], snap["counts"].get("queued", 0)))
    if snap["recent"]:
        parts.append(_recent_table(snap["recent"]))
    if snap["failures"]:
        parts.append(_failures_table(snap["failures"]))
    return Group(*parts)


def _busy_text(busy: dict) -> Text:
    if not busy["slots"]:
        return Text("")
    label = "GPU busy" if busy["kind"] == "gpu" else "slots busy"
    share = ", ".join(f"{busy[w] * 100:.0f}% {w.replace('_', ' ')}" for w in ("last_hour", "last_day")
                      if busy.get(w) is not None)
    return Text(f"{label}: {share} ({busy['slots']} slot{'s' if busy['slots'] != 1 else ''})", style="bold")


def _workers_table(workers: list[dict]) -> Table:
    table = Table(title="Workers", title_justify="left")
    for col in ("worker", "host", "slot", "job", "GPU use", "heartbeat"):
        table.add_column(col)
    for w in workers:
        for i, slot in enumerate(w["slot_use"]):
            stats = slot["gpu_stats"]
            gpu = (f"{stats['util']}% · {stats['mem_used'] / 1024:.1f}/{stats['mem_total'] / 1024:.0f} GiB"
                   if stats else "")
            first = i == 0
            table.add_row(f"{w['id']} ({w['state']})" if first else "", w["host"] if first else "", slot["slot"],
                          slot["job"] or Text("idle", style="dim"), gpu,
                          f"{duration(w['heartbeat_age_s'])} ago" if first else "")
    if not workers:
        table.add_row("-", "no worker running (start one: sched worker)", "", "", "", "")
    return table


def _running_table(jobs: list[dict]) -> Table:
    table = Table(title="Running", title_justify="left")
    for col in ("id", "name", "kind", "slot", "try", "elapsed", "progress", "ETA", "latest metric"):
        table.add_column(col)
    for j in jobs:
        metric = j.get("latest_metric")
        shown = f"{metric['key']}={metric['value']:.4g}" if metric else ""
        table.add_row(str(j["id"]), j["name"], j["kind"], j["slot"] or "", f"{j['attempts']}/{j['max_attempts']}",
                      duration(j["elapsed_s"]), _progress(j), duration(j.get("eta_s")), shown)
    return table


def _queue_table(jobs: list[dict], total: int) -> Table:
    shown = f" (first {len(jobs)} of {total})" if total > len(jobs) else ""
    table = Table(title=f"Queue, in claim order{shown}", title_justify="left")
    for col in ("id", "name", "kind", "priority", "gpus", "waits for"):
        table.add_column(col)
    for j in jobs:
        why = j.get("why") or ""
        if j.get("failure_kind"):
            why += f" (was {j['failure_kind']}: {(j['message'] or '')[:60]})"
        table.add_row(str(j["id"]), j["name"], j["kind"], str(j["priority"]), str(j["gpus"]), why)
    return table


def _recent_table(jobs: list[dict]) -> Table:
    table = Table(title="Recently finished", title_justify="left")
    for col in ("id", "name", "kind", "status", "duration", "score"):
        table.add_column(col)
    for j in jobs:
        shown = j.get("score")
        table.add_row(str(j["id"]), j["name"], j["kind"], _state(j["status"]), duration(j["elapsed_s"]),
                      "" if shown is None else f"{shown['key']} {score(shown['value'])}")
    return table


def _failures_table(jobs: list[dict]) -> Table:
    table = Table(title="Failures", title_justify="left")
    for col in ("id", "name", "status", "reason"):
        table.add_column(col)
    for j in jobs:
        table.add_row(str(j["id"]), j["name"], _state(j["status"]), (j["message"] or "").splitlines()[0][:120]
                      if j["message"] else "")
    return table


def plan_table(specs: list[JobSpec], title: str = "Plan", *, width: int = 120) -> Table:
    """The expanded plan; params are shown only when the terminal is wide enough for them."""
    show_params = width >= 140
    table = Table(title=f"{title} ({len(specs)} jobs)", title_justify="left")
    table.add_column("#")
    table.add_column("name", ratio=3, overflow="fold")
    for col in ("kind", "prio", "gpus"):
        table.add_column(col)
    table.add_column("after", ratio=2, overflow="fold")
    table.add_column("tries")
    table.add_column("timeout")
    if show_params:
        table.add_column("params", overflow="ellipsis", no_wrap=True, max_width=50)
    for i, spec in enumerate(specs, 1):
        after = spec.after[0] + (f" +{len(spec.after) - 1} more" if len(spec.after) > 1 else "") if spec.after else ""
        row = [str(i), spec.name, spec.kind, str(spec.priority), str(spec.gpus), after,
               str(spec.max_attempts), duration(spec.timeout_s)]
        if show_params:
            row.append(json.dumps(spec.params, ensure_ascii=False))
        table.add_row(*row)
    return table


def job_view(detail: dict) -> Group:
    info = Table.grid(padding=(0, 2))
    for key in ("id", "name", "kind", "status", "priority", "gpus", "tags", "attempts", "max_attempts",
                "failure_kind", "message", "created_at", "started_at", "finished_at", "exit_code",
                "slot", "output_dir", "log_path"):
        value = detail.get(key)
        if value not in (None, [], ""):
            info.add_row(Text(key, style="bold"), _state(value) if key == "status" else Text(str(value)))
    if detail["after"]:
        after = ", ".join(f"{d['name']} ({d['status']})" for d in detail["after"])
        info.add_row(Text("after", style="bold"), Text(after))
    info.add_row(Text("params", style="bold"), Text(json.dumps(detail["params"], ensure_ascii=False, indent=1)))
    parts = [info]
    if detail["metrics"]:
        table = Table(title="Metrics", title_justify="left")
        for col in ("key", "value", "step", "split"):
            table.add_column(col)
        for m in detail["metrics"][-40:]:
            table.add_row(m["key"], f"{m['value']:.6g}", "" if m["step"] is None else str(m["step"]), m["split"] or "")
        parts.append(table)
    if detail["artifacts"]:
        table = Table(title="Artifacts", title_justify="left")
        table.add_column("name")
        table.add_column("path")
        for name, path in detail["artifacts"].items():
            table.add_row(name, path)
        parts.append(table)
    return Group(*parts)


def results_table(rows: list[dict], sort: str | None) -> Table:
    """The leaderboard at a glance: the first two scores and the first detail column, the key params
    that differ between rows (the differences explain the ranking; the shared ones go in the
    caption). --json and --csv have every column."""
    from .kinds import leaderboard_layout
    from .results import headline_column, param_summary, shown_scores

    layout = leaderboard_layout()
    scores = shown_scores(rows)
    details = [c for c in layout.details if any(r[c] is not None for r in rows)][:1]
    params = param_summary(rows)
    caption = params.caption()
    table = Table(title=f"Results ({len(rows)} jobs, by {sort or headline_column(rows)})", title_justify="left",
                  caption=f"same for every job that has it: {caption}" if caption else None,
                  caption_justify="left")
    table.add_column("#", justify="right")
    table.add_column("job", overflow="fold")
    table.add_column("kind")
    table.add_column("model", overflow="fold", max_width=28)
    for column in scores:  # scores never shrink into an ellipsis
        table.add_column(column.replace("_", " "), justify="right", no_wrap=True, min_width=6)
    for column in details:
        table.add_column(column.replace("_", " "), justify="right")
    table.add_column("time", justify="right")
    table.add_column("params", overflow="fold")
    table.add_column("status")
    for i, r in enumerate(rows, 1):
        table.add_row(str(i), Text(r["job"]), Text(r["kind"]), Text(r["model"] or ""),
                      *(score(r[c]) for c in scores), *(number(r[c]) for c in details),
                      duration(r["duration_s"]), Text(params.row(r)), _board_state(r))
    if not rows:
        kinds = " or ".join(layout.model_kinds) or "model"
        table.add_row("", Text(f"no models yet (submit {kinds} jobs)", style="dim"),
                      *[""] * (len(table.columns) - 2))
    return table

"""The words and fields of a forecast: one line per campaign (`sched status`), its JSON, and
the per-job rows of `sched forecast`."""

from __future__ import annotations

from datetime import datetime

from ..fmt import duration, visible
from .planner import Forecast
from .policy import Verdict


def clock(when: datetime) -> str:
    return when.strftime("%a %H:%M")


def _span(seconds: float) -> str:
    return duration(abs(seconds)) or "0s"


def campaign_line(forecast: Forecast, name: str) -> str:
    """`nsmc4: deadline Thu 09:00 (in 18h00m): deliverables done by Thu 06:40, 2h20m to spare`."""
    verdict = forecast.decisions.verdicts[name]
    deadline = forecast.deadlines[name]
    left = (deadline - forecast.now).total_seconds()
    when = f"in {_span(left)}" if left >= 0 else f"passed {_span(left)} ago"
    head = f"{visible(name)}: deadline {clock(deadline)} UTC ({when})"
    return head + ": " + _outlook(forecast, verdict) + _extras(forecast, verdict)


def _outlook(forecast: Forecast, verdict: Verdict) -> str:
    if verdict.done:
        return "deliverables done"
    if verdict.done_by is None:
        job, why = verdict.never[0] if verdict.never else ("a deliverable", "cannot run")
        return f"cannot be met: {visible(job)} {why}"
    if not verdict.misses and verdict.unknown:
        return f"deliverables done by {clock(forecast.at(verdict.done_by))} at the earliest"
    if not verdict.misses:
        return f"deliverables done by {clock(forecast.at(verdict.done_by))}, {_span(verdict.spare)} to spare"
    text = f"misses the deadline by {_span(verdict.spare)}"
    if verdict.chain:
        first, end = verdict.chain[0]
        rest = [visible(n) for n, _ in verdict.chain[1:]]
        text += f": {visible(first)} ends {clock(forecast.at(end))}" + (f", then {', '.join(rest)}" if rest else "")
    return text


def _extras(forecast: Forecast, verdict: Verdict) -> str:
    out = ""
    if verdict.acting:
        out += " (deadline policy acting: path first)"
    elif _policy(forecast, verdict.campaign) == "warn" and verdict.misses:
        out += " (deadline_policy: warn, nothing changed)"
    if verdict.unknown:
        shown = ", ".join(visible(n) for n in verdict.unknown[:3]) + (", ..." if len(verdict.unknown) > 3 else "")
        out += f"; no estimate for {shown} (counted as 0: add `expected:`)"
    return out


def _policy(forecast: Forecast, name: str) -> str:
    return next((c.policy for c in forecast.campaigns if c.name == name), "act")


def campaign_json(forecast: Forecast, name: str) -> dict:
    verdict = forecast.decisions.verdicts[name]
    deadline = forecast.deadlines[name]

    def iso(seconds: float | None) -> str | None:
        return None if seconds is None else forecast.at(seconds).isoformat(timespec="seconds")

    return {"campaign": name, "deadline": deadline.isoformat(timespec="seconds"),
            "deadline_in_s": round((deadline - forecast.now).total_seconds(), 1),
            "policy": _policy(forecast, name), "acting": verdict.acting,
            "deliverables": verdict.deliverables, "deliverables_left": verdict.remaining,
            "done_by": None if verdict.done else iso(verdict.done_by),
            "spare_s": None if verdict.spare is None or verdict.done else round(verdict.spare, 1),
            "misses": verdict.misses, "line": campaign_line(forecast, name),
            "critical_path": [{"name": n, "ends": iso(end)} for n, end in verdict.chain],
            "no_estimate": verdict.unknown, "cannot_run": [{"name": n, "why": w} for n, w in verdict.never]}


def job_rows(forecast: Forecast, campaign: str | None = None) -> list[dict]:
    """Every replayed job (of `campaign`), in expected start order."""
    d = forecast.decisions
    paths = _paths(forecast)
    out = []
    for job in d.jobs:
        row = forecast.rows[job.id]
        if campaign is not None and row.campaign != campaign:
            continue
        slot = d.schedule.slots.get(job.id)
        found = forecast.estimates.get(job.id)
        out.append({
            "id": job.id, "name": job.name, "status": row.status, "campaign": row.campaign,
            "start": None if slot is None else forecast.at(slot.start).isoformat(timespec="seconds"),
            "end": None if slot is None else forecast.at(slot.end).isoformat(timespec="seconds"),
            "start_s": None if slot is None else slot.start, "end_s": None if slot is None else slot.end,
            "estimate_s": None if found is None else found.seconds, "source": None if found is None else found.source,
            "on_path": job.id in paths, "deliverable": bool(row.deliverable),
            "urgent": job.id in d.urgent, "held": d.held.get(job.id), "note": d.notes.get(job.id),
            "cannot_run": d.schedule.never.get(job.id)})
    return sorted(out, key=lambda r: (r["start_s"] is None, r["start_s"] or 0.0, r["id"]))


def _paths(forecast: Forecast) -> set[int]:
    from .policy import path_of

    by_id = {j.id: j for j in forecast.decisions.jobs}
    path: set[int] = set()
    for campaign in {j.campaign for j in forecast.decisions.jobs if j.deliverable}:
        path |= path_of([j.id for j in forecast.decisions.jobs if j.campaign == campaign and j.deliverable], by_id)
    return path

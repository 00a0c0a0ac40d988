"""The report's data: plain dicts and lists from a fixed number of bounded queries, whatever the
number of jobs. What each kind contributes (its curves, its study) comes from the kind itself.
"""

from __future__ import annotations

import re
from datetime import datetime

from ..fmt import iso, iso_ms
from ..jobqueue import JobQueue
from ..kinds import curve_kinds, study_kinds, study_of
from ..results import effective_params, headline_column, leaderboard, model_name
from ..store import queries as q
from ..store.engine import db_now, shown_url
from ..store.states import ALL_STATES, RUNNING
from ..views import job_dict, status_snapshot

# Bounds that keep every query an index range with a LIMIT (or an IN over such a list).
TIMELINE_LIMIT = 2000  # most recent jobs that ran
CURVE_JOB_LIMIT = 40  # most recent jobs with training curves
STUDY_LIMIT = 20  # most recent Optuna studies
FAILURE_LIMIT = 200  # most recent failures listed with their reasons
DEADLINE_BAR_LIMIT = 60  # bars per campaign in the deadline chart (the table under it lists every job)


def has_tag(tags, tag: str | None) -> bool:
    return tag is None or tag in (tags or [])


def summary_data(queue: JobQueue, tag: str | None = None) -> dict:
    """Counts by state, the database, and the GPU busy share of `sched status`.

    With a tag the counts are the tagged jobs'; the busy share is the machines', whatever the tag.
    """
    snap = status_snapshot(queue, all_jobs=False)
    counts = dict(snap["counts"])
    if tag is not None:
        # Tags are a JSON list, filtered here as `sched results` does (portable across backends).
        with queue.read() as conn:
            counts = {state: 0 for state in ALL_STATES}
            for status, tags in q.statuses_and_tags(conn):
                if has_tag(tags, tag):
                    counts[status] = counts.get(status, 0) + 1
    return {"now": snap["now"], "tag": tag, "counts": counts, "jobs": sum(counts.values()),
            "busy": snap["busy"], "workers": len(snap["workers"]), "database": shown_url(queue.engine.url)}


def _natural(text: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def failures_data(queue: JobQueue, tag: str | None = None, limit: int = FAILURE_LIMIT) -> list[dict]:
    """The most recent jobs that ended without success, with their one-line reasons."""
    with queue.read() as conn:
        now = db_now(conn)
        rows = q.recent_endings(conn, limit if tag is None else limit * 10, failures_only=True)
    chosen = [job_dict(r, now) for r in rows if has_tag(r.tags, tag)][:limit]
    for job in chosen:
        job["message"] = (job["message"] or "").splitlines()[0] if job["message"] else ""
    return chosen


def timeline_data(queue: JobQueue, tag: str | None = None, limit: int = TIMELINE_LIMIT) -> dict:
    """Every job that ran (its last attempt), as a bar on its worker's host/slot lane.

    A running job ends at the database's now. A job back in the queue (retry, preemption) is left
    out: its row no longer says when its earlier attempt ended.
    """
    with queue.read() as conn:
        now = db_now(conn)
        rows = q.timeline_rows(conn, limit)
    truncated = len(rows) == limit
    bars, lanes, first, last = [], {}, None, None
    for r in reversed(rows):
        if not has_tag(r.tags, tag):
            continue
        running = r.status == RUNNING
        end = max(now if running else r.finished_at, r.started_at)
        host = r.host or f"worker{r.worker_id}"
        lane = f"{host}/{r.slot or '?'}"
        duration = (end - r.started_at).total_seconds()
        bars.append({"id": r.id, "job": r.name, "kind": r.kind, "status": r.status, "lane": lane,
                     "host": host, "slot": r.slot, "worker_id": r.worker_id, "start": iso_ms(r.started_at),
                     "end": iso_ms(end), "duration_s": duration, "running": running})
        lanes[lane] = lanes.get(lane, 0.0) + duration
        first = r.started_at if first is None else min(first, r.started_at)
        last = end if last is None else max(last, end)
    span = None
    if bars:
        seconds = max((last - first).total_seconds(), 1.0)
        span = {"start": iso(first), "end": iso(last), "seconds": seconds,
                # Busy share of the lanes shown, over the span shown (not only the last day).
                "busy_share": round(sum(lanes.values()) / (seconds * len(lanes)), 4)}
    ordered = sorted(lanes, key=_natural)
    return {"now": iso_ms(now), "rows": bars, "truncated": truncated, "span": span,
            "lanes": [{"lane": lane, "busy_s": lanes[lane]} for lane in ordered]}


def curves_data(queue: JobQueue, tag: str | None = None, limit: int = CURVE_JOB_LIMIT) -> dict:
    """Training curves per job: {"jobs": [...], "truncated": bool}, three queries in all.

    Each job: {job, id, kind, model, status, x_label, series: [{name, key, split, axis, steps,
    epochs, values}]}, its series the ones its kind declares (`Display.curves`). A point logged
    twice for the same step (a resumed run) keeps its last value. Epoch = step / the first
    evaluation's step: evaluation runs once per epoch, so its first step is the number of steps in
    an epoch. With no evaluation (full-data runs) the x axis stays in steps.
    """
    declared = curve_kinds()
    with queue.read() as conn:
        # The tag is filtered in Python (as `sched results` does), over ids and tags only.
        candidates = q.started_jobs_of_kinds(conn, declared, None if tag else limit + 1)
        ids = [c.id for c in candidates if has_tag(c.tags, tag)]
        truncated = len(ids) > limit
        ids = ids[:limit]
        chosen = q.jobs_by_ids(conn, ids)
        keys = {curve.key for curves in declared.values() for curve in curves}
        points = q.stepped_metrics(conn, ids, keys)
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
        for curve in declared[c.kind]:
            pts = logged.get((curve.key, curve.split))
            if not pts:
                continue
            steps = sorted(pts)
            series.append({"name": f"{c.name}:{curve.split}/{curve.key}", "key": curve.key, "split": curve.split,
                           "axis": curve.axis, "steps": steps,
                           "epochs": [round(st / per_epoch, 3) for st in steps] if per_epoch else None,
                           "values": [pts[st] for st in steps]})
        if series:
            jobs.append({"job": c.name, "id": c.id, "kind": c.kind, "status": c.status,
                         "model": model_name(effective_params(c.kind, c.params or {}).get("model")),
                         "x_label": "epoch" if per_epoch else "step", "series": series})
    return {"jobs": jobs, "truncated": truncated}


def study_data(queue: JobQueue, tag: str | None = None, limit: int = STUDY_LIMIT) -> dict:
    """Each Optuna study in the queue's database: trial values and the best so far.

    {"studies": [...], "note": str | None}. A study belongs to the jobs whose kind says they work
    on it (a tune job: its `study` param, its group or its name); with a tag, only studies of
    tagged jobs count. Reads nothing (and creates no table) when Optuna's tables are absent.
    """
    from ..store.studies import close_storage, optuna_tables_present, read_storage

    if not optuna_tables_present(queue.engine):
        return {"studies": [], "note": "no Optuna tables in this database (no tuning study yet)"}
    import optuna  # only here: importing optuna costs about a second

    try:
        storage = read_storage(queue.url)
    except Exception as exc:  # noqa: BLE001 - e.g. tables from another Optuna version
        return {"studies": [], "note": f"cannot read the Optuna studies: {str(exc).splitlines()[0]}"}
    try:
        summaries = optuna.study.get_all_study_summaries(storage, include_best_trial=False)
        summaries.sort(key=lambda sm: (sm.datetime_start or datetime.min, sm.study_name), reverse=True)
        owners = study_owners(queue, [sm.study_name for sm in summaries])
        if tag is not None:
            summaries = [sm for sm in summaries
                         if any(has_tag(tags, tag) for _, tags in owners.get(sm.study_name, []))]
        truncated = len(summaries) > limit
        studies = [_study(optuna.load_study(study_name=sm.study_name, storage=storage),
                          [job for job, _ in owners.get(sm.study_name, [])])
                   for sm in summaries[:limit]]
    finally:
        close_storage(storage)
    note = f"only the {limit} most recent studies are shown" if truncated else None
    return {"studies": studies[::-1], "note": note}


def study_owners(queue: JobQueue, names: list[str]) -> dict[str, list[tuple[str, list]]]:
    """{study name: [(job name, tags)]}: the jobs that work on each study, by their kind's rule."""
    kinds = set(study_kinds())
    if not names or not kinds:
        return {}
    with queue.read() as conn:
        rows = q.jobs_of_kinds(conn, kinds)
    wanted = set(names)
    owners: dict[str, list[tuple[str, list]]] = {}
    for row in rows:
        study = study_of(row.kind, row.params, row.name, row.group_name)
        if study in wanted:
            owners.setdefault(study, []).append((row.name, row.tags or []))
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


def deadline_data(queue: JobQueue, tag: str | None = None, limit: int = DEADLINE_BAR_LIMIT) -> list[dict]:
    """One section per campaign with a deadline: its outlook and the forecast of its unfinished
    jobs (deadline.planner.load_forecast, the forecast `sched forecast` prints); [] when no campaign
    has a deadline, for the cost of one query. With a tag: the campaigns with an unfinished job
    that carries it (a campaign's forecast is the whole campaign's).

    Each job: `job_rows`' fields plus `bar_start`/`bar_end` (ISO; a running job from its real
    start), `unknown` (no estimate: it counts as taking no time) and `drawn`. At most `limit` bars
    are drawn: the deliverables and their path first, then the earliest to start."""
    from ..deadline.campaign import campaigns_with_deadlines

    with queue.read() as conn:
        if not campaigns_with_deadlines(conn):
            return []
        from ..deadline.planner import load_forecast

        forecast = load_forecast(conn, queue.clock.now(conn))
    if forecast is None:  # the deadline went between the two reads
        return []
    from ..deadline.verdict import campaign_json, job_rows

    every = job_rows(forecast)
    sections = []
    for campaign in forecast.campaigns:
        name = campaign.name
        mine = [r for r in every if r["campaign"] == name]
        if tag is not None and not any(has_tag(forecast.rows[r["id"]].tags, tag) for r in mine):
            continue
        outlook = campaign_json(forecast, name)
        for r in mine:
            row = forecast.rows[r["id"]]
            running = r["status"] == RUNNING and row.started_at is not None
            r["bar_start"] = iso(row.started_at) if running else r["start"]
            r["bar_end"] = r["end"]
            r["unknown"] = r["estimate_s"] is None
        placed = [r for r in mine if r["start_s"] is not None]
        chosen = sorted(placed, key=lambda r: (not r["deliverable"], not r["on_path"], r["start_s"], r["id"]))[:limit]
        drawn = {r["id"] for r in chosen}
        for r in mine:
            r["drawn"] = r["id"] in drawn
        elsewhere = [{"id": r["id"], "name": r["name"], "campaign": r["campaign"], "held": r["held"]}
                     for r in every if r["held"] and r["campaign"] != name]
        sections.append({
            "campaign": name, "now": iso(forecast.now), "deadline": outlook["deadline"],
            "line": outlook["line"], "misses": outlook["misses"], "acting": outlook["acting"],
            "done": not outlook["deliverables_left"], "done_by": outlook["done_by"],
            "policy": outlook["policy"], "workers_note": forecast.workers_note, "jobs": mine,
            "not_drawn": len(placed) - len(chosen), "limit": limit,
            "cannot_run": [{"id": r["id"], "name": r["name"], "why": r["cannot_run"] or "not scheduled"}
                           for r in mine if r["start_s"] is None],
            "no_estimate": [r["name"] for r in mine if r["unknown"]], "held_elsewhere": elsewhere})
    return sections


def gather(queue: JobQueue, tag: str | None = None) -> dict:
    """Everything the report shows, as plain data."""
    rows = leaderboard(queue, tag=tag)
    return {"summary": summary_data(queue, tag), "deadlines": deadline_data(queue, tag),
            "timeline": timeline_data(queue, tag),
            "failures": failures_data(queue, tag),
            "leaderboard": rows, "score": headline_column(rows),
            "curves": curves_data(queue, tag), "studies": study_data(queue, tag)}


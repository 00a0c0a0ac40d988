"""The forecast from the database, and the policy's pass that writes its decisions.

`load_forecast` reads the unfinished jobs (running, then the first MAX_REPLAYED queued in claim
order), their open dependencies, the history of like jobs and the live workers, estimates each
job's duration and runs the policy (read-only: `sched status`, `sched forecast`, `submit --dry-run`).
`plan_pass` does the same inside a write transaction and writes what changed: urgent, held,
finish_by, the note `sched show` prints, and each queued job's estimate (to measure its error
once it ran). The worker runs a pass every PASS_EVERY_S and logs each decision it wrote.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy import Connection, update

from ..fmt import visible
from ..resources import slot_gpus
from ..store import queries as q
from ..store.schema import campaigns as campaigns_table
from ..store.states import RUNNING, SUCCEEDED
from .campaign import campaigns_with_deadlines
from .estimate import Estimate, Finished, RowCounter, estimate, model_key, work_units
from .policy import Campaign, Decisions, decide
from .replay import SimJob, WorkerShape
from ..views import WORKER_GONE_S  # the workers `sched status` counts as up

PASS_EVERY_S = 15.0
MAX_REPLAYED = 2000
ASSUMED_WORKER = WorkerShape(gpus=[None], cpu_slots=1, name="assumed")
ESTIMATE_CHANGE = 0.05  # a queued job's stored estimate is rewritten when it moves by more than this
FINISH_BY_CHANGE_S = 60.0
_rows_of = RowCounter()  # row counts per data file version, kept across passes


@dataclass
class Forecast:
    now: datetime
    campaigns: list[Campaign]
    deadlines: dict[str, datetime]
    decisions: Decisions
    estimates: dict[int, Estimate]
    rows: dict[int, object]  # job id -> its row
    workers_note: str | None = None  # when no worker is up: the one assumed
    errors: list[str] = field(default_factory=list)

    def at(self, seconds: float) -> datetime:
        return self.now + timedelta(seconds=seconds)


def load_forecast(conn: Connection, now: datetime, *, assume: WorkerShape | None = None,
                  everything: bool = False) -> Forecast | None:
    """The forecast as of `now`; None when no campaign has a deadline (unless `everything`)."""
    rows = campaigns_with_deadlines(conn)
    if not rows and not everything:
        return None
    jobs = q.unfinished_jobs(conn, MAX_REPLAYED)
    workers, note = _workers(conn, now, assume)
    estimates = _estimates(conn, jobs, now)
    sims = _sim_jobs(conn, jobs, workers, estimates, now)
    campaigns = [Campaign(r.name, (r.deadline - now).total_seconds(), r.policy, r.margin, r.engaged_at is not None)
                 for r in rows]
    named = {r.name: [d.name for d in q.deliverables_of(conn, r.name)] for r in rows}
    decisions = decide(sims, workers, campaigns, deliverables=named, when=lambda s: _clock(now + timedelta(seconds=s)))
    return Forecast(now, campaigns, {r.name: r.deadline for r in rows}, decisions, estimates,
                    {j.id: j for j in jobs}, note)


def _clock(when: datetime) -> str:
    return when.strftime("%a %H:%M") + " UTC"


# ---- reading the queue -----------------------------------------------------------------------


def _workers(conn: Connection, now: datetime, assume: WorkerShape | None) -> tuple[list[WorkerShape], str | None]:
    shapes = []
    for row in q.live_workers(conn, now - timedelta(seconds=WORKER_GONE_S)):
        names = list(row.slots or [])
        gpus = [n for n in names if n.startswith("gpu")]
        totals = {s.get("gpu"): s.get("mem_total") for s in (row.gpu_stats or []) if isinstance(s, dict)}
        shapes.append(WorkerShape([totals.get(_index(n)) for n in gpus], sum(1 for n in names if n.startswith("cpu")),
                                  f"worker {row.id}"))
    if shapes:
        return shapes, None
    shape = assume or ASSUMED_WORKER
    return [shape], (f"no worker is up: assuming one with {len(shape.gpus)} GPU(s) and {shape.cpu_slots} CPU slot(s)")


def _index(slot: str) -> int | None:
    try:
        return int(slot[3:])
    except ValueError:
        return None


def _estimates(conn: Connection, jobs: list, now: datetime) -> dict[int, Estimate]:
    kinds = sorted({j.kind for j in jobs})
    groups = q.group_sizes(conn, sorted({j.group_name for j in jobs if j.group_name}))
    history = [Finished(r.kind, model_key(r.kind, r.params or {}),
                        work_units(r.kind, r.params or {}, _rows_of, groups.get(r.group_name, 1)),
                        (r.finished_at - r.started_at).total_seconds())
               for r in q.finished_like(conn, kinds)]
    out = {}
    for j in jobs:
        running = j.status == RUNNING and j.started_at is not None
        out[j.id] = estimate(j.kind, j.params or {}, history=history, expected_s=j.expected_s,
                             elapsed=(now - j.started_at).total_seconds() if running else None,
                             progress=(j.progress_done, j.progress_total), rows_of=_rows_of,
                             group_size=groups.get(j.group_name, 1) if j.group_name else 1)
    return out


def _sim_jobs(conn: Connection, jobs: list, workers: list[WorkerShape], estimates: dict[int, Estimate],
              now: datetime) -> list[SimJob]:
    from jobs import UnknownKind, get_kind

    open_deps = q.open_dependencies(conn, [j.id for j in jobs])
    out = []
    for j in jobs:
        try:
            kind = get_kind(j.kind)
        except UnknownKind:
            kind = None
        ends_early = kind is not None and kind.ends_early
        running = j.status == RUNNING
        out.append(SimJob(
            id=j.id, name=j.name, priority=j.priority, gpus=j.gpus, share_mib=j.placed_mib if running else j.gpu_memory_mib,
            preemptible=j.preemptible, deps=tuple(open_deps.get(j.id, ())), duration=estimates[j.id].seconds,
            running=running, elapsed=(now - j.started_at).total_seconds() if running and j.started_at else 0.0,
            worker=_worker_index(j, workers) if running else None,
            gpu_indices=_gpu_positions(j.slot) if running else (), urgent=j.urgent,
            not_before=max((j.not_before - now).total_seconds(), 0.0) if j.not_before else 0.0,
            finish_by=(j.finish_by - now).total_seconds() if j.finish_by else None,
            time_limit=_time_limit(kind, j, now),
            campaign=j.campaign, deliverable=j.deliverable, ends_early=ends_early))
    return out


def _time_limit(kind, job, now: datetime) -> tuple[str, float] | None:
    """The kind's own limit on the job (a tune's `until:`), as ("after", s) or ("at", s from now)."""
    if kind is None or kind.time_limit is None:
        return None
    limit = kind.time_limit(job.params or {})
    if limit is None:
        return None
    how, value = limit
    if how == "at":
        return "at", value - now.replace(tzinfo=timezone.utc).timestamp()
    return "after", value


def _worker_index(job, workers: list[WorkerShape]) -> int | None:
    for i, shape in enumerate(workers):
        if shape.name == f"worker {job.worker_id}":
            return i
    return None


def _gpu_positions(slot: str | None) -> tuple[int, ...]:
    """`gpu0+1` -> (0, 1): positions in the worker's GPU list (slots are named by index)."""
    if not slot or not slot.startswith("gpu"):
        return ()
    return tuple(i for i in (_index(n) for n in slot_gpus(slot)) if i is not None)


# ---- the pass ----------------------------------------------------------------------------------


def plan_pass(conn: Connection, now: datetime, *, had_deadlines: bool = False) -> list[str] | None:
    """Run the policy and write its decisions; the log lines of what changed. None when no
    campaign has a deadline (decisions left from one that had, `had_deadlines`, are lifted)."""
    forecast = load_forecast(conn, now)
    if forecast is None:
        if had_deadlines:
            q.clear_deadline_decisions(conn)
        return None
    lines = _engagement(conn, forecast)
    for row in forecast.rows.values():
        lines += _apply(conn, row, forecast)
    return lines


def _engagement(conn: Connection, forecast: Forecast) -> list[str]:
    lines = []
    for campaign in forecast.campaigns:
        verdict = forecast.decisions.verdicts[campaign.name]
        acting = campaign.name in forecast.decisions.acting
        if acting and not campaign.engaged:
            plain = forecast.decisions.plain[campaign.name]
            lines.append(f"deadline: campaign {campaign.name} acts: under plain priorities its deliverables "
                         f"{_done_text(plain, forecast)}; deadline {_clock(forecast.deadlines[campaign.name])}")
            conn.execute(update(campaigns_table).where(campaigns_table.c.name == campaign.name)
                         .values(engaged_at=forecast.now))
        elif campaign.engaged and verdict.done:
            lines.append(f"deadline: campaign {campaign.name}: deliverables done; the rest runs by priority again")
            conn.execute(update(campaigns_table).where(campaigns_table.c.name == campaign.name).values(engaged_at=None))
    return lines


def _done_text(verdict, forecast: Forecast) -> str:
    if verdict.done_by is None:
        return "cannot all run on the workers up"
    return f"would be done by {_clock(forecast.at(verdict.done_by))}"


def _apply(conn: Connection, row, forecast: Forecast) -> list[str]:
    d = forecast.decisions
    urgent = row.id in d.urgent
    held = d.held.get(row.id)
    finish_by = forecast.at(d.finish_by[row.id]) if row.id in d.finish_by else None
    note = d.notes.get(row.id)
    values, lines = {}, []
    label = f"{visible(row.name)} #{row.id}"
    if urgent != bool(row.urgent):
        values["urgent"] = urgent
        if urgent:
            lines.append(f"deadline: {label} {note}")
    if held != row.held:
        values["held"] = held
        lines.append(f"deadline: {label} {held}" if held else f"deadline: {label} no longer held")
    if _finish_by_changed(row.finish_by, finish_by):
        values["finish_by"] = finish_by
        if finish_by is not None:
            lines.append(f"deadline: {label} {note}")
    if note != row.deadline_note:
        values["deadline_note"] = note
    values.update(_estimate_values(row, forecast.estimates.get(row.id)))
    if values:
        q.set_deadline_decision(conn, row.id, **values)
    return lines


def _finish_by_changed(old: datetime | None, new: datetime | None) -> bool:
    if (old is None) != (new is None):
        return True
    return old is not None and abs((old - new).total_seconds()) > FINISH_BY_CHANGE_S


def _estimate_values(row, found: Estimate | None) -> dict:
    """A queued job's estimate, kept to compare with how long it takes (not once it runs)."""
    if row.status == RUNNING or found is None or not found.known:
        return {}
    old = row.estimate_s
    if old is not None and row.estimate_source == found.source and abs(found.seconds - old) <= ESTIMATE_CHANGE * old:
        return {}
    return {"estimate_s": found.seconds, "estimate_source": found.source}


def estimate_errors(conn: Connection, limit: int = 200) -> list[dict]:
    """Finished jobs with an estimate: expected against actual seconds, newest first."""
    from sqlalchemy import select

    from ..store.schema import jobs

    rows = conn.execute(select(jobs.c.id, jobs.c.name, jobs.c.kind, jobs.c.estimate_s, jobs.c.estimate_source,
                               jobs.c.started_at, jobs.c.finished_at)
                        .where(jobs.c.status == SUCCEEDED, jobs.c.estimate_s.is_not(None),
                               jobs.c.started_at.is_not(None), jobs.c.finished_at.is_not(None))
                        .order_by(jobs.c.finished_at.desc()).limit(limit)).all()
    out = []
    for r in rows:
        actual = (r.finished_at - r.started_at).total_seconds()
        out.append({"id": r.id, "name": r.name, "kind": r.kind, "estimate_s": r.estimate_s,
                    "source": r.estimate_source, "actual_s": actual,
                    "error": (r.estimate_s - actual) / actual if actual > 0 else None})
    return out

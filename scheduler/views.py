"""Read-only snapshots of the queue for `sched status`, `show` and scripts (`--json`).

A snapshot is plain dicts and lists, so the rich renderer and the JSON printer share it. Every
query here is bounded (an index range with a LIMIT, or the last day of endings), so a snapshot
stays fast with 100,000 jobs in the database.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from .fmt import duration as fmt_duration
from .fmt import iso
from .resources import slot_gpus
from .store.states import ALL_STATES, QUEUED, RUNNING, SUCCEEDED

if TYPE_CHECKING:
    from .jobqueue import JobQueue

# `sched status` imports this module: SQLAlchemy, the queue and the kinds' registry (pydantic) are
# imported where they are used, so a status read from a SQLite file (store/sqlite_reads.py) pays
# for none of them, and an empty queue not even for the kinds.

RECENT_LIMIT = 10
FAILURE_LIMIT = 5
QUEUE_LIMIT = 30
JSON_JOBS_LIMIT = 1000
WORKER_GONE_S = 300
BUSY_WINDOWS = {"last_hour": timedelta(hours=1), "last_day": timedelta(days=1)}


def job_dict(job, now: datetime | None = None) -> dict:
    progress = None
    if job.progress_done is not None:
        progress = {"done": job.progress_done, "total": job.progress_total,
                    "message": job.progress_message}
    elapsed = None
    if job.started_at and job.status != QUEUED:  # a queued job's start is its previous attempt's
        elapsed = ((job.finished_at or now or job.started_at) - job.started_at).total_seconds()
    return {
        "id": job.id, "name": job.name, "kind": job.kind, "status": job.status,
        "priority": job.priority, "gpus": job.gpus, "attempts": job.attempts,
        "max_attempts": job.max_attempts, "progress": progress, "worker_id": job.worker_id,
        "slot": job.slot, "tags": job.tags or [], "failure_kind": job.failure_kind,
        "message": job.message, "created_at": iso(job.created_at), "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at), "elapsed_s": elapsed, "exit_code": job.exit_code,
        "timeout_s": job.timeout_s, "output_dir": job.output_dir, "log_path": job.log_path,
        "preemptible": bool(job.preemptible), "lease_until": iso(job.lease_until),
        "reused_from": job.reused_from,
        # not claimed before (UTC): a retry's delay or its `not_before:`; None once it has passed
        "not_before": iso(job.not_before) if job.not_before and (now is None or job.not_before > now) else None,
        "retry_delay_s": job.retry_delay_s,
        # GPU memory (scheduler/resources.py): asked ("auto", MiB or None: whole GPUs), given, reached
        "gpu_memory": "auto" if job.gpu_memory_auto else job.gpu_memory_mib, "exclusive": bool(job.exclusive),
        "placed_mib": job.placed_mib, "gpu_peak_mib": job.gpu_peak_mib,
        # A running job whose lease ran out: its worker stopped renewing it (killed? cut off?).
        "lease_expired_s": ((now - job.lease_until).total_seconds()
                            if now and job.status == RUNNING and job.lease_until and job.lease_until < now else None),
        # Deadlines (scheduler/deadline/): its campaign, whether it is a deliverable, the policy's decisions
        "campaign": job.campaign, "deliverable": bool(job.deliverable), "expected_s": job.expected_s,
        "urgent": bool(job.urgent), "held": job.held, "finish_by": iso(job.finish_by),
        "deadline_note": job.deadline_note, "estimate_s": job.estimate_s, "estimate_source": job.estimate_source,
    }


def _eta(job: dict) -> float | None:
    """Seconds left, assuming the rest goes as fast as what is done so far."""
    p = job["progress"]
    if not p or not p["total"] or not p["done"] or not job["elapsed_s"]:
        return None
    return job["elapsed_s"] * (p["total"] - p["done"]) / p["done"]


def status_snapshot(queue: JobQueue, *, all_jobs: bool = True, jobs_limit: int = JSON_JOBS_LIMIT) -> dict:
    """Everything `sched status` shows, from one set of queries in one read transaction.

    `queue` is a JobQueue or a `store.sqlite_reads.SqliteStatus`: anything whose `status_reads()`
    gives the reads of `store.reads.SqlReads`."""
    with queue.status_reads() as r:
        now = r.now()
        drained = r.is_drained()
        counts = {state: 0 for state in ALL_STATES}
        counts.update(r.status_counts())
        running = [job_dict(j, now) for j in r.running_jobs()]
        latest = r.latest_metric([j["id"] for j in running])
        for job in running:
            job["eta_s"] = _eta(job)
            metric = latest.get(job["id"])
            job["latest_metric"] = None if metric is None else {
                "key": metric.key, "value": metric.value, "step": metric.step, "split": metric.split}
        workers = _workers(r, now, running)
        queued = r.queued_jobs(QUEUE_LIMIT)
        waiting_on = r.pending_dependencies([j.id for j in queued])
        gpu_slots_free = _free_gpu_slots(workers)
        queue_rows = [{**job_dict(j, now), "waiting_for": waiting_on.get(j.id, []),
                       "why": _why_waiting(j, waiting_on.get(j.id, []), drained, gpu_slots_free, workers, now)}
                      for j in queued]
        recent = [job_dict(j, now) for j in r.recent_endings(RECENT_LIMIT)]
        _add_scores(r, recent)
        failures = [job_dict(j, now) for j in r.recent_endings(FAILURE_LIMIT, failures_only=True)]
        busy = _busy_share(r, now, workers, running)
        eta = _queue_eta(r, now, workers, running)
        deadlines = deadline_outlook(r, now)
        jobs = [job_dict(j, now) for j in r.newest_jobs(jobs_limit)] if all_jobs else []
    expired = [j["id"] for j in running if j["lease_expired_s"] is not None]
    return {"now": iso(now), "drained": drained, "counts": counts, "workers": workers,
            "running": running, "queue": queue_rows, "recent": recent, "failures": failures,
            "busy": busy, "expired": expired, "eta": eta, "deadlines": deadlines, "jobs": jobs}


def deadline_outlook(r, now: datetime) -> list[dict]:
    """One forecast per campaign with a deadline (deadline.verdict.campaign_json); none: no cost
    beyond one query (the forecast's modules, and SQLAlchemy, are imported only then)."""
    if not r.has_deadlines():
        return []
    from .deadline.planner import load_forecast
    from .deadline.verdict import campaign_json

    with r.forecast_connection() as conn:
        forecast = load_forecast(conn, now)
    return [campaign_json(forecast, c.name) for c in forecast.campaigns]


def _queue_eta(r, now: datetime, workers: list[dict], running: list[dict]) -> str | None:
    """When the queue may be done: every queued job's kind's typical duration (median of its recent
    successes), plus what running jobs have left, spread over the live workers' slots."""
    queued = r.queued_counts_by_kind()
    if not queued:
        return None
    slots = sum(len(w["slots"]) for w in workers)
    typical = r.typical_durations(list(queued), now - timedelta(days=14))
    known = [k for k in queued if k in typical]
    if not slots or not known:
        return f"{sum(queued.values())} queued" + ("" if slots else "; no worker running") + \
            ("" if known else "; no finished job of their kinds to estimate from yet")
    work = sum(queued[k] * typical[k] for k in known) + sum(j.get("eta_s") or 0 for j in running)
    seconds = work / slots
    unknown = sum(queued[k] for k in queued if k not in typical)
    end = (now + timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M")
    caveat = f" (+{unknown} job(s) of kinds not run yet)" if unknown else ""
    return f"Queue: about {fmt_duration(seconds)} of work left on {slots} slot(s), done around {end} UTC{caveat}"


def _add_scores(r, jobs: list[dict]) -> None:
    """Each job's headline score (the first score its kind puts on the leaderboard), if it logged one
    and succeeded: what a failed job logged before it failed is not its score."""
    succeeded = {j["kind"] for j in jobs if j["status"] == SUCCEEDED}  # only they have a score to show
    keys = {}
    if succeeded:  # the kinds' registry imports pydantic and the kinds' modules: only when needed
        from .kinds import headline_metrics

        keys = headline_metrics(succeeded)
    values = r.last_metric_values([j["id"] for j in jobs], set(keys.values()))
    for job in jobs:
        key = keys.get(job["kind"])
        value = values.get(job["id"], {}).get(key)
        scored = value is not None and job["status"] == SUCCEEDED
        job["score"] = {"key": key, "value": value} if scored else None


def _workers(r, now: datetime, running: list[dict]) -> list[dict]:
    # A worker silent for WORKER_GONE_S was killed without saying so: leave it out.
    rows = r.live_workers(now - timedelta(seconds=WORKER_GONE_S))
    jobs_by_slot: dict[tuple[int, str], list[dict]] = {}
    for j in running:  # a multi-GPU job is on each of its GPUs; a shared GPU has several jobs
        for part in slot_gpus(j["slot"] or ""):
            jobs_by_slot.setdefault((j["worker_id"], part), []).append(j)
    workers = []
    for w in rows:
        stats = {g["gpu"]: g for g in (w.gpu_stats or [])}
        reservation = w.reservation or None
        reserved = {f"gpu{i}" for i in reservation["gpus"]} if reservation else set()
        slots = []
        for slot in w.slots:
            here = jobs_by_slot.get((w.id, slot), [])
            gpu = int(slot[3:]) if slot.startswith("gpu") and slot[3:].isdigit() else None
            slots.append({"slot": slot, "job": ", ".join(j["name"] for j in here) or None,
                          "job_id": here[0]["id"] if here else None, "gpu_stats": stats.get(gpu),
                          "jobs": [{"id": j["id"], "name": j["name"], "placed_mib": j["placed_mib"]} for j in here],
                          "reserved_for": reservation["name"] if slot in reserved else None})
        workers.append({"id": w.id, "host": _host_shown(w.host), "pid": w.pid, **_slurm_fields(w.host), "slots": w.slots, "state": w.state,
                        "heartbeat_age_s": (now - w.heartbeat).total_seconds(), "slot_use": slots,
                        "reservation": reservation, "problem": getattr(w, "problem", None)})
    return workers


_SLURM_HOST = re.compile(r"^(?P<host>.*) \(slurm job (?P<job>[^ )]+)(?: until (?P<end>[^)]+))?\)$")


def _slurm_fields(host: str) -> dict:
    """The Slurm job a worker runs in and its time left (the worker registered them in its host)."""
    match = _SLURM_HOST.match(host or "")
    if not match:
        return {}
    left = None
    if match["end"]:
        try:  # squeue prints the cluster's local time
            left = max(0.0, (datetime.fromisoformat(match["end"]) - datetime.now()).total_seconds())
        except ValueError:
            pass
    return {"slurm_job": match["job"], "slurm_time_left_s": left}


def _host_shown(host: str) -> str:
    from .fmt import duration

    fields = _slurm_fields(host)
    if not fields:
        return host
    left = fields["slurm_time_left_s"]
    shown = f"{_SLURM_HOST.match(host)['host']} (slurm job {fields['slurm_job']}"
    return shown + (f", {duration(left)} left)" if left is not None else ")")


def _free_gpu_slots(workers: list[dict]) -> int:
    return sum(1 for w in workers for s in w["slot_use"]
               if s["slot"].startswith("gpu") and not s["job"] and not s["reserved_for"]
               and gpu_blocked(s["slot"], s["gpu_stats"]) is None)


def gpu_blocked(slot: str, stats: dict | None) -> str | None:
    """Why a GPU with no sched job takes none either: lost, held by another program, or CUDA failed."""
    if not stats:
        return None
    if "lost" in stats:
        return f"{slot} lost ({stats['lost']})"
    if stats.get("fault"):
        return f"{slot}: CUDA unusable on its worker ({stats['fault']})"
    if stats.get("outside"):
        return f"{slot} busy outside sched ({stats['mem_used'] / 1024:.0f} GiB used)"
    return None


def not_before_text(when: datetime, now: datetime, retry: bool) -> str:
    """`retry at 14:50 UTC` (a retry's delay), `not before 2026-12-01 03:00 UTC` (another day)."""
    shown = f"{when:%H:%M}" if when.date() == now.date() else f"{when:%Y-%m-%d %H:%M}"
    if when - now < timedelta(minutes=2) and when.date() == now.date():
        shown = f"{when:%H:%M:%S}"
    return f"{'retry at' if retry else 'not before'} {shown} UTC"


def _why_waiting(job, pending: list[str], drained: bool, gpu_slots_free: int, workers: list[dict],
                 now: datetime | None = None) -> str:
    if pending:
        return "waiting for " + ", ".join(pending[:3]) + (f" and {len(pending) - 3} more" if len(pending) > 3 else "")
    if job.held:
        return job.held
    if now is not None and job.not_before is not None and job.not_before > now:
        return not_before_text(job.not_before, now, retry=job.attempts > 0)
    if drained:
        return "queue drained (sched resume)"
    if not workers:
        return "no worker running"
    if job.gpus:
        return _why_waiting_for_gpus(job, gpu_slots_free, workers)
    return "next free slot"


def _why_waiting_for_gpus(job, gpu_slots_free: int, workers: list[dict]) -> str:
    largest = max(sum(s["slot"].startswith("gpu") for s in w["slot_use"]) for w in workers)
    if not largest:
        return "needs a GPU; no worker has one"
    if job.gpus > largest:
        return f"needs {job.gpus} GPUs; the largest worker has {largest}"
    for w in workers:
        held = w.get("reservation")
        if held and held["job_id"] == job.id:
            gpus = ", ".join(f"gpu{i}" for i in held["gpus"])
            blocked = [why for s in w["slot_use"] if s["slot"] in {f"gpu{i}" for i in held["gpus"]}
                       for why in [gpu_blocked(s["slot"], s["gpu_stats"])] if why]
            if blocked:  # what keeps the kept GPUs from it is not a sched job
                return "; ".join(blocked) + f" (reserved for it on worker {w['id']})"
            return f"reserved {gpus} on worker {w['id']}: starts when {job.gpus} are free"
    reserved = [(s["slot"], s["reserved_for"]) for w in workers for s in w["slot_use"] if s["reserved_for"]]
    if reserved and not gpu_slots_free:
        slots = ", ".join(slot for slot, _ in reserved)
        return f"{slots} reserved for {reserved[0][1]}"
    blocked = [why for w in workers for s in w["slot_use"] if not s["job"]
               for why in [gpu_blocked(s["slot"], s["gpu_stats"])] if why]
    if blocked and not gpu_slots_free:
        return "; ".join(blocked[:2]) + (f" and {len(blocked) - 2} more" if len(blocked) > 2 else "")
    if job.gpus > 1:
        return f"needs {job.gpus} free GPUs on one worker"
    return "next free GPU" if not gpu_slots_free else "next free slot"


def _busy_share(r, now: datetime, workers: list[dict], running: list[dict]) -> dict:
    """Share of GPU-slot time used by jobs over the last hour and day (all slots when no GPU).

    The capacity is the live workers' slots; with no worker alive, the slots jobs used in the window.
    """
    since = now - max(BUSY_WINDOWS.values())
    current = [(datetime.fromisoformat(j["started_at"]), part) for j in running if j["started_at"]
               for part in slot_gpus(j["slot"] or "")]
    used_slots = set(r.busy_slots(since)) | {slot for _, slot in current if slot}
    live_slots = [slot for w in workers for slot in w["slots"]]
    kind = "gpu" if any(slot.startswith("gpu") for slot in live_slots or used_slots) else "slot"
    capacity = [slot for slot in (live_slots or sorted(used_slots)) if kind == "slot" or slot.startswith("gpu")]
    slots = len(capacity)
    share = {}
    for label, window in BUSY_WINDOWS.items():
        begin = now - window
        used = r.used_seconds(begin, now, gpu_only=kind == "gpu")
        used += sum(max(0.0, (now - max(start, begin)).total_seconds()) for start, slot in current
                    if slot and (kind == "slot" or slot.startswith("gpu")))
        # jobs sharing a GPU each count their time: a GPU cannot be more than fully busy
        share[label] = min(1.0, round(used / (slots * window.total_seconds()), 4)) if slots else None
    return {"kind": kind, "slots": slots, **share}


def job_detail(queue: JobQueue, ref: str | int) -> dict:
    """One job with its dependencies, metrics and artifacts."""
    from .store import queries as q
    from .store.engine import db_now

    job_id = queue.resolve(ref)
    with queue.read() as conn:
        now = db_now(conn)
        job = q.job_row(conn, job_id)
        deps = q.job_dependencies(conn, job_id)
        metrics = q.job_metrics(conn, job_id)
        artifacts = q.job_artifacts(conn, job_id)
        return {
            **job_dict(job, now),
            "params": job.params,
            "group": job.group_name,
            "after": [{"name": n, "status": st} for n, st in deps],
            "metrics": [{"key": m.key, "value": m.value, "step": m.step, "split": m.split} for m in metrics],
            "artifacts": {a.name: a.path for a in artifacts},
        }


def _flat(value, prefix: str) -> dict:
    if isinstance(value, dict) and value:
        out = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}.{key}"))
        return out
    return {prefix: value}


def job_diff(queue: JobQueue, first: str | int, second: str | int) -> dict:
    """Two jobs side by side (`sched diff`): their settings, params (nested ones as `a.b`), final
    metrics (each key's last value) and artifacts, rows that differ first.

    {"a": {id, name}, "b": {id, name}, "rows": [{field, section, a, b, same}], "differ": n}."""
    a, b = job_detail(queue, first), job_detail(queue, second)
    fields: list[tuple[str, str, object, object]] = []
    for key in ("kind", "status", "priority", "gpus", "attempts", "max_attempts", "tags", "elapsed_s", "message"):
        fields.append(("job", key if key != "elapsed_s" else "time", a.get(key), b.get(key)))
    pa, pb = _flat(a["params"] or {}, "params"), _flat(b["params"] or {}, "params")
    fields += [("params", key, pa.get(key, _MISSING), pb.get(key, _MISSING)) for key in [*pa, *(k for k in pb if k not in pa)]]
    ma = {m["key"]: m["value"] for m in a["metrics"]}  # in the order logged: the last value stays
    mb = {m["key"]: m["value"] for m in b["metrics"]}
    fields += [("metrics", key, ma.get(key, _MISSING), mb.get(key, _MISSING)) for key in [*ma, *(k for k in mb if k not in ma)]]
    fields += [("artifacts", key, a["artifacts"].get(key, _MISSING), b["artifacts"].get(key, _MISSING))
               for key in [*a["artifacts"], *(k for k in b["artifacts"] if k not in a["artifacts"])]]
    rows = []
    for section, field, va, vb in fields:
        same = _comparable(va) == _comparable(vb)
        rows.append({"section": section, "field": field, "a": None if va is _MISSING else va,
                     "b": None if vb is _MISSING else vb, "missing_a": va is _MISSING, "missing_b": vb is _MISSING,
                     "same": same})
    order = {"job": 0, "params": 1, "metrics": 2, "artifacts": 3}
    rows.sort(key=lambda r: (r["same"], order[r["section"]]))  # stable: within a section, as logged
    return {"a": {"id": a["id"], "name": a["name"]}, "b": {"id": b["id"], "name": b["name"]}, "rows": rows,
            "differ": sum(not r["same"] for r in rows)}


_MISSING = object()


def _comparable(value) -> str:
    import json

    return "<absent>" if value is _MISSING else json.dumps(value, sort_keys=True, default=str)

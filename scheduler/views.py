"""Read-only snapshots of the queue for `sched status`, `show` and scripts (`--json`).

A snapshot is plain dicts and lists, so the rich renderer and the JSON printer share it. Every
query here is bounded (an index range with a LIMIT, or the last day of endings), so a snapshot
stays fast with 100,000 jobs in the database.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import aliased

from .db import db_now
from .jobqueue import JobQueue
from .models import ALL_STATES, TERMINAL_FAILURES, Artifact, Job, JobDependency, Metric, Worker

RECENT_LIMIT = 10
FAILURE_LIMIT = 5
QUEUE_LIMIT = 30
JSON_JOBS_LIMIT = 1000
WORKER_GONE_S = 300
BUSY_WINDOWS = {"last_hour": timedelta(hours=1), "last_day": timedelta(days=1)}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


def job_dict(job: Job, now: datetime | None = None) -> dict:
    progress = None
    if job.progress_done is not None:
        progress = {"done": job.progress_done, "total": job.progress_total,
                    "message": job.progress_message}
    elapsed = None
    if job.started_at and job.status != "queued":  # a queued job's start is its previous attempt's
        elapsed = ((job.finished_at or now or job.started_at) - job.started_at).total_seconds()
    return {
        "id": job.id, "name": job.name, "kind": job.kind, "status": job.status,
        "priority": job.priority, "gpus": job.gpus, "attempts": job.attempts,
        "max_attempts": job.max_attempts, "progress": progress, "worker_id": job.worker_id,
        "slot": job.slot, "tags": job.tags or [], "failure_kind": job.failure_kind,
        "message": job.message, "created_at": _iso(job.created_at), "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at), "elapsed_s": elapsed, "exit_code": job.exit_code,
        "timeout_s": job.timeout_s, "output_dir": job.output_dir, "log_path": job.log_path,
        "preemptible": bool(job.preemptible),
    }


def _eta(job: dict) -> float | None:
    """Seconds left, assuming the rest goes as fast as what is done so far."""
    p = job["progress"]
    if not p or not p["total"] or not p["done"] or not job["elapsed_s"]:
        return None
    return job["elapsed_s"] * (p["total"] - p["done"]) / p["done"]


def status_snapshot(queue: JobQueue, *, all_jobs: bool = True, jobs_limit: int = JSON_JOBS_LIMIT) -> dict:
    """Everything `sched status` shows, from one set of queries."""
    with queue.read_session() as s:
        now = db_now(s)
        drained = queue.drained_in(s)
        counts = {state: 0 for state in ALL_STATES}
        counts.update(dict(s.execute(select(Job.status, func.count()).group_by(Job.status)).all()))
        running = [job_dict(j, now) for j in
                   s.scalars(select(Job).where(Job.status == "running").order_by(Job.started_at)).all()]
        latest = _latest_metrics(s, [j["id"] for j in running])
        for job in running:
            job["eta_s"] = _eta(job)
            job["latest_metric"] = latest.get(job["id"])
        workers = _workers(s, now, running)
        queued = s.scalars(select(Job).where(Job.status == "queued")
                           .order_by(Job.priority.desc(), Job.id).limit(QUEUE_LIMIT)).all()
        waiting_on = _pending_dependencies(s, [j.id for j in queued])
        gpu_slots_free = _free_gpu_slots(workers)
        queue_rows = [{**job_dict(j, now), "waiting_for": waiting_on.get(j.id, []),
                       "why": _why_waiting(j, waiting_on.get(j.id, []), drained, gpu_slots_free, workers)}
                      for j in queued]
        recent = [job_dict(j, now) for j in s.scalars(
            select(Job).where(Job.finished_at.is_not(None)).order_by(Job.finished_at.desc()).limit(RECENT_LIMIT))]
        accuracies = _metric_values(s, [j["id"] for j in recent], "val_accuracy")
        for job in recent:
            job["val_accuracy"] = accuracies.get(job["id"])
        failures = [job_dict(j, now) for j in s.scalars(
            select(Job).where(Job.status.in_(TERMINAL_FAILURES), Job.finished_at.is_not(None))
            .order_by(Job.finished_at.desc()).limit(FAILURE_LIMIT))]
        busy = _busy_share(s, now, workers, running)
        jobs = ([job_dict(j, now) for j in s.scalars(select(Job).order_by(Job.id.desc()).limit(jobs_limit))][::-1]
                if all_jobs else [])
    return {"now": _iso(now), "drained": drained, "counts": counts, "workers": workers,
            "running": running, "queue": queue_rows, "recent": recent, "failures": failures,
            "busy": busy, "jobs": jobs}


def _workers(s, now: datetime, running: list[dict]) -> list[dict]:
    # A worker silent for WORKER_GONE_S was killed without saying so: leave it out.
    rows = s.scalars(select(Worker).where(
        Worker.state != "stopped", Worker.heartbeat > now - timedelta(seconds=WORKER_GONE_S))
        .order_by(Worker.id)).all()
    jobs_by_slot = {(j["worker_id"], j["slot"]): j for j in running}
    workers = []
    for w in rows:
        stats = {g["gpu"]: g for g in (w.gpu_stats or [])}
        slots = []
        for slot in w.slots:
            job = jobs_by_slot.get((w.id, slot))
            gpu = int(slot[3:]) if slot.startswith("gpu") else None
            slots.append({"slot": slot, "job": job["name"] if job else None,
                          "job_id": job["id"] if job else None, "gpu_stats": stats.get(gpu)})
        workers.append({"id": w.id, "host": w.host, "pid": w.pid, "slots": w.slots, "state": w.state,
                        "heartbeat_age_s": (now - w.heartbeat).total_seconds(), "slot_use": slots})
    return workers


def _free_gpu_slots(workers: list[dict]) -> int:
    return sum(1 for w in workers for s in w["slot_use"] if s["slot"].startswith("gpu") and not s["job"])


def _why_waiting(job: Job, pending: list[str], drained: bool, gpu_slots_free: int, workers: list[dict]) -> str:
    if pending:
        return "waiting for " + ", ".join(pending[:3]) + (f" and {len(pending) - 3} more" if len(pending) > 3 else "")
    if drained:
        return "queue drained (sched resume)"
    if not workers:
        return "no worker running"
    if job.gpus and not any(s["slot"].startswith("gpu") for w in workers for s in w["slot_use"]):
        return "needs a GPU; no worker has one"
    if job.gpus and not gpu_slots_free:
        return "no free GPU slot"
    return "next free slot"


def _pending_dependencies(s, job_ids: list[int]) -> dict[int, list[str]]:
    if not job_ids:
        return {}
    dep = aliased(Job)
    rows = s.execute(select(JobDependency.job_id, dep.name).join(dep, dep.id == JobDependency.depends_on)
                     .where(JobDependency.job_id.in_(job_ids), dep.status != "succeeded")).all()
    pending: dict[int, list[str]] = {}
    for job_id, name in rows:
        pending.setdefault(job_id, []).append(name)
    return pending


def _latest_metrics(s, job_ids: list[int]) -> dict[int, dict]:
    """The last metric each job logged (one query)."""
    if not job_ids:
        return {}
    last = select(func.max(Metric.id)).where(Metric.job_id.in_(job_ids)).group_by(Metric.job_id)
    rows = s.scalars(select(Metric).where(Metric.id.in_(last))).all()
    return {m.job_id: {"key": m.key, "value": m.value, "step": m.step, "split": m.split} for m in rows}


def _metric_values(s, job_ids: list[int], key: str) -> dict[int, float]:
    if not job_ids:
        return {}
    last = (select(func.max(Metric.id)).where(Metric.job_id.in_(job_ids), Metric.key == key)
            .group_by(Metric.job_id))
    return dict(s.execute(select(Metric.job_id, Metric.value).where(Metric.id.in_(last))).all())


def _busy_share(s, now: datetime, workers: list[dict], running: list[dict]) -> dict:
    """Share of GPU-slot time used by jobs over the last hour and day (all slots when no GPU).

    The capacity is the live workers' slots; with no worker alive, the slots jobs used in the window.
    """
    since = now - max(BUSY_WINDOWS.values())
    ended = s.execute(select(Job.started_at, Job.finished_at, Job.slot).where(
        Job.finished_at > since, Job.started_at.is_not(None))).all()
    current = [(datetime.fromisoformat(j["started_at"]), now, j["slot"]) for j in running if j["started_at"]]
    used_slots = {slot for _, _, slot in [*ended, *current] if slot}
    live_slots = [slot for w in workers for slot in w["slots"]]
    kind = "gpu" if any(slot.startswith("gpu") for slot in live_slots or used_slots) else "slot"
    capacity = [slot for slot in (live_slots or sorted(used_slots)) if kind == "slot" or slot.startswith("gpu")]
    slots = len(capacity)
    spans = [(start, end) for start, end, slot in [*ended, *current]
             if slot and (kind == "slot" or slot.startswith("gpu"))]
    share = {}
    for label, window in BUSY_WINDOWS.items():
        begin = now - window
        used = sum(max(0.0, (min(end, now) - max(start, begin)).total_seconds()) for start, end in spans)
        share[label] = round(used / (slots * window.total_seconds()), 4) if slots else None
    return {"kind": kind, "slots": slots, **share}


def job_detail(queue: JobQueue, ref: str | int) -> dict:
    """One job with its dependencies, metrics and artifacts."""
    job_id = queue.resolve(ref)
    with queue.read_session() as s:
        now = db_now(s)
        job = s.get(Job, job_id)
        dep = aliased(Job)
        deps = s.execute(select(dep.name, dep.status).join(JobDependency, JobDependency.depends_on == dep.id)
                         .where(JobDependency.job_id == job_id)).all()
        metrics = s.execute(select(Metric).where(Metric.job_id == job_id).order_by(Metric.id)).scalars().all()
        artifacts = s.execute(select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.id)).scalars().all()
        return {
            **job_dict(job, now),
            "params": job.params,
            "group": job.group_name,
            "after": [{"name": n, "status": st} for n, st in deps],
            "metrics": [{"key": m.key, "value": m.value, "step": m.step, "split": m.split} for m in metrics],
            "artifacts": {a.name: a.path for a in artifacts},
        }

"""Read-only snapshots of the queue for `sched status`, `show` and scripts (`--json`).

A snapshot is plain dicts and lists, so the rich renderer and the JSON printer share it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import aliased

from .db import db_now
from .jobqueue import JobQueue
from .models import ALL_STATES, Artifact, Job, JobDependency, Metric, Worker

RECENT_LIMIT = 10
WORKER_GONE_S = 300
QUEUE_LIMIT = 30


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


def job_dict(job: Job, now: datetime | None = None) -> dict:
    progress = None
    if job.progress_done is not None:
        progress = {"done": job.progress_done, "total": job.progress_total,
                    "message": job.progress_message}
    elapsed = None
    if job.started_at:
        elapsed = ((job.finished_at or now or job.started_at) - job.started_at).total_seconds()
    return {
        "id": job.id, "name": job.name, "kind": job.kind, "status": job.status,
        "priority": job.priority, "gpus": job.gpus, "attempts": job.attempts,
        "max_attempts": job.max_attempts, "progress": progress, "worker_id": job.worker_id,
        "slot": job.slot, "tags": job.tags or [], "failure_kind": job.failure_kind,
        "message": job.message, "created_at": _iso(job.created_at), "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at), "elapsed_s": elapsed, "exit_code": job.exit_code,
        "timeout_s": job.timeout_s, "output_dir": job.output_dir, "log_path": job.log_path,
    }


def status_snapshot(queue: JobQueue, *, all_jobs: bool = True) -> dict:
    """Counts by state, workers, running jobs, the queue in claim order and recent endings."""
    with queue.read_session() as s:
        now = db_now(s)
        counts = {state: 0 for state in ALL_STATES}
        counts.update(dict(s.execute(select(Job.status, func.count()).group_by(Job.status)).all()))
        running = s.scalars(select(Job).where(Job.status == "running").order_by(Job.started_at)).all()
        queued = s.scalars(select(Job).where(Job.status == "queued")
                           .order_by(Job.priority.desc(), Job.id).limit(QUEUE_LIMIT)).all()
        recent = s.scalars(select(Job).where(Job.finished_at.is_not(None))
                           .order_by(Job.finished_at.desc()).limit(RECENT_LIMIT)).all()
        waiting_on = _pending_dependencies(s, [j.id for j in queued])
        # A worker that stopped heartbeating for WORKER_GONE_S was killed: leave it out.
        workers = s.scalars(select(Worker).where(
            Worker.state != "stopped", Worker.heartbeat > now - timedelta(seconds=WORKER_GONE_S))
            .order_by(Worker.id)).all()
        drained = queue.drained_in(s)
        jobs = s.scalars(select(Job).order_by(Job.id)).all() if all_jobs else []
        return {
            "now": _iso(now),
            "drained": drained,
            "counts": counts,
            "workers": [{"id": w.id, "host": w.host, "pid": w.pid, "slots": w.slots, "state": w.state,
                         "heartbeat_age_s": (now - w.heartbeat).total_seconds()} for w in workers],
            "running": [job_dict(j, now) for j in running],
            "queue": [{**job_dict(j, now), "waiting_for": waiting_on.get(j.id, [])} for j in queued],
            "recent": [job_dict(j, now) for j in recent],
            "jobs": [job_dict(j, now) for j in jobs],
        }


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
            "after": [{"name": n, "status": st} for n, st in deps],
            "metrics": [{"key": m.key, "value": m.value, "step": m.step, "split": m.split} for m in metrics],
            "artifacts": {a.name: a.path for a in artifacts},
        }

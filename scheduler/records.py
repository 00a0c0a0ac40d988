"""What a running job writes besides its state (metrics, artifacts, progress) and reads of others.

These rows do not move a job between states, so they live apart from `jobqueue`; the child process
of a job writes them through its context while the worker keeps the job's state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import insert, select, update

from .db import db_now
from .errors import NotFound
from .jobqueue import JobQueue
from .models import Artifact, Job, Metric


@dataclass
class JobRecord:
    """Another job as a job sees it: where its files are, what it logged, how it ended."""

    id: int
    name: str
    kind: str
    status: str
    params: dict
    tags: list
    output_dir: str | None
    metrics: dict[str, float] = field(default_factory=dict)  # last value logged per key
    history: list[dict] = field(default_factory=list)  # every metric row, in order
    artifacts: dict[str, str] = field(default_factory=dict)


class Records:
    def __init__(self, queue: JobQueue):
        self.queue = queue

    def log_metric(self, job_id: int, key: str, value: float, step: int | None = None,
                   split: str | None = None) -> None:
        with self.queue.session() as s, s.begin():
            s.execute(insert(Metric).values(job_id=job_id, key=key, value=float(value), step=step,
                                            split=split, time=db_now(s)))

    def add_artifact(self, job_id: int, name: str, path: str) -> None:
        """Record a file the job produced; a second call with the same name replaces the path."""
        with self.queue.session() as s, s.begin():
            if not s.execute(update(Artifact).where(Artifact.job_id == job_id, Artifact.name == name)
                             .values(path=str(path))).rowcount:
                s.execute(insert(Artifact).values(job_id=job_id, name=name, path=str(path)))

    def set_progress(self, job_id: int, done: float, total: float | None, message: str | None) -> None:
        with self.queue.session() as s, s.begin():
            s.execute(update(Job).where(Job.id == job_id).values(
                progress_done=done, progress_total=total, progress_message=message))

    def job(self, ref: str | int) -> JobRecord:
        """Another job's record by name or id, with its metrics and artifacts."""
        try:
            job_id = self.queue.resolve(ref)
        except NotFound:
            raise NotFound(f"no job named '{ref}' in the queue") from None
        with self.queue.read_session() as s:
            row = s.get(Job, job_id)
            metrics = s.execute(select(Metric.key, Metric.value, Metric.step, Metric.split)
                                .where(Metric.job_id == job_id).order_by(Metric.id)).all()
            artifacts = s.execute(select(Artifact.name, Artifact.path)
                                  .where(Artifact.job_id == job_id)).all()
        return JobRecord(
            id=row.id, name=row.name, kind=row.kind, status=row.status, params=row.params,
            tags=row.tags or [], output_dir=row.output_dir,
            metrics={m.key: m.value for m in metrics},
            history=[dict(key=m.key, value=m.value, step=m.step, split=m.split) for m in metrics],
            artifacts={a.name: a.path for a in artifacts},
        )

    def jobs_where(self, *, kind: str | None = None, tag: str | None = None,
                   status: str | None = None) -> list[str]:
        """Names of jobs matching all the given filters, oldest first."""
        query = select(Job.name, Job.tags).order_by(Job.id)
        if kind:
            query = query.where(Job.kind == kind)
        if status:
            query = query.where(Job.status == status)
        with self.queue.read_session() as s:
            rows = s.execute(query).all()
        return [name for name, tags in rows if tag is None or tag in (tags or [])]

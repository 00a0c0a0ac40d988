"""What a running job writes besides its state (metrics, artifacts, progress) and reads of others.

These rows do not move a job between states, so they live apart from `jobqueue`; the child process
of a job writes them through its context while the worker keeps the job's state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timezone

from .errors import NotFound
from .jobqueue import JobQueue
from .store import queries as q


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
        with self.queue.write() as conn:
            q.insert_metric(conn, job_id, key, float(value), step, split, self.queue.clock.now(conn))

    def metric_recorded(self, job_id: int, key: str, value: float, step: int | None = None,
                        split: str | None = None) -> bool:
        """Whether this metric is in the database already: a write whose reply an outage cut off
        may have committed (outage.BufferedReporter asks before it writes one again)."""
        with self.queue.read() as conn:
            return q.metric_exists(conn, job_id, key, float(value), step, split)

    def add_artifact(self, job_id: int, name: str, path: str) -> None:
        """Record a file the job produced; a second call with the same name replaces the path."""
        with self.queue.write() as conn:
            q.put_artifact(conn, job_id, name, str(path))

    def set_progress(self, job_id: int, done: float, total: float | None, message: str | None) -> None:
        with self.queue.write() as conn:
            q.set_progress(conn, job_id, done, total, message)

    def record_gpu_peak(self, job_id: int, peak_mib: int) -> None:
        self.queue.record_gpu_peak(job_id, peak_mib)

    def finish_by(self, job_id: int) -> float | None:
        """The time (epoch seconds) the deadline policy wants the job ended by, or None: a job that
        can end early (a tune) starts no trial that would end after it."""
        with self.queue.read() as conn:
            row = q.job_row(conn, job_id)
        if row is None or row.finish_by is None:
            return None
        return row.finish_by.replace(tzinfo=timezone.utc).timestamp()

    def expected_seconds(self, job_id: int) -> float | None:
        """The forecast's estimate of the job's duration, stored before it started (or None)."""
        with self.queue.read() as conn:
            row = q.job_row(conn, job_id)
        return None if row is None else row.estimate_s

    def set_error(self, job_id: int, message: str) -> None:
        """The one-line reason the job failed (its runner reports it; the worker records the ending)."""
        with self.queue.write() as conn:
            q.set_error(conn, job_id, message)

    def job(self, ref: str | int) -> JobRecord:
        """Another job's record by name or id, with its metrics and artifacts."""
        try:
            job_id = self.queue.resolve(ref)
        except NotFound:
            raise NotFound(f"no job named '{ref}' in the queue") from None
        with self.queue.read() as conn:
            row = q.job_row(conn, job_id)
            metrics = q.job_metrics(conn, job_id)
            artifacts = q.job_artifacts(conn, job_id)
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
        with self.queue.read() as conn:
            rows = q.job_names_where(conn, kind=kind, status=status)
        return [name for name, tags in rows if tag is None or tag in (tags or [])]

"""What `sched status` reads, on a SQLAlchemy connection: the queries of `queries.py`.

`views.status_snapshot` asks one of two readers with the same methods: this one (any database) or
`sqlite_reads.SqliteReads` (a SQLite file read with the standard library, so `sched status` does not
import SQLAlchemy). tests/test_status.py checks that both give the same snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy import Connection, Row

from . import busy
from . import queries as q
from .engine import db_now


class SqlReads:
    """The status reads inside one read transaction of a JobQueue."""

    def __init__(self, conn: Connection):
        self.conn = conn

    def now(self) -> datetime:
        return db_now(self.conn)

    def is_drained(self) -> bool:
        return q.is_drained(self.conn)

    def status_counts(self) -> dict[str, int]:
        return q.status_counts(self.conn)

    def running_jobs(self) -> list[Row]:
        return q.running_jobs(self.conn)

    def latest_metric(self, job_ids: list[int]) -> dict[int, Row]:
        return q.latest_metric(self.conn, job_ids)

    def live_workers(self, heard_since: datetime) -> list[Row]:
        return q.live_workers(self.conn, heard_since)

    def queued_jobs(self, limit: int) -> list[Row]:
        return q.queued_jobs(self.conn, limit)

    def pending_dependencies(self, job_ids: list[int]) -> dict[int, list[str]]:
        return q.pending_dependencies(self.conn, job_ids)

    def recent_endings(self, limit: int, *, failures_only: bool = False) -> list[Row]:
        return q.recent_endings(self.conn, limit, failures_only=failures_only)

    def last_metric_values(self, job_ids: list[int], keys: Iterable[str]) -> dict[int, dict[str, float]]:
        return q.last_metric_values(self.conn, job_ids, keys)

    def busy_slots(self, since: datetime) -> list[str]:
        return q.busy_slots(self.conn, since)

    def used_seconds(self, begin: datetime, now: datetime, gpu_only: bool) -> float:
        return busy.used_seconds(self.conn, begin, now, gpu_only)

    def queued_counts_by_kind(self) -> dict[str, int]:
        return q.queued_counts_by_kind(self.conn)

    def typical_durations(self, kinds: list[str], since: datetime) -> dict[str, float]:
        return q.typical_durations(self.conn, kinds, since)

    def newest_jobs(self, limit: int) -> list[Row]:
        return q.newest_jobs(self.conn, limit)

    def has_deadlines(self) -> bool:
        from .schema import campaigns
        from sqlalchemy import select

        return self.conn.execute(select(campaigns.c.name).where(campaigns.c.deadline.is_not(None)).limit(1)).first() \
            is not None

    @contextmanager
    def forecast_connection(self):
        """The connection the deadline forecast reads (this one)."""
        yield self.conn

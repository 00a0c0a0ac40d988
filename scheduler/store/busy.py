"""Slot time used by jobs, summed per slot and BUCKET_S bucket as attempts end (`sched_busy`).

`sched status` shows the share of slot time used over the last hour and day. Summing the spans
of every job that ended in the window would read every one of them (100,000 a day on a busy
queue); the buckets make it at most 288 rows a slot for a day, plus the jobs that overlap the
window's first, partial bucket (read exactly), plus the running jobs.

Each ending of an attempt (succeed, fail, preempt, cancel, a lost lease) adds its span, split at
bucket edges, in the same transaction that records the ending. `rebuild` recomputes the table
from the jobs' rows (the migration that added it, and data loaded around the queue's API).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from ..resources import slot_gpus

if TYPE_CHECKING:
    from sqlalchemy import Connection

# SQLAlchemy and the tables are imported inside the functions that write or read through them:
# `sched status` on a SQLite file reads the buckets with the standard library (sqlite_reads.py)
# and shares `window_seconds` below without paying for SQLAlchemy.

BUCKET_S = 300
_EPOCH = datetime(2000, 1, 1)


def bucket_of(when: datetime) -> datetime:
    seconds = (when - _EPOCH).total_seconds()
    return _EPOCH + timedelta(seconds=seconds - seconds % BUCKET_S)


def split(start: datetime, end: datetime) -> list[tuple[datetime, float]]:
    """[(bucket start, seconds of [start, end) inside it)]."""
    out, cursor = [], start
    while cursor < end:
        bucket = bucket_of(cursor)
        stop = min(end, bucket + timedelta(seconds=BUCKET_S))
        out.append((bucket, (stop - cursor).total_seconds()))
        cursor = stop
    return out


def add_span(conn: Connection, slot: str | None, start: datetime | None, end: datetime) -> None:
    """Count [start, end) as used time of `slot` (nothing when the attempt never started); a
    multi-GPU job's slot (`gpu0+1`) counts on each of its GPUs."""
    if slot is None or start is None or end <= start:
        return
    for part in slot_gpus(slot):
        for bucket, seconds in split(start, end):
            _add(conn, part, bucket, seconds)


def _add(conn: Connection, slot: str, bucket: datetime, seconds: float) -> None:
    from sqlalchemy import insert, update

    from .schema import busy

    dialect = conn.dialect.name
    if dialect in ("sqlite", "postgresql"):
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as upsert
        else:
            from sqlalchemy.dialects.postgresql import insert as upsert
        statement = upsert(busy).values(slot=slot, bucket=bucket, seconds=seconds)
        conn.execute(statement.on_conflict_do_update(
            index_elements=[busy.c.slot, busy.c.bucket], set_={"seconds": busy.c.seconds + statement.excluded.seconds}))
        return
    if not conn.execute(update(busy).where(busy.c.slot == slot, busy.c.bucket == bucket)
                        .values(seconds=busy.c.seconds + seconds)).rowcount:
        conn.execute(insert(busy).values(slot=slot, bucket=bucket, seconds=seconds))


class BucketSource(Protocol):
    """What `window_seconds` reads: sums of the buckets and the spans of jobs (any store)."""

    def bucket_sum(self, gpu_only: bool, *, since: datetime | None = None, at: datetime | None = None) -> float:
        """Seconds in the buckets starting at or after `since`, or in the one bucket starting at `at`."""

    def spans_between(self, begin: datetime, end: datetime) -> list[tuple[datetime, datetime, str]]:
        """(started_at, finished_at, slot) of jobs on a slot that ended after `begin` and started before `end`."""


def used_seconds(conn: Connection, begin: datetime, now: datetime, gpu_only: bool) -> float:
    """Slot seconds used by attempts that ended in [begin, now] (running ones are the caller's)."""
    return window_seconds(_SqlBuckets(conn), begin, now, gpu_only)


def window_seconds(source: BucketSource, begin: datetime, now: datetime, gpu_only: bool) -> float:
    """`used_seconds` over any BucketSource (SQLAlchemy's, or a SQLite file read directly)."""
    first_full = bucket_of(begin) + (timedelta(seconds=BUCKET_S) if bucket_of(begin) < begin else timedelta(0))
    total = float(source.bucket_sum(gpu_only, since=first_full) or 0.0)
    if first_full > begin and (first_full - begin) * 100 <= now - begin:
        # A long window (a day): the partial first bucket, pro rata. Reading it exactly means every
        # job that ended in the window (100,000 on a busy day); this errs by at most 1%.
        share = (first_full - begin) / timedelta(seconds=BUCKET_S)
        return total + share * float(source.bucket_sum(gpu_only, at=bucket_of(begin)) or 0.0)
    if first_full > begin:  # a short window: the partial first bucket, exactly, from the jobs that overlap it
        for start, end, slot in source.spans_between(begin, first_full):
            if gpu_only and not slot.startswith("gpu"):
                continue
            total += max(0.0, (min(end, first_full) - max(start, begin)).total_seconds())
    return total


class _SqlBuckets:
    """BucketSource on a SQLAlchemy connection."""

    def __init__(self, conn: Connection):
        self.conn = conn

    def bucket_sum(self, gpu_only: bool, *, since: datetime | None = None, at: datetime | None = None) -> float:
        from sqlalchemy import func, select

        from .schema import busy

        query = select(func.coalesce(func.sum(busy.c.seconds), 0.0))
        query = query.where(busy.c.bucket >= since) if at is None else query.where(busy.c.bucket == at)
        if gpu_only:
            query = query.where(busy.c.slot.like("gpu%"))
        return self.conn.execute(query).scalar()

    def spans_between(self, begin: datetime, end: datetime) -> list[tuple[datetime, datetime, str]]:
        from sqlalchemy import select

        from .schema import jobs

        return self.conn.execute(select(jobs.c.started_at, jobs.c.finished_at, jobs.c.slot).where(
            jobs.c.finished_at > begin, jobs.c.started_at < end, jobs.c.slot.is_not(None))).all()


def rebuild(conn: Connection, since: datetime | None = None) -> None:
    """Recompute the buckets from the jobs' rows (each job's last attempt)."""
    from sqlalchemy import delete, insert, select

    from .schema import busy, jobs

    conn.execute(delete(busy))
    query = select(jobs.c.slot, jobs.c.started_at, jobs.c.finished_at).where(
        jobs.c.started_at.is_not(None), jobs.c.finished_at.is_not(None), jobs.c.slot.is_not(None))
    if since is not None:
        query = query.where(jobs.c.finished_at > since)
    sums: dict[tuple[str, datetime], float] = {}
    for slot, start, end in conn.execute(query):
        for part in slot_gpus(slot):
            for bucket, seconds in split(start, end):
                sums[(part, bucket)] = sums.get((part, bucket), 0.0) + seconds
    rows = [{"slot": slot, "bucket": bucket, "seconds": seconds} for (slot, bucket), seconds in sums.items()]
    for start in range(0, len(rows), 5000):
        conn.execute(insert(busy), rows[start:start + 5000])

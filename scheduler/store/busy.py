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

from sqlalchemy import Connection, delete, func, insert, select, update

from ..resources import slot_gpus
from .schema import busy, jobs

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


def used_seconds(conn: Connection, begin: datetime, now: datetime, gpu_only: bool) -> float:
    """Slot seconds used by attempts that ended in [begin, now] (running ones are the caller's)."""
    first_full = bucket_of(begin) + (timedelta(seconds=BUCKET_S) if bucket_of(begin) < begin else timedelta(0))
    query = select(func.coalesce(func.sum(busy.c.seconds), 0.0)).where(busy.c.bucket >= first_full)
    if gpu_only:
        query = query.where(busy.c.slot.like("gpu%"))
    total = float(conn.execute(query).scalar() or 0.0)
    if first_full > begin and (first_full - begin) * 100 <= now - begin:
        # A long window (a day): the partial first bucket, pro rata. Reading it exactly means every
        # job that ended in the window (100,000 on a busy day); this errs by at most 1%.
        share = (first_full - begin) / timedelta(seconds=BUCKET_S)
        partial = select(func.coalesce(func.sum(busy.c.seconds), 0.0)).where(busy.c.bucket == bucket_of(begin))
        if gpu_only:
            partial = partial.where(busy.c.slot.like("gpu%"))
        return total + share * float(conn.execute(partial).scalar() or 0.0)
    if first_full > begin:  # a short window: the partial first bucket, exactly, from the jobs that overlap it
        spans = select(jobs.c.started_at, jobs.c.finished_at, jobs.c.slot).where(
            jobs.c.finished_at > begin, jobs.c.started_at < first_full, jobs.c.slot.is_not(None))
        for start, end, slot in conn.execute(spans):
            if gpu_only and not slot.startswith("gpu"):
                continue
            total += max(0.0, (min(end, first_full) - max(start, begin)).total_seconds())
    return total


def rebuild(conn: Connection, since: datetime | None = None) -> None:
    """Recompute the buckets from the jobs' rows (each job's last attempt)."""
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

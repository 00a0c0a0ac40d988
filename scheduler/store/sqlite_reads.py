"""`sched status` on a SQLite file, read with the standard library's sqlite3.

Importing SQLAlchemy takes about 0.2 s on a 2-core machine, as long as everything else `sched status`
does on an empty queue. So a SQLite file at the newest schema revision is read here, with the same
statements SQLAlchemy compiles from `queries.py` for SQLite (plain SQL: the status reads are simple
SELECTs) and the values converted as SQLAlchemy's column types convert them (DateTime, JSON,
Boolean). Anything else (PostgreSQL, a file to upgrade, a file this cannot open) goes through
`JobQueue`, which upgrades or refuses as it always has.

`reads.SqlReads` is the same interface on SQLAlchemy; tests/test_status.py checks that both readers
give the same snapshot of the same database, so a change to a status query in `queries.py` that is
not made here fails there.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

from . import busy
from .revision import VERSION_TABLE, head
from .states import FAILURES, QUEUED, RUNNING, SUCCEEDED, WorkerState

BUSY_TIMEOUT_S = 30.0  # as engine.SQLITE_BUSY_TIMEOUT_MS
_DATETIME = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores a DateTime in SQLite

# Columns converted as their SQLAlchemy type converts them (scheduler/store/schema.py); the names
# are unique across the tables read here (sched_jobs, sched_workers, sched_metrics).
_DATETIMES = ("created_at", "started_at", "finished_at", "lease_until", "not_before", "heartbeat", "finish_by")
_JSON = ("params", "tags", "hooks", "slots", "gpu_stats", "reservation")
_BOOLEANS = ("preemptible", "cancel_requested", "gpu_memory_auto", "exclusive", "urgent", "deliverable")
_CONVERT = {**dict.fromkeys(_DATETIMES, datetime.fromisoformat), **dict.fromkeys(_JSON, json.loads),
            **dict.fromkeys(_BOOLEANS, bool)}


def _record(cursor: sqlite3.Cursor, row: tuple) -> SimpleNamespace:
    """A row with attribute access (like SQLAlchemy's Row), its values converted."""
    values = {}
    for (name, *_), value in zip(cursor.description, row):
        convert = _CONVERT.get(name)
        values[name] = convert(value) if convert is not None and value is not None else value
    return SimpleNamespace(**values)


def _stamp(when: datetime) -> str:
    return when.strftime(_DATETIME)


def _marks(values: list) -> str:
    return ", ".join("?" * len(values))


class SqliteStatus:
    """A queue's SQLite file, open for `sched status` (`open` returns None when it cannot serve)."""

    def __init__(self, conn: sqlite3.Connection, path: Path):
        self.conn = conn
        self.path = path

    @classmethod
    def open(cls, path: Path) -> SqliteStatus | None:
        """The file opened for reading, or None: not there, not a sched database at the newest
        revision, or any SQLite error (the caller then opens it through JobQueue, which upgrades,
        refuses or reports as it always has)."""
        try:
            uri = Path(path).expanduser().absolute().as_uri() + "?mode=rw"  # never creates the file
            conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except (sqlite3.Error, ValueError):
            return None
        try:
            found = conn.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall()
        except sqlite3.Error:
            found = None
        if found != [(head(),)]:
            conn.close()
            return None
        conn.row_factory = _record
        return cls(conn, Path(path))

    @contextmanager
    def status_reads(self) -> Iterator[SqliteReads]:
        """One read transaction (deferred: in WAL mode it never waits for a writer)."""
        self.conn.execute("BEGIN")
        try:
            yield SqliteReads(self.conn, self.path)
        finally:
            self.conn.execute("COMMIT")

    def dispose(self) -> None:
        self.conn.close()


_JOBS = "SELECT * FROM sched_jobs"


class SqliteReads:
    """The reads of `reads.SqlReads`, as SQLAlchemy runs them on SQLite (see the module's docstring)."""

    def __init__(self, conn: sqlite3.Connection, path: Path):
        self.conn = conn
        self.path = path

    def has_deadlines(self) -> bool:
        return bool(self._pairs("SELECT 1 FROM sched_campaigns WHERE deadline IS NOT NULL LIMIT 1"))

    @contextmanager
    def forecast_connection(self):
        """A SQLAlchemy connection to the same file, for the deadline forecast (only when a campaign
        has a deadline: the forecast's queries are SQLAlchemy's)."""
        from .engine import make_engine

        engine = make_engine(f"sqlite:///{self.path}")
        try:
            with engine.connect() as conn:
                yield conn
        finally:
            engine.dispose()

    def _all(self, sql: str, *args) -> list:
        return self.conn.execute(sql, args).fetchall()

    def _pairs(self, sql: str, *args) -> list[tuple]:
        """Rows as plain tuples (aggregates and lookups, nothing to convert)."""
        cursor = self.conn.cursor()
        cursor.row_factory = None
        return cursor.execute(sql, args).fetchall()

    def now(self) -> datetime:
        return datetime.fromisoformat(self._pairs("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")[0][0])

    def is_drained(self) -> bool:
        found = self._pairs('SELECT value FROM sched_meta WHERE "key" = ?', "drained")
        return bool(found) and found[0][0] == "1"

    def status_counts(self) -> dict[str, int]:
        return dict(self._pairs("SELECT status, count(*) FROM sched_jobs GROUP BY status"))

    def running_jobs(self) -> list:
        return self._all(f"{_JOBS} WHERE status = ? ORDER BY started_at", RUNNING)

    def latest_metric(self, job_ids: list[int]) -> dict[int, SimpleNamespace]:
        if not job_ids:
            return {}
        rows = self._all('SELECT job_id, "key", value, step, split FROM sched_metrics WHERE id IN '
                         f"(SELECT max(id) FROM sched_metrics WHERE job_id IN ({_marks(job_ids)}) GROUP BY job_id)",
                         *job_ids)
        return {row.job_id: row for row in rows}

    def live_workers(self, heard_since: datetime) -> list:
        return self._all("SELECT * FROM sched_workers WHERE state != ? AND heartbeat > ? ORDER BY id",
                         WorkerState.STOPPED.value, _stamp(heard_since))

    def queued_jobs(self, limit: int) -> list:
        return self._all(f"{_JOBS} WHERE status = ? ORDER BY urgent DESC, priority DESC, id LIMIT ?", QUEUED, limit)

    def pending_dependencies(self, job_ids: list[int]) -> dict[int, list[str]]:
        if not job_ids:
            return {}
        rows = self._pairs("SELECT sched_job_deps.job_id, dep.name FROM sched_job_deps "
                           "JOIN sched_jobs AS dep ON dep.id = sched_job_deps.depends_on "
                           f"WHERE sched_job_deps.job_id IN ({_marks(job_ids)}) AND dep.status != ?",
                           *job_ids, SUCCEEDED)
        pending: dict[int, list[str]] = {}
        for job_id, name in rows:
            pending.setdefault(job_id, []).append(name)
        return pending

    def recent_endings(self, limit: int, *, failures_only: bool = False) -> list:
        if failures_only:  # not what the user cancelled
            return self._all(f"{_JOBS} WHERE finished_at IS NOT NULL AND status IN ({_marks(FAILURES)}) "
                             "ORDER BY finished_at DESC LIMIT ?", *FAILURES, limit)
        return self._all(f"{_JOBS} WHERE finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT ?", limit)

    def last_metric_values(self, job_ids: list[int], keys: Iterable[str]) -> dict[int, dict[str, float]]:
        keys = list(keys)
        if not job_ids or not keys:
            return {}
        rows = self._pairs('SELECT job_id, "key", value FROM sched_metrics WHERE id IN '
                           f"(SELECT max(id) FROM sched_metrics WHERE job_id IN ({_marks(job_ids)}) "
                           f'AND "key" IN ({_marks(keys)}) GROUP BY job_id, "key")', *job_ids, *keys)
        out: dict[int, dict[str, float]] = {}
        for job_id, key, value in rows:
            out.setdefault(job_id, {})[key] = value
        return out

    def busy_slots(self, since: datetime) -> list[str]:
        rows = self._pairs("SELECT DISTINCT slot FROM sched_busy WHERE bucket >= ?", _stamp(busy.bucket_of(since)))
        return [slot for (slot,) in rows]

    def used_seconds(self, begin: datetime, now: datetime, gpu_only: bool) -> float:
        return busy.window_seconds(self, begin, now, gpu_only)

    def bucket_sum(self, gpu_only: bool, *, since: datetime | None = None, at: datetime | None = None) -> float:
        """busy.BucketSource: seconds in the buckets from `since` on, or in the bucket at `at`."""
        where = "bucket >= ?" if at is None else "bucket = ?"
        gpus = " AND slot LIKE 'gpu%'" if gpu_only else ""
        sql = f"SELECT coalesce(sum(seconds), 0.0) FROM sched_busy WHERE {where}{gpus}"
        return self._pairs(sql, _stamp(since if at is None else at))[0][0]

    def spans_between(self, begin: datetime, end: datetime) -> list[tuple[datetime, datetime, str]]:
        """busy.BucketSource: (started_at, finished_at, slot) of jobs on a slot overlapping [begin, end)."""
        rows = self._all("SELECT started_at, finished_at, slot FROM sched_jobs "
                         "WHERE finished_at > ? AND started_at < ? AND slot IS NOT NULL", _stamp(begin), _stamp(end))
        return [(row.started_at, row.finished_at, row.slot) for row in rows]

    def queued_counts_by_kind(self) -> dict[str, int]:
        return dict(self._pairs("SELECT kind, count(*) FROM sched_jobs WHERE status = ? GROUP BY kind", QUEUED))

    def typical_durations(self, kinds: list[str], since: datetime, per_kind: int = 50) -> dict[str, float]:
        """{kind: median seconds of its latest (at most `per_kind`) successes since `since`}."""
        out = {}
        for kind in kinds:
            rows = self._all("SELECT started_at, finished_at FROM sched_jobs WHERE kind = ? AND status = ? "
                             "AND finished_at > ? AND started_at IS NOT NULL AND reused_from IS NULL "
                             "ORDER BY finished_at DESC LIMIT ?", kind, SUCCEEDED, _stamp(since), per_kind)
            spans = sorted((row.finished_at - row.started_at).total_seconds() for row in rows)
            if spans:
                out[kind] = spans[len(spans) // 2]
        return out

    def newest_jobs(self, limit: int) -> list:
        return self._all(f"{_JOBS} ORDER BY id DESC LIMIT ?", limit)[::-1]

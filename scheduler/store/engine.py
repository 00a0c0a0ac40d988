"""Database engines: any SQLAlchemy URL, with SQLite tuned for many writers.

SQLite: WAL mode lets readers run beside one writer; `BEGIN IMMEDIATE` takes the write lock at the
start of every transaction, so two claimers never both read and then both fail to upgrade their
lock (plain `BEGIN` gave thousands of "database is locked" errors with 8 processes even with a 5 s
busy timeout; `BEGIN IMMEDIATE` gave none). PostgreSQL needs nothing special here.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from ..errors import SchedError
from .location import resolve_url

READ_ONLY = "sched_read_only"  # execution option: a transaction that only reads
SQLITE_BUSY_TIMEOUT_MS = 30_000
# A server that went away must not hang a worker's step for the kernel's TCP timeout (15 min and
# more): connecting gives up after 5 s, an unacknowledged write after 5 s (libpq's
# tcp_user_timeout), and an idle connection to a dead peer is found by keepalives within ~10 s.
POSTGRES_TIMEOUTS = {"connect_timeout": 5, "tcp_user_timeout": 5000, "keepalives": 1, "keepalives_idle": 5,
                     "keepalives_interval": 2, "keepalives_count": 2}
SUPPORTED_DRIVERS = ("sqlite", "sqlite+pysqlite", "postgresql+psycopg")  # postgresql:// becomes psycopg


def parse_url(url: str) -> URL:
    """`url` parsed, with the driver we ship for PostgreSQL (psycopg 3): a bare postgresql://
    would ask SQLAlchemy (and Optuna, which shares the database) for psycopg2."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise SchedError(f"not a database URL: {url!r} ({exc})") from None
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername not in SUPPORTED_DRIVERS:
        # Any other database or driver would fail later with an import error or a missing
        # plugin, and sched's queries and migrations are tested on these two only.
        raise SchedError(f"unsupported database URL {shown_url(parsed)}: sched supports "
                         "sqlite:///PATH and postgresql://USER@HOST/DB")
    return parsed


def normalize_url(url: str) -> str:
    """`parse_url` as a string, password kept (for engines of other libraries on the same database)."""
    return parse_url(url).render_as_string(hide_password=False)


def shown_url(url: str | URL) -> str:
    """A URL fit to print: the password hidden."""
    parsed = url if isinstance(url, URL) else make_url(url)
    return parsed.render_as_string(hide_password=True)


def without_password(url: str) -> tuple[str, str | None]:
    """(`url` with its password removed, the password or None)."""
    parsed = make_url(url)
    if parsed.password is None:
        return url, None
    # URL.set(password=None) keeps the password ("no change"); the tuple's _replace clears it.
    return parsed._replace(password=None).render_as_string(hide_password=False), str(parsed.password)


def with_password(url: str, password: str) -> str:
    return make_url(url).set(password=password).render_as_string(hide_password=False)


def sqlite_path(url: str | URL) -> Path | None:
    """The file of a SQLite URL (None for other databases and in-memory SQLite)."""
    parsed = url if isinstance(url, URL) else make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database).expanduser()


def immediate_transactions(engine: Engine, *, read_only_option: str | None = None) -> None:
    """Make every transaction of a SQLite engine BEGIN IMMEDIATE (readers marked with
    `read_only_option` begin DEFERRED: in WAL mode they never wait for a writer).

    A deferred transaction that reads, then writes after another connection wrote in between,
    fails at once with "database is locked" whatever the busy timeout; taking the write lock up
    front makes it wait for its turn instead. Optuna's engine on the queue's file gets this too.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # Hand transaction control to the begin event below instead of pysqlite's own BEGIN.
        dbapi_conn.isolation_level = None

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        if read_only_option and conn.get_execution_options().get(read_only_option):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def _tune_sqlite(engine: Engine) -> None:
    immediate_transactions(engine, read_only_option=READ_ONLY)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record):
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # NORMAL is durable across application crashes in WAL mode; only an OS crash can drop
        # the last commits, and it saves an fsync per job state change.
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()


def make_engine(url: str | None = None) -> Engine:
    """An engine for `url` (see `resolve_url`); SQLite files get their parent folder created."""
    parsed = parse_url(resolve_url(url))
    path = sqlite_path(parsed)
    if parsed.get_backend_name() == "sqlite":
        if path is not None:
            path.resolve().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        _tune_sqlite(engine)
        return engine
    return create_engine(parsed, pool_pre_ping=True, connect_args=dict(POSTGRES_TIMEOUTS))


_SQLITE_NOW = text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")
_POSTGRES_NOW = text("SELECT timezone('utc', clock_timestamp())")


class DbClock:
    """The database's clock without a query per transaction: read from the database every
    CALIBRATE_S seconds and advanced in between by this process's monotonic clock (which no NTP
    step moves). Leases stay judged by the database's time on every host, to within the drift of
    a few seconds of monotonic time (microseconds), and a claim or a finish saves a round trip."""

    CALIBRATE_S = 5.0

    def __init__(self):
        self._base: datetime | None = None
        self._at = 0.0

    def stale(self) -> bool:
        return self._base is None or time.monotonic() - self._at > self.CALIBRATE_S

    def now(self, conn: Connection | None) -> datetime:
        """The database's time now; `conn` is read only when the clock is stale (may be None otherwise)."""
        if self.stale():
            self._base, self._at = db_now(conn), time.monotonic()
            return self._base
        return self._base + timedelta(seconds=time.monotonic() - self._at)


def db_now(conn: Connection) -> datetime:
    """The database's clock as naive UTC, so leases from many hosts are judged by one clock."""
    dialect = conn.dialect.name
    if dialect == "sqlite":
        return datetime.fromisoformat(conn.execute(_SQLITE_NOW).scalar_one())
    if dialect == "postgresql":
        return conn.execute(_POSTGRES_NOW).scalar_one()
    return datetime.now(timezone.utc).replace(tzinfo=None)

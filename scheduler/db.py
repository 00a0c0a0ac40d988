"""Database engine set-up: any SQLAlchemy URL, with SQLite tuned for many writers.

SQLite: WAL mode lets readers run beside one writer; `BEGIN IMMEDIATE` takes the write lock at the
start of every transaction, so two claimers never both read and then both fail to upgrade their
lock (plain `BEGIN` gave thousands of "database is locked" errors with 8 processes even with a 5 s
busy timeout; `BEGIN IMMEDIATE` gave none). PostgreSQL needs nothing special here.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session

from .errors import SchedError
from .models import SCHEMA_VERSION, Base, Meta

DEFAULT_URL = "sqlite:///experiments.db"
READ_ONLY = "sched_read_only"  # execution option: a transaction that only reads
SQLITE_BUSY_TIMEOUT_MS = 30_000


class SchemaVersionError(SchedError):
    """The database was written by a sched with another schema version."""


def resolve_url(url: str | None = None) -> str:
    """The queue's URL: the argument, else $SCHED_DB, else experiments.db in the current folder."""
    return url or os.environ.get("SCHED_DB") or DEFAULT_URL


def _tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # Hand transaction control to SQLAlchemy's events below instead of pysqlite's own BEGIN.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # NORMAL is durable across application crashes in WAL mode; only an OS crash can drop
        # the last commits, and it saves an fsync per job state change.
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # Readers (status, show) begin DEFERRED: in WAL mode they never wait for a writer.
        if conn.get_execution_options().get(READ_ONLY):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str | None = None) -> Engine:
    """An engine for `url`; SQLite files get their parent folder created."""
    url = resolve_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise SchedError(f"not a database URL: {url!r} ({exc})") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        _tune_sqlite(engine)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        # psycopg (v3) is the driver we ship; plain postgresql:// would ask for psycopg2.
        url = parsed.set(drivername="postgresql+psycopg")
    return create_engine(url, pool_pre_ping=True)


_SQLITE_NOW = text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")
_POSTGRES_NOW = text("SELECT timezone('utc', clock_timestamp())")


def db_now(db: Session | Connection) -> datetime:
    """The database's clock as naive UTC, so leases from many hosts are judged by one clock."""
    dialect = db.dialect.name if isinstance(db, Connection) else db.get_bind().dialect.name
    if dialect == "sqlite":
        return datetime.fromisoformat(db.execute(_SQLITE_NOW).scalar_one())
    if dialect == "postgresql":
        return db.execute(_POSTGRES_NOW).scalar_one()
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _lock_for_init(conn) -> None:
    # Several workers may open a new PostgreSQL database at once; CREATE TABLE races otherwise.
    # (SQLite is already serialised by BEGIN IMMEDIATE.)
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(74210815)"))


def init_schema(engine: Engine) -> None:
    """Create the tables if absent; refuse a database written by another schema version."""
    try:
        with engine.begin() as conn:
            _lock_for_init(conn)
            if inspect(conn).has_table(Meta.__tablename__):
                found = conn.execute(select(Meta.value).where(Meta.key == "schema_version")).scalar()
                if found is not None and int(found) != SCHEMA_VERSION:
                    raise SchemaVersionError(
                        f"database {engine.url.render_as_string(hide_password=True)} has schema "
                        f"version {found}, this sched expects {SCHEMA_VERSION}; use a sched of the "
                        "matching version or a new database (nothing was changed)"
                    )
                if found is not None:
                    return
            Base.metadata.create_all(conn)
            # APScheduler's cron table too, under the same lock: workers starting together on a
            # new PostgreSQL database would otherwise race to create it.
            from .cron import make_jobstore_table

            make_jobstore_table().create(conn, checkfirst=True)
            conn.execute(Meta.__table__.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
    except OperationalError as exc:
        raise SchedError(f"cannot open database {engine.url.render_as_string(hide_password=True)}: "
                         f"{exc.orig}") from None


def open_database(url: str | None = None) -> Engine:
    """Engine for the queue at `url`, schema created or checked."""
    engine = make_engine(url)
    init_schema(engine)
    return engine

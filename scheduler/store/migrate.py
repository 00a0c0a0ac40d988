"""Opening a queue database: create it, upgrade it, or refuse it, never lose it.

- A new database is built by running every migration (`migrations/versions`, Alembic).
- A database at an older revision is upgraded on open, after a backup copy for SQLite files
  (`experiments.db.backup-<revision>`); `sched db upgrade` does the same on request.
- A database from sched 0.1 (tables, `sched_meta.schema_version` = 1, no Alembic version) is
  stamped at revision 0001 and upgraded from there.
- A database from a newer sched (a revision this code does not know), or with sched's table names
  but no version, is refused with a message saying so; nothing is changed.

The common case costs one SELECT: the version row is read and compared with the newest revision,
found from the file names in `migrations/versions` (Alembic itself is imported only to migrate).
Optuna's tables in the same database keep Optuna's own migrations and version table.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, Engine, inspect, select, text
from sqlalchemy.exc import DatabaseError, OperationalError, ProgrammingError

from ..errors import DatabaseUnreachable, SchedError
from .engine import make_engine, shown_url, sqlite_path
from .revision import MIGRATIONS, VERSION_TABLE, head, revisions
from .schema import SCHED_TABLES, meta

log = logging.getLogger("sched.store")

LEGACY_BASE = "0001"  # what a sched 0.1 database (schema_version 1) holds


class SchemaVersionError(SchedError):
    """The database was written by a sched with a schema this code cannot use."""


@dataclass
class Upgrade:
    """What opening a database did: from which revision to which, and where the backup went."""

    before: str | None  # None: a new database
    after: str
    backup: Path | None = None

    @property
    def changed(self) -> bool:
        return self.before != self.after


def _current_revision(conn: Connection) -> str | None:
    return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def _fast_revision(engine: Engine) -> str | None:
    """The stored revision, or None when there is no version table (a new or legacy database)."""
    try:
        with engine.connect() as conn:
            return _current_revision(conn)
    except (OperationalError, ProgrammingError):
        return None


def _lock(conn: Connection) -> None:
    # Several workers may open a new or old PostgreSQL database at once; DDL races otherwise.
    # (SQLite is already serialised by BEGIN IMMEDIATE.)
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(74210815)"))


def _where(engine: Engine) -> str:
    return f"database {shown_url(engine.url)}"


def _state(conn: Connection, engine: Engine) -> str | None:
    """The revision to start from: head-or-older revision, LEGACY_BASE, None (empty); raises for
    anything this code must not touch."""
    tables = set(inspect(conn).get_table_names())
    if VERSION_TABLE in tables:
        revision = _current_revision(conn)
        if revision not in revisions():
            raise SchemaVersionError(
                f"{_where(engine)} has schema revision {revision!r}, newer than this sched knows "
                f"(newest here: {head()}); upgrade sched (pip install -U) or use another database "
                "(nothing was changed)")
        return revision
    ours = tables & SCHED_TABLES
    if meta.name in tables:
        found = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
        if found == "1":
            return LEGACY_BASE
        if found is None:
            raise SchemaVersionError(
                f"{_where(engine)} has sched's tables but no schema version: it was not made by "
                "sched, or its version row was deleted; refusing to change it (use a new database)")
        raise SchemaVersionError(
            f"{_where(engine)} has schema version {found}, which this sched cannot read; "
            "use the sched that wrote it or a new database (nothing was changed)")
    if ours:
        raise SchemaVersionError(
            f"{_where(engine)} has table(s) named like sched's ({', '.join(sorted(ours))}) but no "
            "schema version: not a sched database; refusing to change it (use a new database)")
    return None


def backup_sqlite(engine: Engine, revision: str) -> Path | None:
    """Copy a SQLite database (WAL included, consistent) beside it before a migration."""
    path = sqlite_path(engine.url)
    if path is None or not path.exists():
        return None
    target = path.with_name(f"{path.name}.backup-{revision}")
    number = 1
    while target.exists():
        number += 1
        target = path.with_name(f"{path.name}.backup-{revision}.{number}")
    source = sqlite3.connect(path)
    try:
        copy = sqlite3.connect(target)
        try:
            source.backup(copy)
        finally:
            copy.close()
    finally:
        source.close()
    return target


def _alembic_config(conn: Connection):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    return config


def _migrate(conn: Connection, start: str | None) -> None:
    from alembic import command

    config = _alembic_config(conn)
    if start == LEGACY_BASE and _current_revision_or_none(conn) is None:
        command.stamp(config, LEGACY_BASE)
    command.upgrade(config, "head")


def _current_revision_or_none(conn: Connection) -> str | None:
    if not inspect(conn).has_table(VERSION_TABLE):
        return None
    return _current_revision(conn)


def ensure_schema(engine: Engine, *, upgrade: bool = True) -> Upgrade:
    """Make the database at `engine` hold the newest schema (see the module's docstring).

    `upgrade=False` only checks: an older database raises instead of being upgraded.
    """
    newest = head()
    if _fast_revision(engine) == newest:
        return Upgrade(newest, newest)
    try:
        with engine.connect() as probe:
            start = _state(probe, engine)
        if start == newest:
            return Upgrade(newest, newest)
        if start is not None and not upgrade:
            raise SchemaVersionError(f"{_where(engine)} is at schema revision {start}; this sched needs "
                                     f"{newest}: run `sched db upgrade`")
        backup = backup_sqlite(engine, start) if start is not None else None
        with engine.begin() as conn:
            _lock(conn)
            start = _state(conn, engine)  # another process may have migrated meanwhile
            if start != newest:
                _migrate(conn, start)
        if start is not None and start != newest:
            log.warning("upgraded %s from schema revision %s to %s%s", _where(engine), start, newest,
                        f" (backup: {backup})" if backup else "")
        return Upgrade(start, newest, backup)
    except OperationalError as exc:
        raise DatabaseUnreachable(f"cannot open {_where(engine)}: {exc.orig}") from None
    except ProgrammingError as exc:
        raise SchedError(f"cannot open {_where(engine)}: {exc.orig}") from None
    except DatabaseError as exc:
        raise SchedError(f"cannot open {_where(engine)}: {exc.orig}") from None


def describe(engine: Engine) -> str:
    """The database's schema revision in words (changes nothing)."""
    newest = head()
    try:
        with engine.connect() as conn:
            start = _state(conn, engine)
    except SchemaVersionError as exc:
        return str(exc)
    if start is None:
        return f"no sched tables yet (a new database; this sched creates revision {newest})"
    if start == newest:
        return f"schema revision {start} (the newest this sched knows)"
    legacy = " (sched 0.1)" if start == LEGACY_BASE and _fast_revision(engine) is None else ""
    return f"schema revision {start}{legacy}; this sched upgrades it to {newest} (sched db upgrade)"


def open_database(url: str | None = None, *, upgrade: bool = True) -> Engine:
    """An engine for the queue at `url`, its schema created, upgraded or checked."""
    engine = make_engine(url)
    try:
        ensure_schema(engine, upgrade=upgrade)
    except BaseException:
        engine.dispose()
        raise
    return engine

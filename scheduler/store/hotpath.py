"""The queue's hot path (claim, succeed) on the database driver's own connection.

A claim and a finish are a handful of short statements; through SQLAlchemy's execution machinery
(events, parameter processing, result objects) each cost more Python time than SQLite takes to
run it. Here the same statements (queries.CLAIM_NEXT, SET_RUN_PATHS, SUCCEED: compiled once for
the dialect) run on the DBAPI connection directly: one transaction per claim (BEGIN IMMEDIATE on
SQLite; on PostgreSQL the candidate is locked FOR UPDATE SKIP LOCKED inside the UPDATE) and one
per finish. SQLite and PostgreSQL only; other databases use `jobqueue`'s SQLAlchemy path.

Errors come out as SQLAlchemy's OperationalError, as everywhere else, so a worker's handling of
an unreachable or locked database does not change.
"""

from __future__ import annotations

import itertools
import json
import threading
from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from ..resources import slot_gpus
from . import busy, schema
from . import queries as q

SUPPORTED = ("sqlite", "postgresql")
_DATETIME = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores a DateTime in SQLite


class _Prepared:
    """A Core statement compiled once for a dialect, with its fixed bind values."""

    def __init__(self, statement, engine: Engine):
        compiled = statement.compile(dialect=engine.dialect)
        self.sql = str(compiled)
        self.defaults = dict(compiled.params)
        self.order = compiled.positiontup
        self.sqlite = engine.dialect.name == "sqlite"

    def args(self, binds: dict):
        values = {**self.defaults, **binds}
        if self.sqlite:
            return tuple(v.strftime(_DATETIME) if isinstance(v, datetime) else v
                         for v in (values[k] for k in self.order))
        return values


def _busy_upsert(dialect: str):
    """Add seconds to a slot's bucket (busy.py), as one INSERT ... ON CONFLICT DO UPDATE."""
    from sqlalchemy import bindparam

    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as upsert
    else:
        from sqlalchemy.dialects.postgresql import insert as upsert
    statement = upsert(schema.busy).values(slot=bindparam("b_slot"), bucket=bindparam("b_bucket"),
                                           seconds=bindparam("b_seconds"))
    return statement.on_conflict_do_update(index_elements=[schema.busy.c.slot, schema.busy.c.bucket],
                                           set_={"seconds": schema.busy.c.seconds + statement.excluded.seconds})


class HotPath:
    """claim() and succeed() for one JobQueue; a connection per thread, kept between calls."""

    def __init__(self, engine: Engine, clock):
        self.engine, self.clock = engine, clock
        self.sqlite = engine.dialect.name == "sqlite"
        self.claim_next = _Prepared(q.CLAIM_NEXT, engine)
        self.set_paths = _Prepared(q.SET_RUN_PATHS, engine)
        self.succeed_sql = _Prepared(q.SUCCEED, engine)
        self.add_busy = _Prepared(_busy_upsert(engine.dialect.name), engine)
        self.local = threading.local()
        self.dbapi_error = engine.dialect.loaded_dbapi.Error

    @staticmethod
    def usable(engine: Engine) -> bool:
        return engine.dialect.name in SUPPORTED

    # ---- connection and transaction --------------------------------------------------------

    def _connection(self):
        raw = getattr(self.local, "raw", None)
        if raw is None:
            raw = self.local.raw = self.engine.raw_connection()
        return raw

    def _now(self) -> datetime:
        if self.clock.stale():
            with self.engine.connect() as conn:
                return self.clock.now(conn)
        return self.clock.now(None)

    def _run(self, work):
        raw = self._connection()
        cursor = raw.cursor()
        try:
            if self.sqlite:
                cursor.execute("BEGIN IMMEDIATE")  # take the write lock now (see engine.py)
            result = work(cursor)
            raw.commit() if not self.sqlite else cursor.execute("COMMIT")
            return result
        except self.dbapi_error as exc:
            self._discard(raw)
            raise OperationalError("(hot path)", {}, exc) from exc
        except BaseException:
            self._discard(raw)
            raise
        finally:
            try:
                cursor.close()
            except self.dbapi_error:
                pass

    def _discard(self, raw) -> None:
        """After an error the connection's state is unknown: roll back, and hand it back broken."""
        try:
            raw.rollback() if not self.sqlite else raw.execute("ROLLBACK")
        except Exception:  # noqa: BLE001 - already gone
            pass
        try:
            raw.invalidate()
        except Exception:  # noqa: BLE001
            pass
        self.local.raw = None

    def close(self) -> None:
        raw = getattr(self.local, "raw", None)
        if raw is not None:
            raw.close()
            self.local.raw = None

    # ---- the operations --------------------------------------------------------------------

    def claim(self, binds: dict, paths) -> dict | None:
        """The claimed row as a dict, or None. `paths(id, name) -> (output_dir, log_path) | None`."""
        def work(cursor):
            cursor.execute(self.claim_next.sql, self.claim_next.args(binds))
            row = cursor.fetchone()
            if row is None:
                return None
            found = dict(zip([c[0] for c in cursor.description], row))
            where = paths(found["id"], found["name"])
            if where is not None:
                cursor.execute(self.set_paths.sql, self.set_paths.args(
                    {"b_id": found["id"], "b_output_dir": where[0], "b_log_path": where[1]}))
                found["output_dir"], found["log_path"] = where
            return found

        binds = {**binds, "b_now": self._now()}
        binds["b_lease"] = binds["b_now"] + binds.pop("lease")
        found = self._run(work)
        if found is not None and self.sqlite:  # pysqlite returns JSON as text and booleans as 0/1
            found["params"] = json.loads(found["params"]) if isinstance(found["params"], str) else found["params"]
            found["hooks"] = json.loads(found["hooks"]) if isinstance(found["hooks"], str) else found["hooks"]
            found["preemptible"] = bool(found["preemptible"])
        return found

    def succeed(self, job_id: int, worker_id: int, exit_code: int) -> bool:
        def work(cursor):
            cursor.execute(self.succeed_sql.sql, self.succeed_sql.args(
                {"b_id": job_id, "b_worker": worker_id, "b_now": now, "b_exit": exit_code}))
            row = cursor.fetchone()
            if row is None:
                return False
            started, slot = row
            if isinstance(started, str):
                started = datetime.fromisoformat(started)
            if slot is not None and started is not None:
                for part, (bucket, seconds) in itertools.product(slot_gpus(slot), busy.split(started, now)):
                    cursor.execute(self.add_busy.sql, self.add_busy.args(  # the time goes to sched_busy
                        {"b_slot": part, "b_bucket": bucket, "b_seconds": seconds}))
            if not self.sqlite:
                cursor.execute(f"NOTIFY {q.NOTIFY_CHANNEL}")  # its dependents may run now
            return True

        now = self._now()
        return self._run(work)


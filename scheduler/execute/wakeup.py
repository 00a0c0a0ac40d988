"""What an idle worker sleeps on: its runners' report pipes (a job ended, a spare is ready) and the
queue's database changing (a job submitted, a dependency succeeded elsewhere), up to a timeout
(the next heartbeat). No fixed polling interval sits between a job's end and the next claim.

- SQLite: `PRAGMA data_version` on a connection of our own changes whenever another connection
  commits; it is read every CHECK_S while the worker waits (a few microseconds each).
- PostgreSQL: LISTEN on the `sched_queue` channel; every transaction that can make a job runnable
  sends NOTIFY (`scheduler.store.queries.notify_change`), and the wait selects on the socket.
- Anything else: the timeout alone.
"""

from __future__ import annotations

import logging
import select
import time

from ..store.engine import normalize_url, sqlite_path
from ..store.queries import NOTIFY_CHANNEL

log = logging.getLogger("sched.worker")

CHECK_S = 0.05


class Wakeup:
    def __init__(self, queue):
        self._sqlite = None
        self._pg = None
        self._version = None
        url = queue.engine.url
        try:
            if url.get_backend_name() == "sqlite" and sqlite_path(url) is not None:
                import sqlite3

                self._sqlite = sqlite3.connect(str(sqlite_path(url)), timeout=1, check_same_thread=False)
                self._version = self._data_version()
            elif url.get_backend_name() == "postgresql":
                import psycopg

                plain = normalize_url(queue.url).replace("postgresql+psycopg://", "postgresql://", 1)
                self._pg = psycopg.connect(plain, autocommit=True)
                self._pg.execute(f"LISTEN {NOTIFY_CHANNEL}")
        except Exception as exc:  # noqa: BLE001 - no notifications: the worker still wakes on its timeout
            log.debug("no database change notifications (%s); waking on a timer", exc)
            self.close()

    def _data_version(self) -> int:
        return self._sqlite.execute("PRAGMA data_version").fetchone()[0]

    def wait(self, fds: list[int], timeout: float) -> None:
        """Return when a file descriptor is readable, the database changed, or `timeout` passed."""
        deadline = time.monotonic() + timeout
        pg = [self._pg.fileno()] if self._pg is not None else []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            step = min(left, CHECK_S) if self._sqlite is not None else left
            try:
                ready, _, _ = select.select([*fds, *pg], [], [], step)
            except (OSError, ValueError):  # a descriptor closed meanwhile: look again now
                return
            if any(fd in ready for fd in fds):
                return
            if pg and pg[0] in ready:
                self._drain_notifications()
                return
            if self._sqlite is not None and self._changed():
                return

    def _changed(self) -> bool:
        try:
            version = self._data_version()
        except Exception:  # noqa: BLE001 - locked or gone: let the worker's step find out
            return True
        changed, self._version = version != self._version, version
        return changed

    def _drain_notifications(self) -> None:
        try:
            for _ in self._pg.notifies(timeout=0):
                pass
        except Exception:  # noqa: BLE001 - connection lost: stop listening, wake on the timer
            self.close()

    def close(self) -> None:
        for conn in (self._sqlite, self._pg):
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001
                    pass
        self._sqlite = self._pg = None

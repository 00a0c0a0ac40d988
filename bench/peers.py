"""The peer the queue benches compare against: huey's SqliteHuey (a bench-only dependency, `pip install huey`).

Tasks are registered under this module's name (`bench.peers.*`), so the process that enqueues and
the consumer or drainer processes that run them must import this module as `bench.peers`.

Durability: sched's SQLite engine uses WAL with `synchronous=NORMAL` (no fsync per commit).
SqliteHuey also uses WAL but leaves SQLite's default `synchronous=FULL` (an fsync per commit) and
offers only FULL or OFF through `fsync=`. A peer's best day is the same durability as ours, so by
default huey gets NORMAL too (`sync="normal"`); `sync="default"` measures its untouched defaults.
"""

from __future__ import annotations

import subprocess
import sys
import time

HUEY_MISSING = "huey is not installed: pip install 'huey>=2.5' (or pip install -e '.[bench]')"


def available() -> bool:
    try:
        import huey  # noqa: F401
    except ImportError:
        return False
    return True


def version() -> str:
    from importlib import metadata

    return metadata.version("huey")


def make_huey(filename: str, sync: str = "normal"):
    """A SqliteHuey on `filename` with the tasks `noop(i) -> i` and `run_argv(argv) -> time it finished`."""
    from huey import SqliteHuey
    from huey.storage import SqliteStorage

    class Storage(SqliteStorage):
        def _create_connection(self):
            conn = super()._create_connection()
            if sync == "normal":
                conn.execute("pragma synchronous=NORMAL")
            return conn

    huey = SqliteHuey("bench", filename=filename, storage_class=Storage if sync == "normal" else None)
    huey.noop = huey.task(name="noop")(noop)  # calling a wrapper enqueues: huey.noop(i)
    huey.run_argv = huey.task(name="run_argv")(run_argv)
    return huey


def noop(i):
    return i


def run_argv(argv):
    """The same work as sched's `shell` job: run a program, no shell, and check its exit code.

    Returns the wall-clock time it finished, so a bench can take the last completion exactly
    instead of at its polling resolution."""
    done = subprocess.run(argv)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited with code {done.returncode}")
    return time.time()


def consume(filename: str, sync: str, workers: int, worker_type: str, delay: float) -> None:
    """Run huey's own consumer on this database (what `huey_consumer -w WORKERS -k TYPE -d DELAY -n`
    does), until SIGINT/SIGTERM. `delay` is its first idle-polling interval (huey's default 0.1 s)."""
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    huey = make_huey(filename, sync)
    huey.create_consumer(workers=workers, worker_type=worker_type, periodic=False, initial_delay=delay).run()


if __name__ == "__main__":
    # `python -m bench.peers consume DB SYNC WORKERS TYPE DELAY`; re-import under the module's own
    # name so the tasks carry the names the enqueuing side gave them.
    from bench.peers import consume as _consume

    _, _cmd, _db, _sync, _workers, _type, _delay = sys.argv
    _consume(_db, _sync, int(_workers), _type, float(_delay))

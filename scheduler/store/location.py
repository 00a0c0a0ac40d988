"""Where the queue lives: the URL from `--db`, else $SCHED_DB, else experiments.db here.

Standard library only: the CLI resolves the URL before it knows whether it will open anything.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_URL = "sqlite:///experiments.db"


def resolve_url(url: str | None = None) -> str:
    """The queue's URL: the argument, else $SCHED_DB, else experiments.db in the current folder."""
    return url or os.environ.get("SCHED_DB") or DEFAULT_URL


def sqlite_file(url: str) -> Path | None:
    """The file of a `sqlite:///` URL, or None (another database, or SQLite in memory)."""
    for prefix in ("sqlite:///", "sqlite+pysqlite:///"):
        if url.startswith(prefix):
            path = url[len(prefix):].split("?", 1)[0]
            return None if path in ("", ":memory:") else Path(path).expanduser()
    return None

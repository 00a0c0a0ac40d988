"""Where the queue lives: the URL from `--db`, else $SCHED_DB, else experiments.db here.

Standard library only: the CLI resolves the URL before it knows whether it will open anything.
"""

from __future__ import annotations

import os

DEFAULT_URL = "sqlite:///experiments.db"


def resolve_url(url: str | None = None) -> str:
    """The queue's URL: the argument, else $SCHED_DB, else experiments.db in the current folder."""
    return url or os.environ.get("SCHED_DB") or DEFAULT_URL

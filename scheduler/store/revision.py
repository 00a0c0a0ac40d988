"""The schema revisions this code knows, read from the migration files' names (standard library
only: `sched status` checks a SQLite file's revision without importing SQLAlchemy or Alembic)."""

from __future__ import annotations

import re
from pathlib import Path

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "sched_alembic_version"
_REVISION_FILE = re.compile(r"^(\d{4})_\w+\.py$")


def revisions() -> list[str]:
    """Every revision, oldest first (revisions are numbered and linear: 0001, 0002, ...)."""
    found = [m.group(1) for p in (MIGRATIONS / "versions").iterdir() if (m := _REVISION_FILE.match(p.name))]
    return sorted(found)


def head() -> str:
    return revisions()[-1]

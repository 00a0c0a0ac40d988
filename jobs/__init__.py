"""Job kinds: one module per kind, each exporting `KIND` (see `jobs.registry`).

Params models import without torch, so the queue can validate a job at submit time in a process
that never loads the ML stack; `run()` imports `pipeline` when the job actually runs.
"""

from .registry import (
    Column,
    Curve,
    Display,
    Kind,
    KindConflict,
    ParamsError,
    UnknownKind,
    all_kinds,
    get_kind,
    kind_names,
    known_kind,
)

__all__ = ["Column", "Curve", "Display", "Kind", "KindConflict", "ParamsError", "UnknownKind", "all_kinds",
           "get_kind", "kind_names", "known_kind"]

"""What the queue accepts, checked before anything is stored (one place for `submit`, `add`,
`priority`, cron firings and the Python API), so a value the database cannot hold or a tiny
hostile file can neither crash a command after its commit nor hang it.

Each check raises PlanError with one line that names the field and the limit.
"""

from __future__ import annotations

import json
import math
import reprlib
from datetime import datetime
from typing import Any

from .errors import PlanError
from .fmt import visible

# One range on every backend: PostgreSQL's INTEGER is 32-bit, SQLite's 64-bit.
PRIORITY_MIN, PRIORITY_MAX = -1_000_000_000, 1_000_000_000
# A job the deadline policy marks urgent goes before every other: its claim rank is its priority
# lifted above the whole range (scheduler/deadline/). Preemption compares ranks.
URGENT_LIFT = PRIORITY_MAX - PRIORITY_MIN + 1


def claim_rank(priority: int, urgent: bool) -> int:
    """The order claims and preemption go by: urgent jobs above all others, then priority."""
    return priority + URGENT_LIFT if urgent else priority


def rank_text(rank: int) -> str:
    """`priority 80`, or `priority 80, urgent (deadline)` for a lifted rank."""
    if rank > PRIORITY_MAX:
        return f"priority {rank - URGENT_LIFT}, urgent (deadline)"
    return f"priority {rank}"
MAX_ATTEMPTS = 100
MAX_GPUS = 64  # GPUs one job may ask for (all on one worker)
MAX_TIMEOUT_S = 366 * 24 * 3600.0  # a year
MAX_NAME = 200  # characters (the column's size)
# Job ids are INTEGER: 64-bit on SQLite, 32-bit on PostgreSQL. A bigger number names no job (and
# the driver or the server would raise on it).
MAX_JOB_ID = 2 ** 63 - 1
MAX_JOB_ID_POSTGRESQL = 2 ** 31 - 1
# A GPU share in MiB fits PostgreSQL's 32-bit INTEGER column: 2 PiB, more than any GPU holds.
MAX_GPU_MEMORY_MIB = 2 ** 31 - 1
MAX_TAG = 64
MAX_TAGS = 32
MAX_PARAMS_BYTES = 64 * 1024  # a job's params as JSON
# A queue file: its size on disk, the values in it once YAML aliases are expanded, how deep it
# nests, and the jobs it makes (matrix combinations times `workers`, counted before building any).
MAX_FILE_BYTES = 2 * 1024 * 1024
MAX_VALUES = 100_000
MAX_DEPTH = 32
MAX_JOBS_PER_FILE = 5_000
MAX_NUMBER_CHARS = 1_000  # a whole number in a queue file or a -p value, as written


def check_document(raw: Any, where: str) -> None:
    """Refuse a parsed queue file that expands to too many values or nests too deep.

    Walks the document as if YAML aliases were copies (that is how it would be used) but stops
    at the first limit passed, so a 400-byte "billion laughs" costs a few milliseconds."""
    seen = 0
    todo: list[tuple[Any, int]] = [(raw, 1)]
    while todo:
        value, depth = todo.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise PlanError(f"{where}: expands to more than {MAX_VALUES:,} values (YAML aliases and "
                            "{vars} count once per use); split the file or use fewer aliases")
        if depth > MAX_DEPTH:
            raise PlanError(f"{where}: values nest deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            todo.extend((item, depth + 1) for pair in value.items() for item in pair)
        elif isinstance(value, list):
            todo.extend((item, depth + 1) for item in value)


def check_name(name: Any, label: str) -> str:
    if not isinstance(name, str):
        # reprlib: a bounded repr, whatever the size of the value a variable brought
        raise PlanError(f"{label}: resolves to {reprlib.repr(name)}; a name must be text")
    if not name.strip():
        raise PlanError(f"{label}: a name cannot be empty or only spaces")
    if name != name.strip():
        raise PlanError(f"{label}: name '{visible(name)}' starts or ends with spaces")
    if not name.isprintable():
        raise PlanError(f"{label}: name '{visible(name)}' holds control characters")
    if len(name) > MAX_NAME:
        raise PlanError(f"{label}: name is {len(name)} characters long; at most {MAX_NAME}")
    if name.isascii() and name.isdigit():
        # `sched show 12` means job id 12: a job named "12" could never be reached by its name.
        raise PlanError(f"{label}: name '{name}' is all digits, which commands read as a job id; "
                        f"add a letter (e.g. 'run-{name}')")
    return name


def job_id_of(ref: str | int, limit: int = MAX_JOB_ID) -> int | None:
    """The job id a command argument means (`12`), or None when it is a name or a number no job
    can have (above `limit`). Only ASCII digits: `int()` of "²" fails, and one of 20 digits
    overflows SQLite's INTEGER inside the driver."""
    if isinstance(ref, int) and not isinstance(ref, bool):
        return ref if 0 <= ref <= limit else None
    text = str(ref)
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(limit)):
        return None
    number = int(text)
    return number if number <= limit else None


def check_priority(priority: Any, label: str) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise PlanError(f"{label}: priority must be a whole number, got {priority!r}")
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise PlanError(f"{label}: priority {priority} is out of range ({PRIORITY_MIN:,} to {PRIORITY_MAX:,})")
    return priority


def check_timeout(timeout_s: float | None, label: str) -> float | None:
    if timeout_s is None:
        return None
    if not math.isfinite(timeout_s) or timeout_s <= 0:
        raise PlanError(f"{label}: timeout must be a positive, finite duration, got {timeout_s!r}")
    if timeout_s > MAX_TIMEOUT_S:
        raise PlanError(f"{label}: timeout of {timeout_s:g}s is longer than a year")
    return timeout_s


def check_retry_delay(delay_s: float | None, label: str) -> float | None:
    if delay_s is None:
        return None
    if not math.isfinite(delay_s) or delay_s < 0:
        raise PlanError(f"{label}: retry_delay must be a duration of 0 or more, got {delay_s!r}")
    if delay_s > MAX_TIMEOUT_S:
        raise PlanError(f"{label}: retry_delay of {delay_s:g}s is longer than a year")
    return delay_s


def check_gpu_memory_mib(mib: Any, label: str) -> None:
    if mib is not None and not (isinstance(mib, int) and 0 < mib <= MAX_GPU_MEMORY_MIB):
        raise PlanError(f"{label}, field gpu_memory: {mib!r} MiB is more than a GPU holds "
                        f"(at most {MAX_GPU_MEMORY_MIB:,} MiB)")


def check_spec(spec, label: str) -> None:
    """Every field of a JobSpec within what the queue can store and run."""
    check_name(spec.name, f"{label}, field name")
    check_priority(spec.priority, label)
    check_timeout(spec.timeout_s, label)
    check_retry_delay(getattr(spec, "retry_delay_s", None), label)
    not_before = getattr(spec, "not_before", None)
    if not_before is not None and (not isinstance(not_before, datetime) or not_before.tzinfo is not None
                                   or not 1970 <= not_before.year <= 9999):
        raise PlanError(f"{label}: not_before must be a time without a zone (UTC), got {not_before!r}")
    check_gpu_memory_mib(spec.gpu_memory_mib, label)
    if isinstance(spec.max_attempts, bool) or not isinstance(spec.max_attempts, int) \
            or not 1 <= spec.max_attempts <= MAX_ATTEMPTS:
        raise PlanError(f"{label}: max_attempts must be 1 to {MAX_ATTEMPTS}, got {spec.max_attempts!r}")
    if len(spec.tags) > MAX_TAGS or any(not isinstance(t, str) or not t.strip() or len(t) > MAX_TAG
                                        or not t.isprintable() for t in spec.tags):
        raise PlanError(f"{label}: tags must be at most {MAX_TAGS} non-empty, printable texts of at most "
                        f"{MAX_TAG} characters")
    try:
        size = len(json.dumps(spec.params, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise PlanError(f"{label}, field params: cannot be stored as JSON ({exc})") from None
    if size > MAX_PARAMS_BYTES:
        raise PlanError(f"{label}, field params: {size:,} bytes as JSON; at most {MAX_PARAMS_BYTES:,}")

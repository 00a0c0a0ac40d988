"""Where a job's start-up goes: time marks from its claim to its first training step.

With SCHED_PROFILE_STARTUP=1 in the worker's environment, the runner opens a profile when it is
handed a job (`begin`, its origin the moment the worker claimed it), the layers below note the end
of each phase (`mark("data loaded")`), and the first optimizer step (`first_step`) closes it: a
table of phases with seconds goes to the job's log (stderr), each line starting with PREFIX so a
bench can read it back. SCHED_PROFILE_STARTUP=cprofile also writes a cProfile of the same span to
`startup.prof` in the job's run folder (read it with `python -m pstats`).

Without the variable every call is one flag test: the marks cost nothing in production.
Standard library only, so every layer (scheduler, jobs, pipeline) may call it.
"""

from __future__ import annotations

import os
import sys
import time

ENV = "SCHED_PROFILE_STARTUP"
PREFIX = "startup:"  # every line of the table; `read_table` finds them in a log
FIRST_STEP = "first training step"
PROFILE_FILE = "startup.prof"


class _Profile:
    """One job's marks: (phase, wall-clock time at its end), the first being the claim."""

    def __init__(self, origin: float, run_folder: str | None, cprofile: bool):
        self.marks: list[tuple[str, float]] = [("claimed", origin)]
        self.run_folder = run_folder
        self.profiler = None
        if cprofile and run_folder:
            import cProfile

            self.profiler = cProfile.Profile()
            try:
                self.profiler.enable()
            except ValueError:  # another profiler is active (Python 3.12+ allows one): marks only
                self.profiler = None

    def close(self, out) -> None:
        if self.profiler is not None:
            self.profiler.disable()
            self.profiler.dump_stats(os.path.join(self.run_folder, PROFILE_FILE))
        print(format_table(self.marks), file=out, flush=True)


_current: _Profile | None = None


def begin(origin: float | None = None, run_folder: str | None = None) -> None:
    """Open a job's profile when SCHED_PROFILE_STARTUP asks for one (otherwise close any left open).
    `origin`: when the job was claimed (wall clock), else now."""
    global _current
    setting = os.environ.get(ENV, "").strip().lower()
    _current = None
    if setting not in ("", "0", "no", "false"):
        _current = _Profile(origin if origin is not None else time.time(), run_folder, setting == "cprofile")


def mark(phase: str) -> None:
    """The end of `phase` (nothing when no profile is open)."""
    if _current is not None:
        _current.marks.append((phase, time.time()))


def first_step(out=None) -> None:
    """The first optimizer step is done: write the table and close the profile."""
    global _current
    if _current is None:
        return
    profile, _current = _current, None
    profile.marks.append((FIRST_STEP, time.time()))
    profile.close(out or sys.stderr)


def format_table(marks: list[tuple[str, float]]) -> str:
    """Phases with their seconds and the running total, one line each, every line PREFIX-ed; the
    last line also gives the origin and end as epoch seconds (what a bench lines up with others)."""
    width = max(len(phase) for phase, _ in marks)
    lines = [f"{PREFIX} {'phase'.ljust(width)}  seconds  since claim"]
    for (_, before), (phase, at) in zip(marks, marks[1:]):
        lines.append(f"{PREFIX} {phase.ljust(width)}  {at - before:7.3f}  {at - marks[0][1]:11.3f}")
    lines.append(f"{PREFIX} total {marks[-1][1] - marks[0][1]:.3f} s from {marks[0][1]:.3f} to {marks[-1][1]:.3f}")
    return "\n".join(lines)


def read_table(text: str) -> list[tuple[str, float]]:
    """(phase, seconds) of the last table in a log's text (empty when it holds none)."""
    tables: list[list[tuple[str, float]]] = []
    for line in text.splitlines():
        if not line.startswith(PREFIX):
            continue
        body = line[len(PREFIX):].strip()
        if body.startswith("phase "):
            tables.append([])
        elif not body.startswith("total ") and tables:
            name, seconds, _ = body.rsplit(None, 2)
            tables[-1].append((name, float(seconds)))
    return tables[-1] if tables else []

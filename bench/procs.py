"""Processes the benches start: the installed `sched` command, workers and consumers, and waiting on them.

Shared by bench_startup (the `sched` entry point), bench_queue (real workers draining a queue, the
`sched submit` command) and bench_e2e (a worker and a consumer running jobs one at a time).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
import time
from datetime import timezone
from pathlib import Path

from bench.benchlib import ROOT


class Failed(RuntimeError):
    pass


# ---- the installed `sched` command --------------------------------------------------------------------

def sched_script() -> tuple[str, str | None]:
    """(the `sched` console script to run, a note when `shutil.which` found something else).

    The script pip installed for this Python is what users run. When `shutil.which("sched")` is a
    wrapper instead (a pyenv shim, a shell script that adds pyenv's own start-up, ~0.1 s, to any
    command, `python` included), the script it runs is timed, as `python -c pass` times the
    interpreter itself, and the note says so."""
    beside = Path(sysconfig.get_path("scripts")) / "sched"
    found = shutil.which("sched")
    if found and _is_python_script(Path(found)):
        return found, None
    if beside.exists():
        note = (f"note: shutil.which('sched') is {found}, a wrapper (not a Python script; a pyenv shim adds its own "
                f"start-up to any command); timed: the console script it runs, {beside}") if found else None
        return str(beside), note
    raise Failed("no installed `sched` command for this Python (pip install -e .)")


def _is_python_script(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            first = f.readline()
    except OSError:
        return False
    return first.startswith(b"#!") and b"python" in first


def tree_env() -> dict[str, str]:
    """The environment with this tree first on PYTHONPATH: the installed entry point (whichever
    checkout pip installed) then imports this checkout's code. Give it to every timed command,
    the peer's included, so both pay the same path search."""
    paths = [str(ROOT), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}


# ---- waiting and stopping --------------------------------------------------------------------------

def wait_for(check, timeout: float, poll: float, what: str, proc: subprocess.Popen | None = None,
             log: Path | None = None) -> None:
    """Poll `check()` until it is true; fail when `proc` exits first or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while not check():
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise Failed(f"{what}: the process exited with code {proc.returncode}\n{tail}")
        if time.monotonic() > deadline:
            raise Failed(f"{what}: not done after {timeout:.0f} s")
        time.sleep(poll)


def stop(proc: subprocess.Popen, sig: int) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---- what sched recorded --------------------------------------------------------------------------

def finished_span(queue, ids: list[int] | None = None) -> tuple[float, float]:
    """(first, last) `finished_at` of these jobs (all jobs when None), as epoch seconds: the database
    clock, which is this machine's clock; exact, where polling would add up to one poll interval."""
    from sqlalchemy import func, select

    from scheduler.store.schema import jobs

    query = select(func.min(jobs.c.finished_at), func.max(jobs.c.finished_at))
    if ids is not None:
        query = query.where(jobs.c.id.in_(ids))
    with queue.read() as conn:
        first, last = conn.execute(query).one()
    return tuple(t.replace(tzinfo=timezone.utc).timestamp() for t in (first, last))

"""What every bench shares: rotated rounds, min/median, the machine, and what this sched version offers.

Benches import it as `bench.benchlib` after putting the project root on sys.path, so spawned
processes (multiprocessing "spawn") and consumers started by name find the same module.
"""

from __future__ import annotations

import contextlib
import io
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sched", "sqlalchemy", "psycopg", "huey", "torch", "transformers", "accelerate", "optuna", "numpy",
            "pandas", "pydantic", "rich", "click")


# ---- rounds and figures ---------------------------------------------------------------------------

def rotated(items: Sequence, round_: int) -> list:
    """`items` starting at position `round_` (mod len): every contender goes first once in len rounds."""
    k = round_ % len(items) if items else 0
    return list(items[k:]) + list(items[:k])


def summary(values: Sequence[float]) -> dict[str, float]:
    """min, median, max and p95 (nearest rank) of a non-empty sample."""
    ordered = sorted(values)
    return {"min": ordered[0], "median": statistics.median(ordered), "max": ordered[-1],
            "p95": ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))], "n": len(ordered)}


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def table(rows: list[list[str]], header: list[str]) -> str:
    """A plain-text table, right-aligned after the first column (pasteable into Markdown as is)."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    def line(cells):
        return "  ".join(str(c).ljust(widths[0]) if i == 0 else str(c).rjust(widths[i]) for i, c in enumerate(cells))
    return "\n".join([line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


@contextlib.contextmanager
def silenced():
    """Send everything written to stdout and stderr to /dev/null, at the file-descriptor level too
    (the Trainer's prints, progress bars, and the Rust tokenizer trainer's progress, which bypasses
    sys.stdout), so the bench's own figures stay readable."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        os.dup2(null.fileno(), 1)
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def stopwatch(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


# ---- the machine ----------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> str:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def busy_note() -> str | None:
    """A warning when the machine is not idle (1-minute load above a quarter of the cores)."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return None
    cores = os.cpu_count() or 1
    if load > 0.25 * cores:
        return (f"WARNING: load average {load:.2f} on {cores} cores before this bench: the machine is busy, "
                "so these figures are not fit to publish")
    return None


def settle(max_wait_s: float, poll_s: float = 5.0) -> float:
    """Wait until `busy_note` has nothing to say (the 1-minute load under a quarter of the cores),
    at most `max_wait_s`; returns the seconds waited. Benches run back to back leave their own work
    in the 1-minute average (it decays with a 60 s time constant), which would make the next bench
    warn on an idle machine."""
    t0 = time.monotonic()
    while busy_note() is not None and time.monotonic() - t0 < max_wait_s:
        time.sleep(poll_s)
    return time.monotonic() - t0


def header(title: str) -> None:
    """The first lines of a bench's output: what it is and whether the machine looked idle."""
    print(title)
    note = busy_note()
    print(note if note else f"load average {load_average()} (1, 5, 15 min): machine looks idle")


def versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def project_version() -> str:
    """The version in this tree's pyproject.toml (the installed `sched` may be another checkout)."""
    import tomllib

    try:
        with open(ROOT / "pyproject.toml", "rb") as f:
            return tomllib.load(f)["project"]["version"]
    except (OSError, KeyError, ValueError):
        return "unknown"


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return rev + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine_lines() -> list[str]:
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    v = versions()
    v.pop("sched")
    return [
        f"date        {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"machine     {cpu_model()}, {cores} cores ({usable} usable), {memory_gib()} RAM, {platform.system()} "
        f"{platform.release()}",
        f"gpu         {gpu_description()}",
        f"python      {sys.version.split()[0]} ({sys.executable})",
        f"sched       {project_version()} at {ROOT} (git {git_revision()})",
        "packages    " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"load avg    {load_average()} (1, 5, 15 min) at start",
    ]


def gpu_description() -> str:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no driver / no nvidia-ml-py
        return "none (CPU only)"
    try:
        names = [pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))
                 for i in range(pynvml.nvmlDeviceGetCount())]
        return ", ".join(n.decode() if isinstance(n, bytes) else str(n) for n in names) or "none"
    finally:
        pynvml.nvmlShutdown()


# ---- what this version of sched offers -------------------------------------------------------------

def sched_cmd(*args: str) -> list[str]:
    """`sched ...` as this tree's module (never an installed console script pointing elsewhere)."""
    return [sys.executable, "-m", "scheduler.cli", *args]


@lru_cache(maxsize=None)
def worker_help() -> str:
    done = subprocess.run(sched_cmd("worker", "--help"), cwd=ROOT, capture_output=True, text=True)
    return done.stdout + done.stderr


@lru_cache(maxsize=None)
def warm_flags() -> tuple[list[str], list[str]] | None:
    """(flags for a cold worker, flags for a warm one), or None when this worker has no warm spare.

    Issue 12 asks for warm spares on by default with `--no-warm` to turn them off; an opt-in
    `--warm` is recognised too.
    """
    import re

    text = worker_help()
    has_no_warm = re.search(r"--no-warm(?![\w-])", text) is not None
    has_warm = re.search(r"(?<![\w-])--warm(?![\w-])", text) is not None
    if has_no_warm:
        return ["--no-warm"], (["--warm"] if has_warm else [])
    if has_warm:
        return [], ["--warm"]
    return None


WARM_UNAVAILABLE = "warm: not available in this version (the worker has no --no-warm/--warm option)"


# ---- databases ------------------------------------------------------------------------------------

class PgDatabases:
    """Fresh PostgreSQL databases on one server for a bench run, dropped at the end."""

    def __init__(self, url: str):
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url

        from scheduler.store.engine import normalize_url  # noqa: F401 (psycopg 3 driver name)

        self.base = make_url(normalize_url(url))
        self.admin = create_engine(self.base, isolation_level="AUTOCOMMIT")
        self.made: list[str] = []

    def new(self, label: str) -> str:
        from sqlalchemy import text

        name = f"sched_bench_{os.getpid()}_{len(self.made)}_{label}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        self.made.append(name)
        return self.base.set(database=name).render_as_string(hide_password=False)

    def close(self) -> None:
        from sqlalchemy import text

        with self.admin.connect() as conn:
            for name in self.made:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.admin.dispose()

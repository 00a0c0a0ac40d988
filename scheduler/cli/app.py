"""The `sched` group: global options, lazy command loading, error printing, the console and the queue.

Nothing here imports SQLAlchemy, rich or torch: `sched --help` loads the command modules (each
imports only click at the top) and prints. The queue is opened on first use by a command.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import time
import traceback
from functools import cached_property

import click

from ..errors import SchedError

# command name -> module under scheduler.cli holding a click command of that name
COMMANDS = {
    "init": "setup", "db": "setup",
    "submit": "submit", "add": "submit",
    "worker": "run", "demo": "run",
    "status": "watch", "show": "watch", "logs": "watch",
    "cancel": "control", "retry": "control", "priority": "control", "drain": "control", "resume": "control",
    "cron": "cron",
    "results": "results", "report": "report", "study": "study", "kinds": "kinds",
    "ls": "jobs", "rm": "jobs", "diff": "jobs",
    "slurm": "slurm", "forecast": "forecast",
}


class _LazyConsole:
    """A rich Console made on first use (importing rich costs time `--help` need not pay)."""

    def __init__(self, stderr: bool = False):
        self._stderr = stderr

    @cached_property
    def _console(self):
        from rich.console import Console

        class QuietOnBrokenPipe(Console):
            def on_broken_pipe(self) -> None:
                # rich exits the process here (SystemExit(1)); a worker must go on stopping
                # cleanly and requeue its jobs, so this console just stops writing.
                self.quiet = True
                _quiet_streams()

        return QuietOnBrokenPipe(stderr=self._stderr)

    def __getattr__(self, name):
        return getattr(self._console, name)


console = _LazyConsole()
err_console = _LazyConsole(stderr=True)


def _is_database_error(exc: BaseException) -> bool:
    # Checked without importing SQLAlchemy: if it is not imported, the error cannot be one of its.
    sa_exc = sys.modules.get("sqlalchemy.exc")
    return sa_exc is not None and isinstance(exc, sa_exc.SQLAlchemyError)


class SchedGroup(click.Group):
    """Loads each command's module only when asked for it, prints a user-facing error as one line
    and exits 1 (the traceback only with -v)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, name: str):
        if name in self.commands:
            return self.commands[name]
        module = COMMANDS.get(name)
        if module is None:
            return None
        return getattr(importlib.import_module(f"scheduler.cli.{module}"), name.replace("-", "_"))

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Exception as exc:
            if not isinstance(exc, (SchedError, OSError)) and not _is_database_error(exc):
                raise
            if ctx.obj and ctx.obj.get("verbose"):
                traceback.print_exc()
            message = _database_message(exc, ctx) if _is_database_error(exc) else str(exc)
            err_console.print(f"[bold red]error:[/] {_plain(message)}", highlight=False, soft_wrap=True)
            sys.exit(1)


def _database_message(exc: BaseException, ctx: click.Context) -> str:
    """The driver's one line, naming the database (\"database disk image is malformed\" alone
    does not say which file)."""
    from ..store.engine import shown_url

    url = (ctx.obj or {}).get("db")
    line = str(exc).splitlines()[0]
    return f"database {shown_url(url)}: {line}" if url else line


def _plain(text: str) -> str:
    """A message (it may quote a job name) as rich prints it literally, control characters visible."""
    from rich.markup import escape

    from ..fmt import visible

    return escape(visible(text))


def open_queue(ctx: click.Context, *, create: bool = False):
    """The queue of `--db`, opened (and upgraded) on first use by a command.

    Only commands that put work in the queue (`create`: init, submit, add, worker, demo, cron add)
    make a new SQLite file; the others say there is none here rather than create an empty one.
    """
    from ..jobqueue import JobQueue

    obj = ctx.find_root().obj
    if "queue" not in obj:
        if not create:
            _require_existing(obj["db"])
        obj["queue"] = JobQueue(obj["db"])
    return obj["queue"]


def _require_existing(url: str) -> None:
    from ..store.location import DEFAULT_URL, sqlite_file

    path = sqlite_file(url)
    if path is not None and not path.exists():
        hint = "sched init, or --db URL / $SCHED_DB" if url == DEFAULT_URL else "check --db / $SCHED_DB"
        raise SchedError(f"no {path.name} here ({path.resolve().parent}): no queue to read ({hint})")


def parse_pairs(pairs: tuple[str, ...], flag: str) -> list[tuple[str, object]]:
    """KEY=VALUE options, VALUE read as YAML: 3 -> int, 2e-5 -> float, true -> bool, [a, b] -> list."""
    from ..plan import parse_yaml

    parsed = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SchedError(f"{flag} takes KEY=VALUE, got '{pair}'")
        if any(key == seen for seen, _ in parsed):
            # the last one would win silently, and the first might be the one that was meant
            raise SchedError(f"{flag} {key} is given twice; give each key once")
        parsed.append((key, parse_yaml(value, f"{flag} {key}") if value else ""))
    return parsed


class _VisibleText(logging.Filter):
    """Log lines quote job names, params and failure messages: write their control characters as
    escapes so a hostile name cannot drive the terminal of whoever watches the worker."""

    def filter(self, record: logging.LogRecord) -> bool:
        from ..fmt import visible

        record.msg, record.args = visible(record.getMessage()), None
        return True


def _quiet_streams() -> None:
    """Our terminal or pipe is gone (`sched worker | tee log`, then Ctrl-C killed tee): write nothing
    more. Python would otherwise fail flushing stdout at exit, and a worker must finish stopping."""
    devnull = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    sys.stdout, sys.stderr = devnull, devnull


class _SafeStreamHandler(logging.StreamHandler):
    """Log lines to stderr, `[HH:MM:SS] LEVEL message`; never raises (logging must not kill the
    worker: a closed pipe, a full disk). A plain handler, not rich's: rich lays out every line as
    a table, about a millisecond each, which a worker running many short jobs would pay twice per
    job."""

    broken = False
    COLOURS = {"WARNING": "\x1b[33m", "ERROR": "\x1b[1;31m", "CRITICAL": "\x1b[1;31m"}

    def __init__(self):
        super().__init__(sys.stderr)
        self.colour = sys.stderr.isatty() and not os.environ.get("NO_COLOR")

    def format(self, record: logging.LogRecord) -> str:
        when = time.strftime("%H:%M:%S", time.localtime(record.created))
        level = f"{record.levelname:<7}"
        if self.colour and record.levelname in self.COLOURS:
            level = f"{self.COLOURS[record.levelname]}{level}\x1b[0m"
        return f"[{when}] {level} {record.getMessage()}"

    def emit(self, record: logging.LogRecord) -> None:
        if self.broken:
            return
        try:
            self.stream = sys.stderr
            super().emit(record)
        except (OSError, ValueError):  # BrokenPipeError, "I/O operation on closed file"
            self.handleError(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        self.broken = True
        _quiet_streams()


def setup_logging(verbose: bool) -> None:
    handler = _SafeStreamHandler()
    handler.addFilter(_VisibleText())
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        datefmt="[%X]", handlers=[handler])
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def complete_job(ctx: click.Context, _param, incomplete: str) -> list:
    """Shell completion of job names (and ids) from the queue of --db / $SCHED_DB, if it exists."""
    from click.shell_completion import CompletionItem

    try:
        from ..store.location import resolve_url, sqlite_file

        url = resolve_url((ctx.find_root().params or {}).get("db"))
        path = sqlite_file(url)
        if path is not None and not path.exists():
            return []
        from ..jobqueue import JobQueue

        queue = JobQueue(url)
        try:
            rows = queue.find(name_glob=incomplete.replace("*", "") + "*", limit=200)
        finally:
            queue.dispose()
        return [CompletionItem(row.name, help=f"#{row.id} {row.kind} {row.status}") for row in rows]
    except Exception:  # noqa: BLE001 - completion must never print a traceback into the shell
        return []


@click.group(cls=SchedGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=None, package_name="sched", message="sched %(version)s", prog_name="sched")
@click.option("--db", envvar="SCHED_DB", default=None, metavar="URL",
              help="Queue database URL (default: sqlite:///experiments.db here; env SCHED_DB).")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks and debug logs.")
@click.pass_context
def cli(ctx: click.Context, db: str | None, verbose: bool) -> None:
    """sched: a priority job queue that keeps your GPUs busy with ML experiments.

    \b
    Example:
      sched submit queue.yaml && sched worker --gpus auto
    """
    from ..store.location import resolve_url

    ctx.ensure_object(dict)
    ctx.obj.update(db=resolve_url(db), verbose=verbose)


def main() -> None:
    cli(prog_name="sched")

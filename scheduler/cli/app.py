"""The `sched` group: global options, lazy command loading, error printing, the console and the queue.

Nothing here imports SQLAlchemy, rich or torch: `sched --help` loads the command modules (each
imports only click at the top) and prints. The queue is opened on first use by a command.
"""

from __future__ import annotations

import importlib
import logging
import sys
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
}


class _LazyConsole:
    """A rich Console made on first use (importing rich costs time `--help` need not pay)."""

    def __init__(self, stderr: bool = False):
        self._stderr = stderr

    @cached_property
    def _console(self):
        from rich.console import Console

        return Console(stderr=self._stderr)

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


def open_queue(ctx: click.Context):
    """The queue of `--db` (opened, and created or upgraded, on first use by a command)."""
    from ..jobqueue import JobQueue

    obj = ctx.find_root().obj
    if "queue" not in obj:
        obj["queue"] = JobQueue(obj["db"])
    return obj["queue"]


def parse_pairs(pairs: tuple[str, ...], flag: str) -> list[tuple[str, object]]:
    """KEY=VALUE options, VALUE read as YAML: 3 -> int, 2e-5 -> float, true -> bool, [a, b] -> list."""
    from ..plan import parse_yaml

    parsed = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SchedError(f"{flag} takes KEY=VALUE, got '{pair}'")
        parsed.append((key, parse_yaml(value, f"{flag} {key}") if value else ""))
    return parsed


class _VisibleText(logging.Filter):
    """Log lines quote job names, params and failure messages: write their control characters as
    escapes so a hostile name cannot drive the terminal of whoever watches the worker."""

    def filter(self, record: logging.LogRecord) -> bool:
        from ..fmt import visible

        record.msg, record.args = visible(record.getMessage()), None
        return True


def setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    handler = RichHandler(console=err_console._console, show_path=False, markup=False, highlighter=None)
    handler.addFilter(_VisibleText())
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        datefmt="[%X]", handlers=[handler])
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


@click.group(cls=SchedGroup, context_settings={"help_option_names": ["-h", "--help"]})
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

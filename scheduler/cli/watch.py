"""`sched status`, `show` and `logs`: watch the queue and its jobs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from ..errors import SchedError
from .app import complete_job, console, open_queue


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON snapshot for scripts.")
@click.option("--watch", is_flag=True, help="Refresh live until Ctrl-C.")
@click.option("--interval", default=2.0, show_default=True, help="Seconds between refreshes with --watch.")
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(0, 2 ** 31 - 1),  # an SQL LIMIT
              help="Most recent jobs listed under `jobs` in --json.")
@click.pass_context
def status(ctx: click.Context, as_json: bool, watch: bool, interval: float, limit: int) -> None:
    """Show workers and GPUs, running jobs, the queue in claim order and why each job waits,
    recent endings and failures.

    \b
    Example:
      sched status --watch
      sched status --json | jq '.counts'
    """
    if as_json:  # no rich: scripts get the data only
        snap = _snapshot(ctx, all_jobs=True, jobs_limit=limit)
        click.echo(json.dumps(snap, indent=1, ensure_ascii=False))
        return
    from ..render import status_view

    if watch:
        from rich.live import Live

        def view():  # sized to the terminal as it is now (it may have been resized)
            return status_view(_snapshot(ctx, all_jobs=False), width=console.width, height=console.height)

        with Live(view(), console=console._console, auto_refresh=False, screen=False,
                  vertical_overflow="crop") as live:
            try:
                while True:
                    time.sleep(interval)
                    live.update(view(), refresh=True)
            except KeyboardInterrupt:
                pass
    else:
        console.print(status_view(_snapshot(ctx, all_jobs=False), width=console.width))


def _snapshot(ctx: click.Context, **options) -> dict:
    """The status snapshot of `--db`. A SQLite file at the newest schema is read with the standard
    library (store/sqlite_reads.py): importing SQLAlchemy would double what `sched status` takes on
    a small queue. Anything else, or a read of the file that fails, goes through the queue, which
    upgrades, refuses or reports as every command does."""
    import sqlite3

    from ..views import status_snapshot

    obj = ctx.find_root().obj
    if "sqlite_status" not in obj:
        obj["sqlite_status"] = _sqlite_status(obj["db"])
    if obj["sqlite_status"] is not None:
        try:
            return status_snapshot(obj["sqlite_status"], **options)
        except sqlite3.Error:
            obj["sqlite_status"].dispose()
            obj["sqlite_status"] = None  # from now on through the queue, which says what is wrong
    return status_snapshot(open_queue(ctx), **options)


def _sqlite_status(url: str):
    from ..store.location import sqlite_file

    path = sqlite_file(url)
    if path is None or "?" in url or not path.exists():  # URL options are SQLAlchemy's to apply
        return None
    from ..store.sqlite_reads import SqliteStatus

    return SqliteStatus.open(path)


@click.command()
@click.argument("job", shell_complete=complete_job)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def show(ctx: click.Context, job: str, as_json: bool) -> None:
    """Show one job (by id or name): state, params, metrics, artifacts.

    \b
    Example:
      sched show finetune-klue/bert-base
    """
    from ..render import job_view
    from ..views import job_detail

    detail = job_detail(open_queue(ctx), job)
    if as_json:
        click.echo(json.dumps(detail, indent=1, ensure_ascii=False))
    else:
        console.print(job_view(detail, width=console.width))


@click.command()
@click.argument("job", shell_complete=complete_job)
@click.option("-f", "--follow", is_flag=True,
              help="Keep printing until the job ends (a queued job: wait for it to start, then follow).")
@click.option("-n", "--lines", default=0, type=click.IntRange(0), help="Only the last N lines (0: all).")
@click.option("--max-line", default=4000, show_default=True, type=click.IntRange(0),
              help="Show at most this many characters of a line, saying how many were left out (0: all).")
@click.pass_context
def logs(ctx: click.Context, job: str, follow: bool, lines: int, max_line: int) -> None:
    """Print a job's log (stdout and stderr of every attempt).

    The log is streamed, and -n reads it from the end, so a log of any size prints in little
    memory; a line longer than --max-line ends with a note of how much was left out.

    \b
    Example:
      sched logs 42 -f
      sched logs 42 -n 50
    """
    from ..logtail import CappedLines, tail_offset

    queue = open_queue(ctx)
    row = queue.get(job)
    if follow:
        row = _wait_until_started(queue, row)
    if not row.log_path:
        raise SchedError(f"job {row.id} ('{row.name}') has not started yet: no log (-f waits for it)")
    path = _log_file(queue, row, wait=follow)
    capped = CappedLines(max_line)
    with open(path, "rb") as fh:
        fh.seek(tail_offset(fh, lines))
        _echo_blocks(fh, capped)
        said_queued = False
        while follow:
            current = queue.get(row.id)
            if current.status not in _ACTIVE:
                _echo_blocks(fh, capped)  # what it wrote before it ended
                break
            if current.status != _RUNNING and not said_queued:  # a retry waits: its attempt follows in this log
                _say(f"job {row.id} is queued again ({_waiting_why(queue, current)}); still following")
            said_queued = current.status != _RUNNING
            time.sleep(FOLLOW_POLL_S)
            _echo_blocks(fh, capped)
    click.echo(capped.close(), nl=False)


FOLLOW_POLL_S = 0.5
LOG_APPEAR_S = 10.0  # a running job's log file appears when its runner starts; later: another host's
_RUNNING, _ACTIVE = "running", ("queued", "running")


def _say(line: str) -> None:
    """A note for the person watching, on stderr (stdout stays the log itself)."""
    from rich.text import Text

    from ..fmt import visible
    from .app import err_console

    err_console.print(Text(visible(line), style="dim"), highlight=False, soft_wrap=True)


def _waiting_why(queue, row) -> str:
    from ..store.engine import db_now
    from ..views import not_before_text

    if row.not_before is not None:
        with queue.read() as conn:
            now = db_now(conn)
        if row.not_before > now:
            return not_before_text(row.not_before, now, retry=row.attempts > 0)
    return "waiting for a free slot or its dependencies; sched status says why"


def _wait_until_started(queue, row):
    """`logs -f` of a queued job: wait (saying so once) until a worker starts it, as pueue's
    follow does; a job that ends without starting (cancelled, upstream failed) is an error."""
    if row.status != "queued" or row.log_path:  # running, finished, or queued again after an attempt
        return row
    _say(f"job {row.id} ('{row.name}') has not started yet ({_waiting_why(queue, row)}); "
         "waiting for it to start (Ctrl-C stops)")
    while True:
        time.sleep(FOLLOW_POLL_S)
        row = queue.get(row.id)
        if row.log_path:
            return row
        if row.status not in _ACTIVE:
            raise SchedError(f"job {row.id} ('{row.name}') ended {row.status} without starting: no log"
                             + (f" ({row.message})" if row.message else ""))


def _log_file(queue, row, *, wait: bool) -> Path:
    """The job's log; while it is running and `wait`, give its runner a moment to create it."""
    path = Path(row.log_path)
    deadline = time.monotonic() + (LOG_APPEAR_S if wait else 0.0)
    while not path.exists():
        if time.monotonic() >= deadline or queue.get(row.id).status != _RUNNING:
            raise SchedError(f"log file {path} of job {row.id} is not on this host")
        time.sleep(0.1)
    return path


def _echo_blocks(fh, capped) -> None:
    """Print the rest of the file as it is now, block by block."""
    from ..logtail import read_blocks

    for block in read_blocks(fh):
        click.echo(capped.feed(block), nl=False)

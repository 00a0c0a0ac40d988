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
    from ..render import status_view
    from ..views import status_snapshot

    queue = open_queue(ctx)
    if as_json:
        snap = status_snapshot(queue, all_jobs=True, jobs_limit=limit)
        click.echo(json.dumps(snap, indent=1, ensure_ascii=False))
    elif watch:
        from rich.live import Live

        def view():  # sized to the terminal as it is now (it may have been resized)
            return status_view(status_snapshot(queue, all_jobs=False), width=console.width, height=console.height)

        with Live(view(), console=console._console, auto_refresh=False, screen=False,
                  vertical_overflow="crop") as live:
            try:
                while True:
                    time.sleep(interval)
                    live.update(view(), refresh=True)
            except KeyboardInterrupt:
                pass
    else:
        console.print(status_view(status_snapshot(queue, all_jobs=False), width=console.width))


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
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the job ends.")
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
    from ..store.states import RUNNING

    queue = open_queue(ctx)
    row = queue.get(job)
    if not row.log_path:
        raise SchedError(f"job {row.id} ('{row.name}') has not started yet: no log")
    path = Path(row.log_path)
    if not path.exists():
        raise SchedError(f"log file {path} of job {row.id} is not on this host")
    capped = CappedLines(max_line)
    with open(path, "rb") as fh:
        fh.seek(tail_offset(fh, lines))
        _echo_blocks(fh, capped)
        while follow:
            if queue.get(row.id).status != RUNNING:
                _echo_blocks(fh, capped)  # what it wrote before it ended
                break
            time.sleep(0.5)
            _echo_blocks(fh, capped)
    click.echo(capped.close(), nl=False)


def _echo_blocks(fh, capped) -> None:
    """Print the rest of the file as it is now, block by block."""
    from ..logtail import read_blocks

    for block in read_blocks(fh):
        click.echo(capped.feed(block), nl=False)

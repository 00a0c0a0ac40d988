"""`sched ls`, `sched rm` and `sched diff`: find jobs by state, tag, kind, name or age; remove finished
ones; compare two."""

from __future__ import annotations

import json

import click

from ..errors import SchedError
from .app import complete_job, console, open_queue

# --since reaches back at most this far: a century holds any campaign, and the date stays far
# from the year 1 that Python's datetime cannot go below.
MAX_SINCE_DAYS = 36_500


def _filters(func):
    for option in reversed([
        click.option("--status", "statuses", multiple=True, metavar="STATE",
                     help="Only jobs in this state (repeatable): queued, running, succeeded, failed, ..."),
        click.option("--tag", "tags", multiple=True, help="Only jobs carrying this tag (repeatable: any of them)."),
        click.option("--kind", "kinds", multiple=True, help="Only jobs of this kind (repeatable)."),
        click.option("--name", "name_glob", default=None, metavar="GLOB", help="Only names matching, e.g. 'ft-*'."),
        click.option("--since", default=None, metavar="AGE|TIME",
                     help="Only jobs submitted in the last AGE (30m, 2h, 7d) or since an ISO time (UTC)."),
    ]):
        func = option(func)
    return func


def _find(ctx, statuses, tags, kinds, name_glob, since, limit=None):
    from ..store.states import ALL_STATES

    unknown = [s for s in statuses if s not in ALL_STATES]
    if unknown:
        raise SchedError(f"unknown state {unknown[0]!r}; states: {', '.join(ALL_STATES)}")
    queue = open_queue(ctx)
    rows = queue.find(statuses=statuses, kinds=kinds, tags=tags, name_glob=name_glob,
                      since=_since(queue, since), limit=limit)
    return queue, rows


def _since(queue, value: str | None):
    if value is None:
        return None
    from datetime import datetime, timedelta

    from pipeline.util import parse_duration

    from ..fmt import short
    from ..store.engine import db_now

    text = value.strip().lower()
    try:
        if text.endswith("d") and text[:-1].replace(".", "", 1).isdigit():
            age = float(text[:-1]) * 86400
        else:
            age = parse_duration(text)
    except ValueError:
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            raise SchedError(f"--since takes an age (30m, 2h, 7d) or an ISO time, got {value!r}") from None
    if not age <= MAX_SINCE_DAYS * 86400:  # also inf and NaN (`1e400d`): timedelta cannot hold them
        raise SchedError(f"--since {short(value)} reaches back more than {MAX_SINCE_DAYS:,} days; "
                         "give a shorter age or an ISO time")
    with queue.read() as conn:
        return db_now(conn) - timedelta(seconds=age)


def _described(statuses, tags, kinds, name_glob, since) -> str:
    parts = [f"--status {s}" for s in statuses] + [f"--tag {t}" for t in tags] + [f"--kind {k}" for k in kinds]
    parts += [f"--name {name_glob}"] if name_glob else []
    parts += [f"--since {since}"] if since else []
    return " ".join(parts) or "(no filter)"


@click.command("ls")
@_filters
@click.option("--limit", "-n", type=click.IntRange(1, 2 ** 31 - 1), default=None, help="Only the first N jobs.")
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as a JSON list.")
@click.pass_context
def ls(ctx, statuses, tags, kinds, name_glob, since, limit, as_json) -> None:
    """List jobs, oldest first, filtered by state, tag, kind, name and age.

    A filter that matches nothing says so and exits with status 1.

    \b
    Example:
      sched ls --status failed --since 1d
      sched ls --tag round2 --kind finetune --json | jq '.[].name'
      sched ls --name 'tune-*'
    """
    from ..render import jobs_table
    from ..store.engine import db_now
    from ..views import job_dict

    queue, rows = _find(ctx, statuses, tags, kinds, name_glob, since, limit)
    if not rows:
        raise SchedError(f"no job matches {_described(statuses, tags, kinds, name_glob, since)}")
    with queue.read() as conn:
        now = db_now(conn)
    jobs = [job_dict(row, now) for row in rows]
    if as_json:
        click.echo(json.dumps(jobs, indent=1, ensure_ascii=False))
    else:
        console.print(jobs_table(jobs, width=console.width))


@click.command("rm")
@click.argument("jobs", nargs=-1, shell_complete=complete_job)
@_filters
@click.option("--files", is_flag=True, help="Also delete their run folders (logs, checkpoints, outputs).")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@click.pass_context
def rm(ctx, jobs, statuses, tags, kinds, name_glob, since, files, dry_run) -> None:
    """Remove finished jobs (by id or name, or every job a filter matches) with their metrics and
    artifacts; --files deletes their run folders too. Queued and running jobs are never removed
    (cancel them first), nor jobs that queued or running jobs wait for.

    \b
    Example:
      sched rm --status failed --status cancelled --dry-run
      sched rm old-probe-3 old-probe-4 --files
    """
    from rich.text import Text

    from ..fmt import visible

    if not jobs and not (statuses or tags or kinds or name_glob or since):
        raise SchedError("name the jobs to remove, or select them with --status/--tag/--kind/--name/--since")
    queue = open_queue(ctx)
    chosen = [queue.resolve(ref) for ref in jobs]
    if statuses or tags or kinds or name_glob or since:
        _, rows = _find(ctx, statuses, tags, kinds, name_glob, since)
        if not rows:
            raise SchedError(f"no job matches {_described(statuses, tags, kinds, name_glob, since)}")
        chosen += [row.id for row in rows]
    chosen = list(dict.fromkeys(chosen))
    if dry_run:
        for job_id in chosen:
            row = queue.get(job_id)
            console.print(Text(f"would remove {row.id} '{visible(row.name)}' ({row.status})"))
        return
    if files:
        _check_folders([queue.get(job_id) for job_id in chosen])  # before any row goes
    removed = queue.remove(chosen)
    folders = _remove_folders(removed, queue) if files else 0
    console.print(Text(f"removed {len(removed)} job(s)" + (f" and {folders} run folder(s)" if files else "")))


def _check_folders(rows) -> None:
    """Refuse (removing nothing) when a run folder to delete is a symbolic link: rmtree would
    fail on it halfway, after the job's row was gone, or delete where it points."""
    from pathlib import Path

    for row in rows:
        if row.output_dir and row.reused_from is None and Path(row.output_dir).is_symlink():
            raise SchedError(f"the run folder of job {row.id} ({row.output_dir}) is a symbolic link: not "
                             "removing anything; delete the link yourself, then run sched rm again")


def _remove_folders(rows, queue) -> int:
    """Delete the run folders of removed jobs; only folders named like a run folder of that job."""
    import shutil
    from pathlib import Path

    from ..jobqueue import run_folder_name

    count = 0
    for row in rows:
        if not row.output_dir or row.reused_from is not None:
            continue  # a reused result's folder belongs to the job it reused
        folder = Path(row.output_dir)
        if folder.name == run_folder_name(row.id, row.name) and folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder)
            count += 1
    return count


@click.command()
@click.argument("first", shell_complete=complete_job)
@click.argument("second", shell_complete=complete_job)
@click.option("--all", "show_all", is_flag=True, help="Also list what the two jobs share (default: only with few rows).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def diff(ctx: click.Context, first: str, second: str, show_all: bool, as_json: bool) -> None:
    """Show two jobs side by side (by id or name): settings, params, results; what differs first.

    \b
    Example:
      sched diff finetune-klue/bert-base finetune-klue/roberta-base
      sched diff 12 31 --json | jq '.rows[] | select(.same | not)'
    """
    from ..render import diff_table
    from ..views import job_diff

    found = job_diff(open_queue(ctx), first, second)
    if as_json:
        click.echo(json.dumps(found, indent=1, ensure_ascii=False, default=str))
        return
    show_same = show_all or len(found["rows"]) <= DIFF_SHOW_ALL
    console.print(diff_table(found, width=console.width, show_same=show_same))


DIFF_SHOW_ALL = 30  # rows: fewer than this and the shared ones are listed too

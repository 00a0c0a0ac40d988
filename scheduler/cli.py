"""The `sched` command line. Commands are thin: parse, call the queue, render.

Nothing here imports torch or transformers (8-10 s to import): `sched status` must answer at once.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from pathlib import Path

import click
from rich.console import Console
from sqlalchemy.exc import SQLAlchemyError

from .errors import SchedError

console = Console()
err_console = Console(stderr=True)


class SchedGroup(click.Group):
    """Prints a user-facing error as one line and exits 1; the traceback only with -v."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (SchedError, SQLAlchemyError, OSError) as exc:
            if ctx.obj and ctx.obj.get("verbose"):
                traceback.print_exc()
            message = str(exc).splitlines()[0] if isinstance(exc, SQLAlchemyError) else str(exc)
            err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
            sys.exit(1)


def _queue(ctx: click.Context):
    from .jobqueue import JobQueue

    if "queue" not in ctx.obj:
        ctx.obj["queue"] = JobQueue(ctx.obj["db"])
    return ctx.obj["queue"]


def _setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        datefmt="[%X]", handlers=[RichHandler(console=err_console, show_path=False)])
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


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
    from .db import resolve_url

    ctx.ensure_object(dict)
    ctx.obj.update(db=resolve_url(db), verbose=verbose)


@cli.command()
@click.pass_context
def init(ctx: click.Context) -> None:
    """Create the queue's tables (every command does this on first use).

    \b
    Example:
      sched --db postgresql://postgres@db-host/experiments init
    """
    queue = _queue(ctx)
    console.print(f"queue ready at {queue.engine.url.render_as_string(hide_password=True)}")


@cli.command()
@click.argument("queue_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Show the expanded plan and check it; submit nothing.")
@click.option("--var", "variables", multiple=True, metavar="KEY=VALUE", help="Set or override a {var}.")
@click.pass_context
def submit(ctx: click.Context, queue_file: Path, dry_run: bool, variables: tuple[str, ...]) -> None:
    """Submit every job of a queue file, all or nothing.

    \b
    Example:
      sched submit queue.yaml --dry-run
      sched submit queue.yaml --var train=data/reviews_train.csv
    """
    from .plan import load_plan
    from .render import plan_table

    specs = load_plan(queue_file, dict(_parse_pairs(variables, "--var")))
    queue = _queue(ctx)
    ids = queue.submit(specs, dry_run=dry_run)
    console.print(plan_table(specs, title="Plan (dry run, nothing submitted)" if dry_run else "Submitted",
                             width=console.width))
    if not dry_run:
        console.print(f"submitted {len(ids)} job(s): ids {ids[0]}..{ids[-1]}")


def _parse_pairs(pairs: tuple[str, ...], flag: str) -> list[tuple[str, object]]:
    import yaml

    parsed = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SchedError(f"{flag} takes KEY=VALUE, got '{pair}'")
        # YAML typing: 3 -> int, 2e-5 -> float, true -> bool, [a, b] -> list; else a string.
        parsed.append((key, yaml.safe_load(value) if value else ""))
    return parsed


@cli.command()
@click.argument("kind")
@click.option("--name", required=True, help="Unique job name.")
@click.option("--priority", default=0, show_default=True, help="Higher runs first.")
@click.option("--gpus", default=0, show_default=True, type=click.IntRange(0, 1), help="1: needs a GPU slot.")
@click.option("--after", multiple=True, help="A job that must succeed first (repeatable).")
@click.option("--max-attempts", default=1, show_default=True, type=click.IntRange(1))
@click.option("--timeout", default=None, help="Kill after this long: seconds, 30m, 2h.")
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable).")
@click.option("--preemptible", is_flag=True, help="May yield its slot to a higher-priority job.")
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE",
              help="A job parameter; VALUE is read as YAML (numbers, lists).")
@click.pass_context
def add(ctx, kind, name, priority, gpus, after, max_attempts, timeout, tags, preemptible, params) -> None:
    """Add one job.

    \b
    Example:
      sched add shell --name smi --gpus 1 -p 'argv=[nvidia-smi]'
      sched add echo --name hello --priority 5 -p message=hi
    """
    from .plan import build_plan

    entry = {"name": name, "kind": kind, "priority": priority, "gpus": gpus, "after": list(after),
             "max_attempts": max_attempts, "timeout": timeout, "tags": list(tags),
             "preemptible": preemptible, "params": dict(_parse_pairs(params, "-p"))}
    specs = build_plan({"jobs": [entry]}, where="sched add")
    job_id = _queue(ctx).submit(specs)[0]
    console.print(f"added job {job_id} '{name}' ({kind}, priority {priority})")


@cli.command()
@click.option("--gpus", default="auto", show_default=True,
              help="GPU indices like 0,1 (one slot each), auto (NVML), or none (CPU slots).")
@click.option("--cpu-slots", default=1, show_default=True, help="Slots when there is no GPU.")
@click.option("--until-empty", is_flag=True, help="Exit once no job is left to run.")
@click.option("--max-jobs", type=click.IntRange(1), default=None, help="Exit after this many jobs.")
@click.option("--runs", default="runs", show_default=True, envvar="SCHED_RUNS",
              type=click.Path(file_okay=False, path_type=Path), help="Folder for job run folders.")
@click.option("--lease", default=60.0, show_default=True, help="Seconds a job's lease lasts without a heartbeat.")
@click.option("--heartbeat", default=10.0, show_default=True, help="Seconds between heartbeats.")
@click.option("--grace", default=10.0, show_default=True, help="Seconds a stopping job gets before SIGKILL.")
@click.pass_context
def worker(ctx, gpus, cpu_slots, until_empty, max_jobs, runs, lease, heartbeat, grace) -> None:
    """Run jobs from the queue: one slot per GPU, one child process per job.

    SIGTERM or Ctrl-C stops claiming, asks running jobs to stop and queues them again.

    \b
    Example:
      sched worker --gpus 0,1
      sched worker --gpus none --until-empty
    """
    from .slots import parse_slots
    from .worker import WorkerLoop, WorkerOptions

    if heartbeat >= lease:
        raise SchedError(f"--heartbeat ({heartbeat}s) must be shorter than --lease ({lease}s)")
    _setup_logging(ctx.obj["verbose"])
    options = WorkerOptions(runs_root=runs, lease_s=lease, heartbeat_s=heartbeat, stop_grace_s=grace,
                            max_jobs=max_jobs, reaper_s=max(1.0, lease / 4))
    WorkerLoop(_queue(ctx), parse_slots(gpus, cpu_slots), options).run(until_empty=until_empty)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON snapshot for scripts.")
@click.option("--watch", is_flag=True, help="Refresh live until Ctrl-C.")
@click.option("--interval", default=2.0, show_default=True, help="Seconds between refreshes with --watch.")
@click.option("--limit", default=1000, show_default=True, help="Most recent jobs listed under `jobs` in --json.")
@click.pass_context
def status(ctx: click.Context, as_json: bool, watch: bool, interval: float, limit: int) -> None:
    """Show workers and GPUs, running jobs, the queue in claim order and why each job waits,
    recent endings and failures.

    \b
    Example:
      sched status --watch
      sched status --json | jq '.counts'
    """
    from .render import status_view
    from .views import status_snapshot

    queue = _queue(ctx)
    if as_json:
        snap = status_snapshot(queue, all_jobs=True, jobs_limit=limit)
        click.echo(json.dumps(snap, indent=1, ensure_ascii=False))
    elif watch:
        from rich.live import Live

        with Live(status_view(status_snapshot(queue, all_jobs=False)), console=console,
                  auto_refresh=False, screen=False) as live:
            try:
                while True:
                    time.sleep(interval)
                    live.update(status_view(status_snapshot(queue, all_jobs=False)), refresh=True)
            except KeyboardInterrupt:
                pass
    else:
        console.print(status_view(status_snapshot(queue, all_jobs=False)))


@cli.command()
@click.argument("job")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def show(ctx: click.Context, job: str, as_json: bool) -> None:
    """Show one job (by id or name): state, params, metrics, artifacts.

    \b
    Example:
      sched show finetune-klue/bert-base
    """
    from .render import job_view
    from .views import job_detail

    detail = job_detail(_queue(ctx), job)
    if as_json:
        click.echo(json.dumps(detail, indent=1, ensure_ascii=False))
    else:
        console.print(job_view(detail))


@cli.command()
@click.argument("job")
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the job ends.")
@click.option("-n", "--lines", default=0, help="Only the last N lines (0: all).")
@click.pass_context
def logs(ctx: click.Context, job: str, follow: bool, lines: int) -> None:
    """Print a job's log (stdout and stderr of every attempt).

    \b
    Example:
      sched logs 42 -f
    """
    queue = _queue(ctx)
    row = queue.get(job)
    if not row.log_path:
        raise SchedError(f"job {row.id} ('{row.name}') has not started yet: no log")
    path = Path(row.log_path)
    if not path.exists():
        raise SchedError(f"log file {path} of job {row.id} is not on this host")
    with open(path, encoding="utf-8", errors="replace") as fh:
        text = fh.read()
        shown = text.splitlines(keepends=True)[-lines:] if lines else [text]
        click.echo("".join(shown), nl=False)
        while follow:
            chunk = fh.read()
            if chunk:
                click.echo(chunk, nl=False)
            elif queue.get(row.id).status != "running":
                break
            else:
                time.sleep(0.5)


@cli.command()
@click.argument("jobs", nargs=-1, required=True)
@click.pass_context
def cancel(ctx: click.Context, jobs: tuple[str, ...]) -> None:
    """Cancel jobs: queued ones at once, running ones are killed by their worker.

    \b
    Example:
      sched cancel 12 13 tune-roberta
    """
    queue = _queue(ctx)
    for ref in jobs:
        job_id = queue.resolve(ref)
        result = queue.cancel(job_id)
        console.print(f"job {job_id}: " + ("cancelled" if result == "cancelled" else
                                           "cancel requested; its worker will stop it"))


@cli.command()
@click.argument("jobs", nargs=-1, required=True)
@click.pass_context
def retry(ctx: click.Context, jobs: tuple[str, ...]) -> None:
    """Queue failed, killed, lost or cancelled jobs again (and their upstream_failed dependents).

    \b
    Example:
      sched retry finetune-klue/bert-base
    """
    queue = _queue(ctx)
    for ref in jobs:
        requeued = queue.retry(queue.resolve(ref))
        console.print(f"queued again: job(s) {', '.join(map(str, requeued))}")


@cli.command()
@click.argument("job")
@click.argument("priority", type=int)
@click.pass_context
def priority(ctx: click.Context, job: str, priority: int) -> None:
    """Change a job's priority (higher runs first).

    \b
    Example:
      sched priority tune-roberta -- -10
    """
    queue = _queue(ctx)
    job_id = queue.resolve(job)
    queue.reprioritize(job_id, priority)
    console.print(f"job {job_id}: priority {priority}")


@cli.command()
@click.pass_context
def drain(ctx: click.Context) -> None:
    """Let workers finish their current jobs and claim no new one.

    \b
    Example:
      sched drain   # before a reboot; then: sched resume
    """
    _queue(ctx).drain()
    console.print("drained: workers take no new job until `sched resume`")


@cli.command()
@click.pass_context
def resume(ctx: click.Context) -> None:
    """Let workers claim jobs again after `sched drain`.

    \b
    Example:
      sched resume
    """
    _queue(ctx).resume()
    console.print("resumed: workers claim jobs again")


@cli.group()
def cron() -> None:
    """Scheduled submissions of a queue file, fired by running workers (once each, however many).

    \b
    Example:
      sched cron add "0 2 * * *" nightly.yaml --name nightly
      sched cron list
      sched cron rm nightly
    """


@cron.command("add")
@click.argument("expression")
@click.argument("queue_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--name", default=None, help="Name of the schedule (default: the file's name).")
@click.pass_context
def cron_add(ctx: click.Context, expression: str, queue_file: Path, name: str | None) -> None:
    """Submit QUEUE_FILE on a cron schedule (UTC). The file may use {date}, {time}, {fire_time}, {cron}.

    \b
    Example:
      sched cron add "0 2 * * *" nightly.yaml --name nightly
    """
    from .cron import add_cron

    added = add_cron(_queue(ctx), expression, queue_file, name)
    console.print(f"cron '{added['name']}' ({expression}, UTC) submits {added['file']}; "
                  f"next run {added['next_run']:%Y-%m-%d %H:%M} UTC")


@cron.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def cron_list(ctx: click.Context, as_json: bool) -> None:
    """List the schedules with their next run and last result.

    \b
    Example:
      sched cron list
    """
    from rich.table import Table

    from .cron import list_crons

    crons = list_crons(_queue(ctx))
    if as_json:
        click.echo(json.dumps(crons, indent=1))
        return
    table = Table(title="Scheduled submissions (UTC)", title_justify="left")
    for col in ("name", "cron", "file", "next run", "last fire", "last result"):
        table.add_column(col, overflow="fold")
    for c in crons:
        table.add_row(c["name"], c["expression"], c["file"], c["next_run"] or "", c["last_fire"] or "",
                      c["last_result"] or "")
    console.print(table)


@cron.command("rm")
@click.argument("name")
@click.pass_context
def cron_rm(ctx: click.Context, name: str) -> None:
    """Remove a schedule (jobs it already submitted stay).

    \b
    Example:
      sched cron rm nightly
    """
    from .cron import remove_cron

    remove_cron(_queue(ctx), name)
    console.print(f"cron '{name}' removed")


@cli.command()
def kinds() -> None:
    """List the job kinds and their parameters.

    \b
    Example:
      sched kinds
    """
    from rich.table import Table

    from jobs import get_kind, kind_names

    table = Table(title="Job kinds", title_justify="left")
    table.add_column("kind")
    table.add_column("params")
    for name in kind_names():
        fields = get_kind(name).params_model.model_fields
        table.add_row(name, ", ".join(f"{k}{'' if f.is_required() else '?'}" for k, f in fields.items()))
    console.print(table)


@cli.command()
@click.option("--runs", default="runs", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.pass_context
def demo(ctx: click.Context, runs: Path) -> None:
    """Run the demo campaign on this machine (CPU) and show the result.

    \b
    Example:
      sched demo && sched status
    """
    from .demo import run_demo

    _setup_logging(ctx.obj["verbose"])
    run_demo(_queue(ctx), runs, console)


def _register_commands() -> None:
    """Commands that live in their own modules (scheduler/commands/)."""
    from .commands.report import report
    from .commands.results import results
    from .commands.study import study

    cli.add_command(results)
    cli.add_command(report)
    cli.add_command(study)


_register_commands()


def main() -> None:
    cli(prog_name="sched")


if __name__ == "__main__":
    main()

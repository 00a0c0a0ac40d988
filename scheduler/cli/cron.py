"""`sched cron`: scheduled submissions of a queue file, fired by running workers."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .app import console, open_queue


@click.group()
def cron() -> None:
    """Scheduled submissions of a queue file, fired by running workers (once each, however many).

    \b
    Example:
      sched cron add "0 2 * * *" nightly.yaml --name nightly
      sched cron list          (or: sched cron ls)
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
    from rich.text import Text

    from ..cron import add_cron

    added = add_cron(open_queue(ctx, create=True), expression, queue_file, name)
    console.print(Text(f"cron '{added['name']}' ({expression}, UTC) submits {added['file']}; "
                       f"next run {added['next_run']:%Y-%m-%d %H:%M} UTC"))


@cron.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def cron_list(ctx: click.Context, as_json: bool) -> None:
    """List the schedules with their next run and last result (also: sched cron ls).

    \b
    Example:
      sched cron list
    """
    from ..cron import list_crons
    from ..render import cron_table

    crons = list_crons(open_queue(ctx))
    if as_json:
        click.echo(json.dumps(crons, indent=1))
        return
    console.print(cron_table(crons, width=console.width))


cron.add_command(cron_list, "ls")  # as `sched ls` lists jobs


@cron.command("rm")
@click.argument("name")
@click.pass_context
def cron_rm(ctx: click.Context, name: str) -> None:
    """Remove a schedule (jobs it already submitted stay).

    \b
    Example:
      sched cron rm nightly
    """
    from rich.text import Text

    from ..cron import remove_cron

    remove_cron(open_queue(ctx), name)
    console.print(Text(f"cron '{name}' removed"))

"""`sched submit` and `sched add`: put jobs in the queue."""

from __future__ import annotations

from pathlib import Path

import click

from .app import console, open_queue, parse_pairs


@click.command()
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
    from ..plan import load_plan
    from ..render import plan_table

    specs = load_plan(queue_file, dict(parse_pairs(variables, "--var")))
    ids = open_queue(ctx).submit(specs, dry_run=dry_run)
    console.print(plan_table(specs, title="Plan (dry run, nothing submitted)" if dry_run else "Submitted",
                             width=console.width))
    if not dry_run:
        console.print(f"submitted {len(ids)} job(s): ids {ids[0]}..{ids[-1]}")


@click.command()
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
    from rich.text import Text

    from ..plan import build_plan

    entry = {"name": name, "kind": kind, "priority": priority, "gpus": gpus, "after": list(after),
             "max_attempts": max_attempts, "timeout": timeout, "tags": list(tags),
             "preemptible": preemptible, "params": dict(parse_pairs(params, "-p"))}
    specs = build_plan({"jobs": [entry]}, where="sched add")
    job_id = open_queue(ctx).submit(specs)[0]
    console.print(Text(f"added job {job_id} '{name}' ({kind}, priority {priority})"))

"""`sched submit` and `sched add`: put jobs in the queue."""

from __future__ import annotations

from pathlib import Path

import click

from .app import console, open_queue, parse_pairs

PLAN_ROWS = 60  # a longer plan lists the jobs it changes and its first jobs, then a count


@click.command()
@click.argument("queue_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Show what submitting would do to each job; change nothing.")
@click.option("--var", "variables", multiple=True, metavar="KEY=VALUE", help="Set or override a {var}.")
@click.option("--no-check", is_flag=True, help="Skip the input checks (files, columns, labels, models).")
@click.option("--rerun-changed", is_flag=True,
              help="Queue changed jobs that already ran again (the old one stays as NAME@ID).")
@click.option("--reuse", is_flag=True, help="A new job with the same inputs as a succeeded one takes its results.")
@click.option("--all", "list_all", is_flag=True,
              help=f"List every job; by default a plan of over {PLAN_ROWS} jobs lists the ones it changes, "
                   "then the first, then a count.")
@click.pass_context
def submit(ctx: click.Context, queue_file: Path, dry_run: bool, variables: tuple[str, ...], no_check: bool,
           rerun_changed: bool, reuse: bool, list_all: bool) -> None:
    """Submit every job of a queue file, all or nothing.

    Submitting an edited file again compares it with the queue job by job: new jobs are added,
    unchanged ones left alone, changed ones that never started replaced; changed ones that ran
    are refused unless --rerun-changed. --dry-run prints that plan.

    \b
    Example:
      sched submit queue.yaml --dry-run
      sched submit queue.yaml --var train=data/reviews_train.csv
      sched submit queue.yaml --rerun-changed
    """
    from ..plan import load_plan

    specs = load_plan(queue_file, dict(parse_pairs(variables, "--var")))
    _submit(ctx, specs, dry_run=dry_run, check=not no_check, rerun_changed=rerun_changed, reuse=reuse,
            title="Plan (dry run, nothing submitted)" if dry_run else "Submitted",
            limit=None if list_all else PLAN_ROWS)


def _submit(ctx, specs, *, dry_run: bool, check: bool, rerun_changed: bool, reuse: bool, title: str,
            limit: int | None = None):
    from ..render import plan_changes, plan_summary, plan_table
    from ..submission import preflight

    queue = open_queue(ctx, create=True)
    notes = preflight(queue, specs) if check else []
    preview = _deadline_preview if dry_run and any(s.campaign_spec and s.campaign_spec.deadline_text
                                                   for s in specs) else None
    plan = queue.plan(specs, dry_run=dry_run, rerun_changed=rerun_changed, reuse=reuse, preview=preview)
    console.print(plan_table(specs, title=title, width=console.width, plan=plan, limit=limit))
    for line in plan_changes(plan):
        console.print(line, soft_wrap=True)
    for note in notes:
        console.print(f"note: {note}", style="yellow", markup=False, highlight=False)
    console.print(plan_summary(plan))
    for refused in plan.refused:  # only a dry run gets here with refusals
        console.print(f"refused: '{refused.spec.name}': {refused.why}", style="bold red", markup=False,
                      highlight=False)
    for line in plan.preview or []:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    if plan.refused:
        ctx.exit(1)
    return plan


def _deadline_preview(conn) -> list[str]:
    """The deadline forecast of the queue as the dry run would leave it: each campaign's outlook."""
    from ..deadline.planner import load_forecast
    from ..deadline.verdict import campaign_line
    from ..store.engine import db_now

    found = load_forecast(conn, db_now(conn))
    if found is None:
        return []
    lines = [f"Forecast: {campaign_line(found, c.name)}" for c in found.campaigns]
    return lines + ([found.workers_note] if found.workers_note else [])


@click.command()
@click.argument("kind")
@click.option("--name", required=True, help="Unique job name.")
@click.option("--priority", default=0, show_default=True, help="Higher runs first.")
@click.option("--gpus", default=None, type=click.IntRange(0, 64),
              help="GPUs it needs, all on one worker [default: the kind's: 1 for ML kinds, else 0].")
@click.option("--gpu-memory", default=None, metavar="SIZE",
              help="A 1-GPU job may share its GPU: its size (20GiB) or auto (the peak its like reached).")
@click.option("--after", multiple=True, help="A job that must succeed first (repeatable).")
@click.option("--max-attempts", default=1, show_default=True, type=click.IntRange(1))
@click.option("--timeout", default=None, help="Kill after this long: seconds, 30m, 2h.")
@click.option("--retry-delay", default=None, metavar="DURATION",
              help="Wait before a retry (doubled for each further one): 0, 30s, 5m [default: 30s].")
@click.option("--not-before", default=None, metavar="TIME",
              help='Not started before this time: "2026-12-01 03:00" (UTC) or a duration from now (2h).')
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable).")
@click.option("--preemptible", is_flag=True, help="May yield its slot to a higher-priority job.")
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE",
              help="A job parameter; VALUE is read as YAML (numbers, lists).")
@click.option("--no-check", is_flag=True, help="Skip the input checks (files, columns, labels, models).")
@click.pass_context
def add(ctx, kind, name, priority, gpus, gpu_memory, after, max_attempts, timeout, retry_delay, not_before, tags,
        preemptible, params, no_check) -> None:
    """Add one job.

    \b
    Example:
      sched add shell --name smi --gpus 1 -p 'argv=[nvidia-smi]'
      sched add echo --name hello --priority 5 -p message=hi
    """
    from rich.text import Text

    from ..fmt import visible
    from ..resources import gpu_request_text
    from ..plan import build_plan
    from ..submission import preflight

    entry = {"name": name, "kind": kind, "priority": priority, "gpus": gpus, "gpu_memory": gpu_memory,
             "after": list(after),
             "max_attempts": max_attempts, "timeout": timeout, "tags": list(tags),
             "retry_delay": retry_delay, "not_before": not_before,
             "preemptible": preemptible, "params": dict(parse_pairs(params, "-p"))}
    specs = build_plan({"jobs": [entry]}, where="sched add")
    specs[0].source = "sched add"
    queue = open_queue(ctx, create=True)
    notes = [] if no_check else preflight(queue, specs)
    planned = queue.plan(specs).jobs[0]
    for note in notes:
        console.print(Text(f"note: {visible(note)}", style="yellow"))
    verb = {"same": "already queued, unchanged:", "replace": "replaced queued job"}.get(planned.action, "added job")
    spec = specs[0]
    needs = f", {gpu_request_text(spec.gpus, spec.gpu_memory_mib, spec.gpu_memory_auto)}" if spec.gpus else ""
    console.print(Text(f"{verb} {planned.job_id} '{visible(name)}' ({kind}, priority {priority}{needs})"))

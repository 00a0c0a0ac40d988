"""`sched forecast`: when each job is expected to start and end, against its campaign's deadline."""

from __future__ import annotations

import json

import click

from ..errors import SchedError
from .app import console, open_queue


@click.command()
@click.argument("campaign", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--errors", is_flag=True, help="How far estimates were from the durations of jobs that ran.")
@click.option("--assume-gpus", type=click.IntRange(0, 64), default=None,
              help="With no worker up: forecast for one worker with this many GPUs (default 1).")
@click.pass_context
def forecast(ctx: click.Context, campaign: str | None, as_json: bool, errors: bool, assume_gpus: int | None) -> None:
    """List every unfinished job (of CAMPAIGN) with its expected start and end, where its
    duration estimate comes from (progress, history, expected, unknown), and whether it is on a
    deliverable's path; then each campaign's outlook against its deadline.

    The queue is replayed on the workers that are up, in claim order, with the workers' own GPU
    placement (docs/deadlines.md). Times are UTC.

    \b
    Example:
      sched forecast nsmc4
      sched forecast --errors
    """
    from ..deadline.planner import estimate_errors, load_forecast
    from ..deadline.replay import WorkerShape

    queue = open_queue(ctx)
    with queue.read() as conn:
        if errors:
            _print_errors(estimate_errors(conn), as_json)
            return
        assume = None if assume_gpus is None else WorkerShape([None] * assume_gpus, 1, "assumed")
        found = load_forecast(conn, queue.clock.now(conn), assume=assume, everything=True)
    if campaign is not None and campaign not in {r.campaign for r in found.rows.values()} \
            and campaign not in found.deadlines:
        known = sorted({r.campaign for r in found.rows.values() if r.campaign} | set(found.deadlines))
        raise SchedError(f"no unfinished job of campaign '{campaign}' (campaigns: {', '.join(known) or 'none'})")
    _print_forecast(found, campaign, as_json)


def _print_forecast(found, campaign: str | None, as_json: bool) -> None:
    from ..deadline.verdict import campaign_json, campaign_line, job_rows

    rows = job_rows(found, campaign)
    names = [c.name for c in found.campaigns if campaign in (None, c.name)]
    if as_json:
        click.echo(json.dumps({"now": found.now.isoformat(timespec="seconds"), "workers": found.workers_note,
                               "jobs": rows, "campaigns": [campaign_json(found, n) for n in names]},
                              indent=1, ensure_ascii=False))
        return
    from ..render import forecast_table

    console.print(forecast_table(rows, found.now, width=console.width))
    if found.workers_note:
        console.print(found.workers_note)
    for name in names:
        console.print(campaign_line(found, name), highlight=False)


def _print_errors(rows: list[dict], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(rows, indent=1, ensure_ascii=False))
        return
    from ..render import estimate_error_table

    console.print(estimate_error_table(rows, width=console.width))

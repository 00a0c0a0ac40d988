"""`sched results`: the leaderboard of every model and ensemble (thin: parse, call, render)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import SchedError
from .app import console, open_queue


@click.command()
@click.option("--sort", default=None, metavar="COLUMN",
              help="Sort by a column (default: the first score, e.g. val_accuracy); --json lists them all.")
@click.option("--asc/--desc", "ascending", default=None,
              help="Sort order (default: numbers high to low, names A to Z; empty values last).")
@click.option("--tag", default=None, help="Only jobs carrying this tag.")
@click.option("--kind", default=None, help="Only jobs of this kind (all of them, scored or not).")
@click.option("--status", default=None, help="Only jobs in this state, e.g. succeeded.")
@click.option("--limit", "-n", type=click.IntRange(1), default=None, help="Only the first N rows.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as a JSON list.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="PATH", help="Also write the rows to a CSV file.")
@click.pass_context
def results(ctx: click.Context, sort, ascending, tag, kind, status, limit, as_json, csv_path) -> None:
    """Leaderboard of every model and ensemble: validation scores, epochs, time, key params.

    \b
    Example:
      sched results
      sched results --tag round2 --sort val_f1 --csv results.csv
      sched results --kind ensemble --json | jq '.[0]'
    """
    from ..render import results_table
    from ..results import leaderboard
    from ..store.states import ALL_STATES

    if status is not None and status not in ALL_STATES:
        raise SchedError(f"unknown state {status!r}; states: {', '.join(ALL_STATES)}")
    rows = leaderboard(open_queue(ctx), tag=tag, kind=kind, sort=sort, status=status, limit=limit,
                       descending=None if ascending is None else not ascending)
    filters = " ".join(f"--{k} {v}" for k, v in (("tag", tag), ("kind", kind), ("status", status)) if v)
    if not rows and filters:
        raise SchedError(f"no job on the leaderboard matches {filters}")
    if csv_path is not None:
        _write_csv(rows, csv_path)
    if as_json:
        click.echo(json.dumps(rows, indent=1, ensure_ascii=False))
    else:
        console.print(results_table(rows, sort, width=console.width))
        if csv_path is not None:
            console.print(f"wrote {len(rows)} row(s) to {csv_path}", markup=False, highlight=False)


def _write_csv(rows: list[dict], path: Path) -> None:
    import pandas as pd

    from ..results import columns

    frame = pd.DataFrame(rows, columns=list(columns()))
    frame["tags"] = frame["tags"].map(lambda tags: ",".join(tags))
    try:
        frame.to_csv(path, index=False)
    except OSError as exc:
        raise SchedError(f"cannot write {path}: {exc.strerror or exc}") from None

"""`sched results`: the leaderboard of every model and ensemble (thin: parse, call, render)."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from ..errors import SchedError
from ..render import _duration, _state
from ..results import COLUMNS, KEY_PARAMS, leaderboard


@click.command()
@click.option("--sort", default="val_accuracy", show_default=True, metavar="COLUMN",
              help=f"Sort by a column: {', '.join(COLUMNS)}.")
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
    from ..cli import _queue, console

    rows = leaderboard(_queue(ctx), tag=tag, kind=kind, sort=sort, status=status, limit=limit,
                       descending=None if ascending is None else not ascending)
    if csv_path is not None:
        _write_csv(rows, csv_path)
    if as_json:
        click.echo(json.dumps(rows, indent=1, ensure_ascii=False))
    else:
        console.print(results_table(rows, sort))
        if csv_path is not None:
            console.print(f"wrote {len(rows)} row(s) to {csv_path}")


def _write_csv(rows: list[dict], path: Path) -> None:
    import pandas as pd

    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame["tags"] = frame["tags"].map(lambda tags: ",".join(tags))
    try:
        frame.to_csv(path, index=False)
    except OSError as exc:
        raise SchedError(f"cannot write {path}: {exc.strerror or exc}") from None


# Short labels for the params column of the table (the JSON and CSV use the full names).
SHORT = {"batch_size": "bs", "max_length": "len", "focal_gamma": "focal", "label_smoothing": "smooth",
         "swa_epochs": "swa"}


def results_table(rows: list[dict], sort: str) -> Table:
    # Only the key params that differ between the rows shown get into the table: on a leaderboard
    # the differences explain the ranking. The rest goes in the caption; --json/--csv have all.
    values = {k: {_number(r[k]) for r in rows if r[k] is not None} for k in KEY_PARAMS}
    varying = [k for k in KEY_PARAMS if len(values[k]) > 1]
    same = [f"{SHORT.get(k, k)}={next(iter(values[k]))}" for k in KEY_PARAMS if len(values[k]) == 1]
    table = Table(title=f"Results ({len(rows)} jobs, by {sort})", title_justify="left",
                  caption=f"same for every job that has it: {' '.join(same)}" if same else None,
                  caption_justify="left")
    table.add_column("#", justify="right")
    table.add_column("job", overflow="fold")
    table.add_column("kind")
    table.add_column("model", overflow="fold", max_width=28)
    # Scores never shrink into an ellipsis.
    table.add_column("val acc", justify="right", no_wrap=True, min_width=6)
    table.add_column("val F1", justify="right", no_wrap=True, min_width=6)
    table.add_column("epochs", justify="right")
    table.add_column("time", justify="right")
    table.add_column("params", overflow="fold")
    table.add_column("status")
    for i, r in enumerate(rows, 1):
        params = " ".join(f"{SHORT.get(k, k)}={_number(r[k])}" for k in varying if r[k] is not None)
        table.add_row(str(i), r["job"], r["kind"], r["model"] or "", _score(r["val_accuracy"]),
                      _score(r["val_f1"]), _number(r["epochs"]), _duration(r["duration_s"]), params,
                      _state(r["status"]))
    if not rows:
        table.add_row("", Text("no models yet (submit finetune or ensemble jobs)", style="dim"),
                      *[""] * (len(table.columns) - 2))
    return table


def _score(value) -> str:
    return "" if value is None else f"{value:.4f}"


def _number(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)

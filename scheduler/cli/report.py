"""`sched report`: one self-contained HTML file of a campaign (thin: parse, call, print the path)."""

from __future__ import annotations

from pathlib import Path

import click

from .app import console, open_queue


@click.command()
@click.option("--out", "-o", "out", default="report.html", show_default=True, metavar="PATH",
              type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the HTML file (a new or a regular file; its folder must exist).")
@click.option("--tag", default=None, help="Only jobs carrying this tag (and the studies of tagged jobs).")
@click.pass_context
def report(ctx: click.Context, out: Path, tag: str | None) -> None:
    """Write one HTML file: GPU timeline, leaderboard, training curves, tuning studies.

    The file holds everything (charts as embedded images, no scripts or fonts from the
    network), so it opens offline and can be mailed or archived as is.

    \b
    Example:
      sched report
      sched report --tag round2 --out round2.html
    """
    from ..errors import SchedError
    from ..report import check_out_path, write_report

    check_out_path(out)
    if not out.absolute().parent.is_dir():
        # A mistyped --out should be an error, not a new tree of folders wherever it points.
        raise SchedError(f"cannot write the report to {out}: no folder {out.parent} (sched report creates none)")
    queue = open_queue(ctx)
    if tag is not None and not queue.has_tag(tag):
        raise SchedError(f"no job carries the tag {tag!r}; no report written")
    summary = write_report(queue, out, tag=tag)
    lanes = len({row["lane"] for row in summary.timeline_rows})
    say = dict(highlight=False, soft_wrap=True, markup=False)
    console.print(f"wrote {summary.path.resolve()}", **say)
    console.print(f"{summary.jobs} job(s); timeline {len(summary.timeline_rows)} job(s) on {lanes} slot(s); "
                  f"{summary.leaderboard_rows} leaderboard row(s); {len(summary.series)} curve series; "
                  f"{len(summary.studies)} study(ies)", **say)
    for note in summary.notes:
        console.print(f"note: {note}", style="dim", **say)

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
@click.option("--serve", is_flag=True,
              help="Serve the report over HTTP instead, rendered again when the queue changes; Ctrl-C stops.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="With --serve: the address to listen on (another than localhost is reachable by others).")
@click.option("--port", default=8265, show_default=True, type=click.IntRange(0, 65535),
              help="With --serve: the port (0: any free one).")
@click.option("--every", default="30s", show_default=True, metavar="DURATION",
              help="With --serve: render again at most this often (seconds, 30s, 2m), when the queue changed.")
@click.pass_context
def report(ctx: click.Context, out: Path, tag: str | None, serve: bool, host: str, port: int, every: str) -> None:
    """Write one HTML file: GPU timeline, leaderboard, training curves, tuning studies.

    The file holds everything (charts as embedded images, no scripts or fonts from the
    network), so it opens offline and can be mailed or archived as is. With --serve the same
    page is served live instead (it reloads itself when the queue changes): watch a campaign
    from a laptop through an SSH tunnel.

    \b
    Example:
      sched report
      sched report --tag round2 --out round2.html
      sched report --serve            # then on the laptop: ssh -L 8265:localhost:8265 gpu-host
    """
    from ..errors import SchedError
    from ..report import check_out_path, write_report

    if serve:
        _serve(ctx, tag, host, port, every)
        return
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


def _serve(ctx: click.Context, tag: str | None, host: str, port: int, every: str) -> None:
    from pipeline.util import parse_duration

    from ..errors import SchedError
    from ..report.live import MIN_EVERY_S, serve

    try:
        every_s = parse_duration(every)
    except ValueError as exc:
        raise SchedError(f"--every: {exc}") from None
    if every_s is None or every_s < MIN_EVERY_S:
        raise SchedError(f"--every: at least {MIN_EVERY_S:g}s, got {every}")
    queue = open_queue(ctx)
    if tag is not None and not queue.has_tag(tag):
        raise SchedError(f"no job carries the tag {tag!r}; nothing to serve")
    try:
        serve(queue, host=host, port=port, every_s=every_s, tag=tag,
              say=lambda line: console.print(line, highlight=False, soft_wrap=True, markup=False))
    except OSError as exc:  # the port is taken, the address is not this host's
        raise SchedError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None

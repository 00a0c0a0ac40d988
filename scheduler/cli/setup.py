"""`sched init` and `sched db`: create the queue's tables, upgrade an older database."""

from __future__ import annotations

import click

from .app import console

PLAIN = dict(highlight=False, markup=False, soft_wrap=True)  # URLs and paths printed as they are


@click.command()
@click.pass_context
def init(ctx: click.Context) -> None:
    """Create the queue's tables (every command does this on first use).

    \b
    Example:
      sched --db postgresql://postgres@db-host/experiments init
    """
    from ..store.engine import shown_url
    from .app import open_queue

    queue = open_queue(ctx, create=True)
    console.print(f"queue ready at {shown_url(queue.engine.url)}", **PLAIN)


@click.group()
def db() -> None:
    """The queue database's schema: its revision, and upgrades.

    \b
    Example:
      sched db current
      sched db upgrade
    """


@db.command("current")
@click.pass_context
def db_current(ctx: click.Context) -> None:
    """Print the database's schema revision and the newest this sched knows (changes nothing).

    \b
    Example:
      sched --db postgresql://postgres@db-host/experiments db current
    """
    from ..store.engine import make_engine, shown_url
    from ..store.migrate import describe

    engine = make_engine(ctx.find_root().obj["db"])
    try:
        console.print(f"{shown_url(engine.url)}: {describe(engine)}", **PLAIN)
    finally:
        engine.dispose()


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Upgrade the database to this sched's schema (SQLite: a backup copy first).

    Every command upgrades an older database when it opens it; this does it on request, e.g.
    before starting workers of a new sched on several hosts.

    \b
    Example:
      sched db upgrade
    """
    from ..store.engine import make_engine, shown_url
    from ..store.migrate import ensure_schema

    engine = make_engine(ctx.find_root().obj["db"])
    try:
        done = ensure_schema(engine)
    finally:
        engine.dispose()
    where = shown_url(engine.url)
    if done.before is None:
        console.print(f"{where}: created at schema revision {done.after}", **PLAIN)
    elif done.changed:
        backup = f" (backup: {done.backup})" if done.backup else ""
        console.print(f"{where}: upgraded from revision {done.before} to {done.after}{backup}", **PLAIN)
    else:
        console.print(f"{where}: already at revision {done.after}", **PLAIN)

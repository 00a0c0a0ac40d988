"""`sched kinds`: the job kinds and their params."""

from __future__ import annotations

import click

from .app import console


@click.command()
def kinds() -> None:
    """List the job kinds, what each does, and their parameters (? marks optional ones).

    \b
    Example:
      sched kinds
    """
    from rich.text import Text

    from jobs import all_kinds

    from ..render import Table

    table = Table(title="Job kinds", title_justify="left")
    table.add_column("kind", no_wrap=True)
    table.add_column("what it does")
    table.add_column("params")
    for kind in all_kinds():
        fields = kind.params_model.model_fields
        table.add_row(Text(kind.name), Text(kind.summary),
                      Text(", ".join(f"{k}{'' if f.is_required() else '?'}" for k, f in fields.items())))
    console.print(table)

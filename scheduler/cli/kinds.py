"""`sched kinds`: the job kinds and their params; `sched kinds KIND`: one kind's params in full."""

from __future__ import annotations

import json

import click

from .app import console


@click.command()
@click.argument("kind", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with KIND: its params, types, defaults, help).")
def kinds(kind: str | None, as_json: bool) -> None:
    """List the job kinds, what each does, and their parameters (? marks optional ones).
    With KIND: that kind's params with their types, defaults and one-line help.

    \b
    Example:
      sched kinds
      sched kinds finetune
      sched kinds finetune --json | jq '.params[] | select(.name == "lr")'
    """
    from rich.text import Text

    from jobs import all_kinds

    from ..render import Table

    if kind is not None:
        _one_kind(kind, as_json)
        return
    if as_json:
        click.echo(json.dumps([{"kind": k.name, "summary": k.summary, "gpus": k.gpus,
                                "params": list(k.params_model.model_fields)} for k in all_kinds()], indent=1))
        return
    table = Table(title="Job kinds", title_justify="left")
    table.add_column("kind", no_wrap=True)
    table.add_column("what it does")
    table.add_column("params")
    for k in all_kinds():
        fields = k.params_model.model_fields
        table.add_row(Text(k.name), Text(k.summary),
                      Text(", ".join(f"{name}{'' if f.is_required() else '?'}" for name, f in fields.items())))
    console.print(table)
    console.print(Text("sched kinds KIND: one kind's params with types, defaults and help", style="dim"))


def _one_kind(name: str, as_json: bool) -> None:
    from rich.text import Text

    from jobs import UnknownKind, all_kinds, get_kind

    from ..errors import SchedError
    from ..paramdocs import closest, kind_docs
    from ..render import Table

    try:
        kind = get_kind(name)
    except UnknownKind:
        names = [k.name for k in all_kinds()]
        guess = closest(name, names)
        hint = f"did you mean {guess}? " if guess else ""
        raise SchedError(f"no job kind '{name}' ({hint}known: {', '.join(names)})") from None
    docs = kind_docs(kind)
    if as_json:
        click.echo(json.dumps({"kind": kind.name, "summary": kind.summary, "gpus": kind.gpus,
                               "multi_gpu": kind.multi_gpu, "params": docs}, indent=1, default=str))
        return
    gpus = f"{kind.gpus} GPU(s) unless the job says" + (", several allowed" if kind.multi_gpu else "")
    console.print(Text.assemble((kind.name, "bold"), f": {kind.summary} ({gpus})"), soft_wrap=True)
    table = Table(title=f"params of {kind.name}", title_justify="left")
    table.add_column("param", no_wrap=True)
    table.add_column("type", overflow="fold")
    table.add_column("default", overflow="fold")
    table.add_column("help")
    for doc in docs:
        default = (Text("required", style="bold") if doc["required"] else
                   Text("(below)", style="dim") if doc["fields_below"] else Text(_shown(doc["default"])))
        table.add_row(Text(doc["name"]), Text(doc["type"]), default, Text(doc["help"]))
    console.print(table)


def _shown(value) -> str:
    if value is None:
        return "None"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, float):
        return f"{value:g}"
    text = json.dumps(value, default=str) if isinstance(value, (dict, list)) else str(value)
    return text if len(text) <= 40 else text[:39] + "…"

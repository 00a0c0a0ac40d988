"""Tables that fit the terminal: columns of low value are left out before anything wraps, free
text is cut with an ellipsis, and job names are compacted rather than broken across lines (the
start all names share is said once, and a name still too long loses its middle, keeping the
distinguishing tail: `demo-…-finetune-beomi/kcbert-base-seed3`).

Widths are in terminal cells (a Korean character takes two), as rich counts them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from rich.cells import cell_len
from rich.table import Table as _RichTable
from rich.text import Text

from .fmt import visible

NEVER_DROP = 100
# Columns kept at least this much are worth more than a job name's full length: names are compacted
# (down to NAME_FLOOR cells) before such a column is dropped (at 80 columns a running job keeps its
# kind, try and ETA).
IMPORTANT = 71
NAME_FLOOR = 22  # cells: with its common start left out, a compacted name keeps its last 14 characters
_SEPARATORS = "-_/.:#@ "
_BORDER = 3  # a column's padding (2) and its border (1); the table adds 1 more


@dataclass
class Column:
    header: str
    keep: int = 50  # when the table is too wide, the columns with the lowest `keep` go first
    justify: str = "left"
    name: bool = False  # job names: compacted to fit, never wrapped, never dropped
    text: bool = False  # free text (reasons, messages): cut with an ellipsis to fit


def _plain(cell) -> str:
    """A cell's text as it will show (control characters already written as escapes)."""
    return cell.plain if isinstance(cell, Text) else visible(cell)


def cut_middle(text: str, width: int) -> str:
    """`text` in at most `width` cells: its start, an ellipsis, and its end (the end gets more)."""
    if cell_len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    head_budget = (width - 1) // 3
    head, used = "", 0
    for ch in text:
        if used + cell_len(ch) > head_budget:
            break
        head, used = head + ch, used + cell_len(ch)
    tail, room = "", width - 1 - used
    for ch in reversed(text):
        if cell_len(ch) > room:
            break
        tail, room = ch + tail, room - cell_len(ch)
    return head + "…" + tail


def cut_left(path: str, width: int) -> str:
    """A path in at most `width` cells, its start replaced by `…` (the file name stays)."""
    if cell_len(path) <= width:
        return path
    parts = path.split(os.sep)
    for i in range(1, len(parts)):
        candidate = "…" + os.sep + os.sep.join(parts[i:])
        if cell_len(candidate) <= width:
            return candidate
    return cut_middle(parts[-1], width)


def common_start(names: list[str]) -> str:
    """The start all `names` share, up to its last separator (empty unless two or more names)."""
    if len(names) < 2:
        return ""
    prefix = os.path.commonprefix(names)
    cut = max(prefix.rfind(sep) for sep in _SEPARATORS)
    return prefix[: cut + 1] if cut >= 0 else ""


def compact_names(names: list[str], width: int) -> tuple[list[str], str]:
    """Names shown in at most `width` cells each, and the common start left out ("" if none).
    The common start is left out only when a name does not fit otherwise."""
    if not names or max(cell_len(n) for n in names) <= width:
        return names, ""
    start = common_start(names)
    if len(start) >= 6 and all(len(n) > len(start) for n in names):
        names = ["…" + n[len(start):] for n in names]
    else:
        start = ""
    return [cut_middle(n, width) for n in names], start


def fit(columns: list[Column], rows: list[list], width: int, *, title: str | None = None,
        caption: str | None = None) -> _RichTable:
    """A rich Table of `rows` (cells: str or Text) in at most `width` cells (see the module)."""
    texts = [[_plain(c) for c in row] for row in rows]
    natural = [max([cell_len(col.header)] + [cell_len(t[i]) for t in texts]) for i, col in enumerate(columns)]
    shown = list(range(len(columns)))

    def total(widths: dict[int, int]) -> int:
        return sum(widths[i] + _BORDER for i in shown) + 1

    widths = dict(enumerate(natural))
    for i, col in enumerate(columns):  # free text first gives up what it must, down to 20 cells
        if col.text and total(widths) > width:
            widths[i] = max(20, natural[i] - (total(widths) - width), cell_len(col.header))
    droppable = sorted((i for i, c in enumerate(columns) if not c.name and c.keep < NEVER_DROP),
                       key=lambda i: columns[i].keep)
    name_cols = [i for i in shown if columns[i].name]

    def drop(candidates) -> None:
        for i in candidates:
            if total(widths) <= width:
                break
            shown.remove(i)

    def shrink_name(floor: int) -> None:
        if name_cols and total(widths) > width:
            i = name_cols[0]
            widths[i] = min(widths[i], max(floor, widths[i] - (total(widths) - width)))

    drop([i for i in droppable if columns[i].keep < IMPORTANT])
    shrink_name(max(NAME_FLOOR, cell_len(columns[name_cols[0]].header)) if name_cols else 0)
    drop([i for i in droppable if columns[i].keep >= IMPORTANT])
    if name_cols and total(widths) < width:  # an important column went after all: names get room back
        i = name_cols[0]
        widths[i] = min(natural[i], widths[i] + (width - total(widths)))
    shrink_name(12)
    name_start = ""
    if name_cols and widths[name_cols[0]] < natural[name_cols[0]]:
        i = name_cols[0]
        room = widths[i]
        compacted, name_start = compact_names([t[i] for t in texts], room)
        for row, new in zip(rows, compacted):
            old = row[i]
            row[i] = Text(new, style=old.style) if isinstance(old, Text) else new
        widths[i] = max([cell_len(columns[i].header)] + [cell_len(n) for n in compacted])
    if name_start:
        note = f"names shown without their common start '{visible(name_start)}'"
        caption = f"{caption}; {note}" if caption else note
    table = _RichTable(title=None if title is None else Text(visible(title)), title_justify="left",
                       caption=None if caption is None else Text(visible(caption)), caption_justify="left")
    for i in shown:
        col = columns[i]
        table.add_column(col.header, justify=col.justify, no_wrap=True,
                         overflow="ellipsis", max_width=widths[i] if col.text else None,
                         min_width=widths[i] if col.name else None)
    for row in rows:
        table.add_row(*(row[i] if isinstance(row[i], Text) else Text(visible(row[i])) for i in shown))
    return table

"""How sched writes values for people: short text, scores, numbers, times and durations.

One place for each, so `status`, `results`, `show`, the report and log lines agree. Pure Python
(no rich, no SQLAlchemy): anything may import it cheaply.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any


def short(value: Any, limit: int = 40) -> str:
    """`value` as text of at most `limit` characters (lists joined by spaces), cut with an ellipsis."""
    text = " ".join(map(str, value)) if isinstance(value, list) else str(value)
    return clip(text, limit)


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 1)] + "…"


def score(value: float | None) -> str:
    """A score such as an accuracy: four decimals; empty when missing."""
    return "" if value is None else f"{value:.4f}"


def number(value: Any) -> str:
    """A parameter value as people write it: 2e-05, 32, True; empty when missing."""
    if value is None:
        return ""
    return f"{value:g}" if isinstance(value, float) else str(value)


def iso(value: datetime | None) -> str | None:
    """A time to the second, ISO 8601 (database times are UTC)."""
    return value.isoformat(timespec="seconds") if value else None


def iso_ms(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds")


def duration(seconds: float | None) -> str:
    """1h05m, 3m07s or 12s; empty when unknown."""
    if seconds is None:
        return ""
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else (f"{minutes}m{secs:02d}s" if minutes else f"{secs}s")



_INVISIBLE = {"Cc", "Cf", "Zl", "Zp"}  # control and format characters (ESC, BEL, bidi overrides, ...)


def visible(text: object) -> str:
    """`text` with control and format characters written as escapes (`\\x1b`, `\\u202e`), so a job
    name or message can neither drive the terminal (clear it, set its title) nor hide as other text."""
    import unicodedata

    text = str(text)
    if text.isprintable():
        return text
    return "".join(ch if unicodedata.category(ch) not in _INVISIBLE else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
